//! RoPE frequency tables, computed as Hugging Face's LlamaRotaryEmbedding computes them: inverse
//! frequencies `theta^(-2i/D)` (optionally with Llama 3's frequency-dependent scaling), angles
//! `position * inv_freq` in f32, then `cos`/`sin` tables `[T, D/2]` uploaded once per sequence length.

use crate::config::ModelConfig;

/// Inverse frequencies, `D/2` values (f32 like HF's buffer).
pub fn inv_freq(m: &ModelConfig) -> Vec<f32> {
    let d = m.head_dim();
    let mut f: Vec<f64> = (0..d / 2)
        .map(|i| {
            let expo = ((2 * i) as f32 / d as f32) as f64;
            1.0 / (m.rope_theta as f32 as f64).powf(expo)
        })
        .map(|x| x as f32 as f64)
        .collect();
    if let Some(s) = &m.rope_scaling {
        let old = s.original_max_position_embeddings as f64;
        let low_wavelen = old / s.low_freq_factor;
        let high_wavelen = old / s.high_freq_factor;
        for x in f.iter_mut() {
            let wavelen = std::f64::consts::TAU / *x;
            if wavelen > low_wavelen {
                *x /= s.factor;
            } else if wavelen >= high_wavelen {
                let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                *x = (1.0 - smooth) * *x / s.factor + smooth * *x;
            }
        }
    }
    f.into_iter().map(|x| x as f32).collect()
}

/// `(cos, sin)`, each `[seq, D/2]` row-major.
pub fn tables(m: &ModelConfig, seq: usize) -> (Vec<f32>, Vec<f32>) {
    let inv = inv_freq(m);
    let half = inv.len();
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for t in 0..seq {
        for &f in &inv {
            let angle = (t as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn plain_frequencies_follow_theta() {
        let c = Config::load("llama2-7b", &[]).unwrap();
        let f = inv_freq(&c.model);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert!((f[1] as f64 - 10000f64.powf(-2.0 / 128.0)).abs() < 1e-7);
    }

    #[test]
    fn llama3_scaling_divides_low_frequencies_and_keeps_high_ones() {
        let c = Config::load("llama3-8b", &[]).unwrap();
        let mut plain = c.model.clone();
        plain.rope_scaling = None;
        let (s, p) = (inv_freq(&c.model), inv_freq(&plain));
        // wavelength 2*pi/f: below 8192/4 unchanged, above 8192/1 divided by 8, smooth between.
        for (a, b) in s.iter().zip(&p) {
            let wl = std::f64::consts::TAU / *b as f64;
            if wl < 2048.0 {
                assert_eq!(a, b);
            } else if wl > 8192.0 {
                assert!((a * 8.0 - b).abs() <= 1e-6 * b.abs());
            } else {
                assert!(a < b && *a > b / 8.0);
            }
        }
    }
}
