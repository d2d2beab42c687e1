//! LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"; `optim.name = "lamb"`), as
//! NVIDIA apex's FusedLAMB computes it: AdamW's moments, bias-corrected unless
//! `optim.bias_correction = false`, the update direction `u = m̂ / (sqrt(v̂) + eps) + wd * w`
//! (decay on matrices only, as AdamW), and per tensor the trust ratio `r = ||w|| / ||u||` (1 where
//! either norm is 0): `w -= lr * r * u`. The ratio applies to every tensor, as in the paper (apex
//! applies it to decayed groups only unless `use_nvlamb`). Clipping and the skip of a non-finite
//! step come first, as for AdamW (update.rs).
//!
//! The norms are those of whole logical tensors under any layout, so every layout computes the
//! single-rank run's ratios: each rank adds the squares of the parts it holds and counts (a TP
//! shard, a ZeRO-1 segment; one copy of a shard replicated over TP ranks) into one vector of two
//! sums per parameter of the table, and one all-reduce per group (DP under ZeRO-1, then TP x PP)
//! completes every tensor's sums on every rank. Around it, two multi-tensor backend launches:
//! `lamb_moments_all` (moments, `u` over the gradient) and `lamb_apply_all`.

use super::update::{Part, Update};
use crate::backend::{Backend, LambStep, LambTensor};

/// `||w|| / ||u||` from the two sums of squares; 1 where either norm is 0.
pub fn trust_ratio(w_squares: f64, u_squares: f64) -> f64 {
    if w_squares > 0.0 && u_squares > 0.0 {
        w_squares.sqrt() / u_squares.sqrt()
    } else {
        1.0
    }
}

/// One LAMB update of `parts` (gradients clipped).
pub(super) fn update<B: Backend>(backend: &B, parts: Vec<Part<'_, B>>, u: &Update) {
    let owners: Vec<(usize, bool)> = parts.iter().map(|p| (p.index, p.counted)).collect();
    let mut tensors: Vec<LambTensor<B>> = parts
        .into_iter()
        .map(|p| LambTensor { weight_decay: u.weight_decay(p.decay), param: p.param, grad: p.grad, m: p.m, v: p.v })
        .collect();
    let t = u.t;
    let h = LambStep { beta1: t.beta1 as f32, beta2: t.beta2 as f32, eps: t.adam_eps as f32, step: u.step, bias_correction: u.optim.bias_correction() };
    backend.lamb_moments_all(&mut tensors, h);
    // ||w||^2 of every part, then ||u||^2, in one pass; summed per parameter over the layout.
    let n = tensors.len();
    let mut squares = vec![0.0; 2 * n];
    let bufs: Vec<&B::Buf> = tensors.iter().map(|t| &*t.param).chain(tensors.iter().map(|t| &*t.grad)).collect();
    backend.sum_squares_each(&bufs, &mut squares);
    let mut sums = vec![0.0; 2 * u.params];
    for (i, &(p, counted)) in owners.iter().enumerate() {
        if counted {
            sums[2 * p] += squares[i];
            sums[2 * p + 1] += squares[n + i];
        }
    }
    for g in u.groups {
        g.all_reduce_sum_f64(&mut sums);
    }
    let steps: Vec<f32> = owners.iter().map(|&(p, _)| (u.lr * trust_ratio(sums[2 * p], sums[2 * p + 1])) as f32).collect();
    backend.lamb_apply_all(&mut tensors, &steps);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::config::{Config, OptimConfig, OptimizerName, TrainConfig};
    use crate::optim::replicated::Replicated;
    use crate::parallel::LocalGroup;

    fn lamb(bias_correction: bool) -> OptimConfig {
        OptimConfig { name: OptimizerName::Lamb, bias_correction: Some(bias_correction) }
    }

    /// First step, eps 0, bias-corrected: m̂ = g and v̂ = g^2, so u = sign(g) + wd w, and the
    /// ratios are plain numbers: ||(1, 2, 2, 4)|| / ||(1, -1, 1, -1)|| = 5 / 2; a zero tensor's
    /// ratio is 1; a decayed (1, 1, 1, 1) with g > 0 and wd 0.5 has u = 1.5 and ratio 2 / 3, so
    /// it moves by lr. A tensor split in parts (ZeRO segments, TP shards) takes the ratio of the
    /// whole, and a copy that is not counted (a replicated shard on another TP rank) the same.
    #[test]
    fn trust_ratios_by_hand() {
        let be = CpuBackend::<f64>::new();
        let t = TrainConfig { adam_eps: 0.0, weight_decay: 0.5, ..Config::load("tiny", &[]).unwrap().train };
        let optim = lamb(true);
        let (w0, g0) = (vec![1.0, 2.0, 2.0, 4.0], vec![0.5, -3.0, 1e-3, -2.0]);
        // (param, decay, counted, weights, grads); param 2 is param 0 in two parts, with an
        // uncounted copy of its first part.
        let tensors: [(usize, bool, bool, Vec<f64>, Vec<f64>); 6] = [
            (0, false, true, w0.clone(), g0.clone()),
            (1, true, true, vec![0.0; 4], vec![-0.5, 2.0, 1.0, 1.0]),
            (2, false, true, w0[..1].to_vec(), g0[..1].to_vec()),
            (2, false, true, w0[1..].to_vec(), g0[1..].to_vec()),
            (2, false, false, w0[..1].to_vec(), g0[..1].to_vec()),
            (3, true, true, vec![1.0; 4], vec![0.25, 1.0, 7.0, 0.5]),
        ];
        let mut bufs: Vec<[Vec<f64>; 4]> = tensors.iter().map(|(_, _, _, w, g)| [w.clone(), g.clone(), vec![0.0; w.len()], vec![0.0; w.len()]]).collect();
        let parts = bufs
            .iter_mut()
            .zip(&tensors)
            .map(|([param, grad, m, v], &(index, decay, counted, _, _))| Part { param, grad, m, v, decay, index, counted })
            .collect();
        let lr = 0.25;
        Update { t: &t, optim: &optim, lr, step: 1, params: 4, groups: &[&LocalGroup] }.apply(&be, parts);
        // lr * ratio reaches the backend as f32: 0.625 exactly; 0.25 * 2 / 3 within 1e-8.
        let whole = vec![1.0 - 0.625, 2.0 + 0.625, 2.0 - 0.625, 4.0 + 0.625];
        assert_eq!(bufs[0][0], whole);
        assert_eq!(bufs[1][0], [0.25, -0.25, -0.25, -0.25]);
        assert_eq!([&bufs[2][0][..], &bufs[3][0][..], &bufs[4][0][..]].concat(), [&whole[..], &whole[..1]].concat());
        assert!(bufs[5][0].iter().all(|&w| (w - 0.75).abs() < 1e-8), "{:?}", bufs[5][0]);
        assert_eq!((trust_ratio(0.0, 4.0), trust_ratio(9.0, 0.0), trust_ratio(9.0, 4.0)), (1.0, 1.0, 1.5));
    }

    /// The fixture tests/fixtures/make_lamb_fixture.py writes: LAMB in float64 PyTorch over two
    /// decayed matrices, a norm-like vector and a zero vector for five steps with clipping, with
    /// and without bias correction. swallow trains in f32 on the CPU backend: every weight after
    /// every step within 1e-6 of the reference, and the gradient norms too.
    #[test]
    fn matches_the_pytorch_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lamb_fixture.json");
        let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
        let h = &fx["hyper"];
        let sets: Vec<String> = [("beta1", "beta1"), ("beta2", "beta2"), ("adam_eps", "eps"), ("weight_decay", "weight_decay"), ("grad_clip", "grad_clip")]
            .iter()
            .map(|(ours, theirs)| format!("train.{ours}={:e}", h[theirs].as_f64().unwrap()))
            .collect();
        let t = Config::load("tiny", &sets).unwrap().train;
        let tensors = fx["tensors"].as_array().unwrap();
        let decay: Vec<bool> = tensors.iter().map(|x| x["decay"].as_bool().unwrap()).collect();
        let be = CpuBackend::<f32>::new();
        let mut worst = 0.0f64;
        for run in fx["runs"].as_array().unwrap() {
            let optim = lamb(run["bias_correction"].as_bool().unwrap());
            let mut w: Vec<Vec<f32>> = tensors.iter().map(|x| floats(&x["init"]).iter().map(|&v| v as f32).collect()).collect();
            let mut opt = Replicated::new(&be, &w, decay.clone(), vec![true; w.len()], &t, &optim);
            for (s, lr) in floats(&h["lr"]).into_iter().enumerate() {
                let mut g: Vec<Vec<f32>> = fx["grads"][s].as_array().unwrap().iter().map(|x| floats(x).iter().map(|&v| v as f32).collect()).collect();
                let out = opt.step(&be, &mut w, &mut g, lr, &LocalGroup);
                let norm = run["grad_norms"][s].as_f64().unwrap();
                assert!(!out.skipped && (out.grad_norm - norm).abs() < 1e-6 * norm, "step {}: grad norm {} vs {norm}", s + 1, out.grad_norm);
                for (i, expected) in run["weights"][s].as_array().unwrap().iter().enumerate() {
                    for (j, e) in floats(expected).into_iter().enumerate() {
                        let d = (w[i][j] as f64 - e).abs();
                        worst = worst.max(d);
                        assert!(d < 1e-6, "bias_correction {}: step {} tensor {} element {j}: {} vs {e}", run["bias_correction"], s + 1, tensors[i]["name"], w[i][j]);
                    }
                }
            }
        }
        eprintln!("LAMB vs the PyTorch reference: max abs difference {worst:e}");
    }
}
