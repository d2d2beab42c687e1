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

/// Vocab-parallel cross-entropy, phase 1: per row of this shard's logits `[rows, vocab_local]`
/// (the first `valid_local` columns real, the shard starting at global column `vocab_start`),
/// `stats[row] = (local max, sum of exp(logit - local max), the target's logit or 0 if the target
/// is on another shard)`. With `valid_local == 0` the max is -inf and the sum 0.
pub fn cross_entropy_local_stats<T: Real>(
    logits: &[T],
    stats: &mut [T],
    targets: &[u32],
    vocab_local: usize,
    valid_local: usize,
    vocab_start: usize,
) {
    let rows = targets.len();
    assert!(valid_local <= vocab_local && logits.len() == rows * vocab_local && stats.len() == 3 * rows);
    stats.par_chunks_mut(3).zip(logits.par_chunks(vocab_local)).zip(targets.par_iter()).for_each(|((st, row), &t)| {
        let v = &row[..valid_local];
        let m = v.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
        let sum = if valid_local == 0 { T::zero() } else { v.iter().fold(T::zero(), |a, &x| a + (x - m).exp_fast()) };
        let tl = (t as usize).checked_sub(vocab_start).filter(|&c| c < valid_local).map_or(T::zero(), |c| v[c]);
        st.copy_from_slice(&[m, sum, tl]);
    });
}

/// Vocab-parallel cross-entropy, phase 2, given the combined `global[row] = (max, sum of
/// exp(logit - max), target logit)` over all shards: `losses[row] = max + ln(sum) - target logit`
/// and the shard's logits overwritten by `grad_scale * (softmax - onehot)` (padding columns 0).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_finish<T: Real>(
    logits: &mut [T],
    losses: &mut [T],
    global: &[T],
    targets: &[u32],
    vocab_local: usize,
    valid_local: usize,
    vocab_start: usize,
    grad_scale: f32,
) {
    let rows = targets.len();
    assert!(logits.len() == rows * vocab_local && global.len() == 3 * rows && losses.len() == rows);
    let gs = T::of_f32(grad_scale);
    logits
        .par_chunks_mut(vocab_local)
        .zip(losses.par_iter_mut())
        .zip(global.par_chunks(3))
        .zip(targets.par_iter())
        .for_each(|(((row, loss), g), &t)| {
            let (m, sum, tl) = (g[0], g[1], g[2]);
            *loss = m + sum.ln() - tl;
            let k = gs / sum;
            let (v, pad) = row.split_at_mut(valid_local);
            for x in v.iter_mut() {
                *x = (*x - m).exp_fast() * k;
            }
            if let Some(c) = (t as usize).checked_sub(vocab_start).filter(|&c| c < valid_local) {
                v[c] -= gs;
            }
            pad.fill(T::zero());
        });
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
    fn vocab_parallel_phases_equal_the_fused_loss() {
        // Split 37 valid columns (of 40) over shards [0, 20) and [20, 40) the way TP does, combine
        // the stats as the model does, and compare with the fused single-shard op.
        let mut rng = Rng::new(12);
        let (rows, vocab, valid, half) = (6, 40, 37, 20);
        let logits: Vec<f64> = rand_vec(&mut rng, rows * vocab).iter().map(|x| 4.0 * x).collect();
        let targets: Vec<u32> = (0..rows).map(|i| [1, 19, 20, 36, 5, 25][i]).collect();
        let mut fused = logits.clone();
        let mut want = vec![0.0; rows];
        cross_entropy(&mut fused, &mut want, &targets, vocab, valid, 0.5);
        let shard = |r: usize| -> Vec<f64> {
            logits.chunks(vocab).flat_map(|row| row[r * half..(r + 1) * half].to_vec()).collect()
        };
        let valid_of = |r: usize| (valid - r * half).min(half);
        let mut stats = [vec![0.0; 3 * rows], vec![0.0; 3 * rows]];
        for r in 0..2 {
            cross_entropy_local_stats(&shard(r), &mut stats[r], &targets, half, valid_of(r), r * half);
        }
        let global: Vec<f64> = (0..rows)
            .flat_map(|i| {
                let (a, b) = (&stats[0][3 * i..3 * i + 3], &stats[1][3 * i..3 * i + 3]);
                let m = a[0].max(b[0]);
                vec![m, a[1] * (a[0] - m).exp() + b[1] * (b[0] - m).exp(), a[2] + b[2]]
            })
            .collect();
        for r in 0..2 {
            let mut l = shard(r);
            let mut losses = vec![0.0; rows];
            cross_entropy_finish(&mut l, &mut losses, &global, &targets, half, valid_of(r), r * half, 0.5);
            for (a, b) in losses.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{a} vs {b}");
            }
            for (i, row) in l.chunks(half).enumerate() {
                for (c, x) in row.iter().enumerate() {
                    assert!((x - fused[i * vocab + r * half + c]).abs() < 1e-12);
                }
            }
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
