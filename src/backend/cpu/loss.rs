//! Fused softmax cross-entropy over `[rows, vocab]` logits: per row, log-sum-exp over the first
//! `valid_vocab` columns (the rest is vocabulary padding: probability 0, gradient 0), the loss
//! `lse - logit[target]`, and the logits overwritten in place by `grad_scale * (softmax - onehot)`.
//! Three passes over a row (max, exp + sum, scale) that stay in cache; parallel over rows.

use super::par::{lane_max, rows_per_task, simd_fn};
use super::Real;
use rayon::prelude::*;

/// Overwrites `v` with `exp(v - m)` and returns the sum (16 lanes).
#[inline(always)]
fn exp_store_sum<T: Real>(v: &mut [T], m: T) -> T {
    let mut acc = [T::zero(); 16];
    let mut it = v.chunks_exact_mut(16);
    for c in &mut it {
        for i in 0..16 {
            let e = (c[i] - m).exp_fast();
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut tail = T::zero();
    for x in it.into_remainder() {
        let e = (*x - m).exp_fast();
        *x = e;
        tail += e;
    }
    super::par::lane_sum(&acc, |x| x) + tail
}

simd_fn! {
    fn xent_rows<T: Real>(logits: &mut [T], losses: &mut [T], targets: &[u32], vocab: usize, valid: usize, gs: T) {
        for ((row, loss), &t) in logits.chunks_exact_mut(vocab).zip(losses.iter_mut()).zip(targets) {
            let t = t as usize;
            assert!(t < valid, "cross_entropy: target {t} is not below valid_vocab {valid}");
            let (v, pad) = row.split_at_mut(valid);
            let m = lane_max(v);
            let xt = v[t];
            let sum = exp_store_sum(v, m);
            *loss = m + sum.ln() - xt;
            let k = gs / sum;
            for x in v.iter_mut() {
                *x *= k;
            }
            v[t] -= gs;
            pad.fill(T::zero());
        }
    }
}

pub fn cross_entropy<T: Real>(
    logits: &mut [T],
    losses: &mut [T],
    targets: &[u32],
    vocab: usize,
    valid_vocab: usize,
    grad_scale: f32,
) {
    assert!(
        valid_vocab >= 1 && valid_vocab <= vocab,
        "cross_entropy: valid_vocab {valid_vocab} must be in 1..={vocab}"
    );
    let rows = losses.len();
    assert_eq!(
        logits.len(),
        rows * vocab,
        "cross_entropy: logits have {} elements, expected [{rows}, {vocab}]",
        logits.len()
    );
    assert_eq!(
        targets.len(),
        rows,
        "cross_entropy: {} targets for {rows} rows",
        targets.len()
    );
    let gs = T::of_f32(grad_scale);
    let rpt = rows_per_task(rows, vocab);
    if rpt >= rows {
        return xent_rows(logits, losses, targets, vocab, valid_vocab, gs);
    }
    logits
        .par_chunks_mut(rpt * vocab)
        .zip(losses.par_chunks_mut(rpt))
        .zip(targets.par_chunks(rpt))
        .for_each(|((l, s), t)| xent_rows(l, s, t, vocab, valid_vocab, gs));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{check_grad, rand_vec, Rng};

    fn naive_loss(logits: &[f64], targets: &[u32], vocab: usize, valid: usize) -> Vec<f64> {
        logits
            .chunks(vocab)
            .zip(targets)
            .map(|(row, &t)| {
                let z: f64 = row[..valid].iter().map(|x| x.exp()).sum();
                z.ln() - row[t as usize]
            })
            .collect()
    }

    #[test]
    fn cross_entropy_matches_naive_and_finite_difference() {
        let mut rng = Rng::new(9);
        for &(rows, vocab, valid) in &[(4, 7, 7), (5, 40, 33), (3, 100, 1)] {
            let logits: Vec<f64> = rand_vec(&mut rng, rows * vocab)
                .iter()
                .map(|x| 5.0 * x)
                .collect();
            let targets: Vec<u32> = (0..rows).map(|_| rng.below(valid) as u32).collect();
            let gs = 0.25f32;
            let mut g = logits.clone();
            let mut losses = vec![0.0; rows];
            cross_entropy(&mut g, &mut losses, &targets, vocab, valid, gs);
            for (a, b) in losses
                .iter()
                .zip(naive_loss(&logits, &targets, vocab, valid))
            {
                assert!((a - b).abs() < 1e-12, "loss {a} vs {b}");
            }
            for row in g.chunks(vocab) {
                assert!(
                    row[valid..].iter().all(|&x| x == 0.0),
                    "padding columns must get zero gradient"
                );
            }
            check_grad("xent dlogits", &logits, &g, 120, 5, |l| {
                0.25 * naive_loss(l, &targets, vocab, valid).iter().sum::<f64>()
            });
        }
    }

    #[test]
    fn cross_entropy_f32_large_logits_stable() {
        // Large logits (no overflow thanks to max subtraction) and a parallel-sized batch.
        let mut rng = Rng::new(10);
        let (rows, vocab, valid) = (64, 1000, 990);
        let logits: Vec<f64> = rand_vec(&mut rng, rows * vocab)
            .iter()
            .map(|x| 80.0 * x)
            .collect();
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(valid) as u32).collect();
        let want = naive_loss(
            &logits.iter().map(|x| x - 80.0).collect::<Vec<_>>(),
            &targets,
            vocab,
            valid,
        );
        let mut l32: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
        let mut losses = vec![0.0f32; rows];
        cross_entropy(&mut l32, &mut losses, &targets, vocab, valid, 1.0);
        for (a, b) in losses.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for row in l32.chunks(vocab) {
            let s: f32 = row.iter().sum();
            assert!(s.abs() < 1e-5, "softmax - onehot sums to 0, got {s}");
        }
    }
}
