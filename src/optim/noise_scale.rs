//! The gradient noise scale (`--log-gns`): McCandlish et al. 2018, "An Empirical Model of
//! Large-Batch Training", appendix A.1. The simple noise scale B_simple = tr(Σ) / |G|² (Σ the
//! per-sample gradient covariance, G the true gradient) predicts the critical batch size: batches
//! well below it train about as well per sample, batches well above it waste samples.
//!
//! Both terms come from the squared norms of the mean gradient over two batch sizes, B_small and
//! B_big, with E|G_B|² = |G|² + tr(Σ)/B:
//!   |G|² ≈ (B_big |G_big|² - B_small |G_small|²) / (B_big - B_small)
//!   tr(Σ) ≈ (|G_small|² - |G_big|²) / (1/B_small - 1/B_big)
//! Here B_small is one data-parallel rank's share of the global batch (|G_small|² averaged over
//! the DP ranks) and B_big the global batch, so it needs DP >= 2. Each step's two estimates are
//! noisy (either may be negative), so, as the paper advises, their exponential moving averages
//! (`EMA_DECAY`, bias-corrected as Adam's moments) give the reported ratio.

/// Weight of the past in the moving averages of |G|² and tr(Σ).
pub const EMA_DECAY: f64 = 0.95;

/// One step's unbiased estimates of |G|² and tr(Σ) from the mean gradients' squared norms over
/// `b_small` and `b_big` samples (`b_small < b_big`).
pub fn estimate(b_small: f64, small_sq: f64, b_big: f64, big_sq: f64) -> (f64, f64) {
    let grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small);
    let trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big);
    (grad_sq, trace)
}

/// The moving averages of the estimates, and the noise scale they give.
#[derive(Clone, Debug, Default)]
pub struct NoiseScale {
    grad_sq: f64,
    trace: f64,
}

impl NoiseScale {
    /// Adds a step's estimates; returns B_simple in samples from the averages so far.
    pub fn update(&mut self, (grad_sq, trace): (f64, f64)) -> f64 {
        self.grad_sq = EMA_DECAY * self.grad_sq + (1.0 - EMA_DECAY) * grad_sq;
        self.trace = EMA_DECAY * self.trace + (1.0 - EMA_DECAY) * trace;
        // The bias corrections of the two averages are equal and cancel in the ratio.
        self.trace / self.grad_sq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-sample gradients drawn as G + noise with known |G|² and tr(Σ): the estimators'
    /// means over many draws come back to them, and the noise scale to tr(Σ) / |G|².
    #[test]
    fn the_estimates_are_unbiased_on_known_gradients() {
        let (dim, sigma, b_small, dps) = (64usize, 0.5f64, 4usize, 4usize);
        let g: Vec<f64> = (0..dim).map(|i| 0.05 * ((i % 7) as f64 - 3.0)).collect();
        let true_grad_sq: f64 = g.iter().map(|x| x * x).sum();
        let true_trace = dim as f64 * sigma * sigma;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut normal = move || {
            // Box-Muller over a xorshift stream.
            let mut u = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64
            };
            let (a, b) = (u().max(1e-300), u());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        };
        let draws = 4000;
        let (mut sum_grad_sq, mut sum_trace) = (0.0, 0.0);
        let mut ns = NoiseScale::default();
        let mut last = 0.0;
        for _ in 0..draws {
            // dps ranks of b_small samples each: each rank's mean gradient, and the global mean.
            let mut global = vec![0.0; dim];
            let mut small_sq = 0.0;
            for _ in 0..dps {
                let mut mean = vec![0.0; dim];
                for _ in 0..b_small {
                    for (m, gi) in mean.iter_mut().zip(&g) {
                        *m += (gi + sigma * normal()) / b_small as f64;
                    }
                }
                small_sq += mean.iter().map(|x| x * x).sum::<f64>() / dps as f64;
                for (a, m) in global.iter_mut().zip(&mean) {
                    *a += m / dps as f64;
                }
            }
            let big_sq: f64 = global.iter().map(|x| x * x).sum();
            let e = estimate(b_small as f64, small_sq, (b_small * dps) as f64, big_sq);
            sum_grad_sq += e.0;
            sum_trace += e.1;
            last = ns.update(e);
        }
        let (mean_grad_sq, mean_trace) = (sum_grad_sq / draws as f64, sum_trace / draws as f64);
        assert!((mean_grad_sq / true_grad_sq - 1.0).abs() < 0.05, "|G|² {mean_grad_sq} vs {true_grad_sq}");
        assert!((mean_trace / true_trace - 1.0).abs() < 0.05, "tr(Σ) {mean_trace} vs {true_trace}");
        let want = true_trace / true_grad_sq;
        assert!((last / want - 1.0).abs() < 0.5, "the moving averages' noise scale {last} vs {want}");
    }

    /// Hand-checked: |G_small|² = 5 over 2 samples, |G_big|² = 2 over 8: |G|² = (16 - 10) / 6 = 1,
    /// tr(Σ) = 3 / (1/2 - 1/8) = 8.
    #[test]
    fn a_worked_example() {
        let (grad_sq, trace) = estimate(2.0, 5.0, 8.0, 2.0);
        assert!((grad_sq - 1.0).abs() < 1e-12 && (trace - 8.0).abs() < 1e-12);
        assert!((NoiseScale::default().update((grad_sq, trace)) - 8.0).abs() < 1e-12);
    }
}
