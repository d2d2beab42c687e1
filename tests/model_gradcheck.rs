//! Finite-difference check (f64) of the whole model's backward: for every parameter tensor, a few
//! elements are perturbed and the central difference of the mean loss is compared with the
//! gradient the explicit backward computed. Covers GQA, untied and tied embeddings, Llama 3 RoPE
//! scaling and gradient accumulation over micro-batches, with the fused backward and with
//! ZeroBubble's split one (a B pass, then a W pass); and the split backward against the fused one.

use std::sync::Arc;
use swallow::backend::cpu::CpuBackend;
use swallow::backend::Backend;
use swallow::config::{Config, ModelConfig, RopeScaling};
use swallow::model::Llama;

fn small_model(tied: bool, llama3: bool) -> ModelConfig {
    let mut c = Config::load("tiny", &[]).unwrap().model;
    c.hidden_size = 16;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.ffn_hidden_size = 24;
    c.vocab_size = 29;
    c.init_std = 0.3;
    c.tie_embeddings = tied;
    if llama3 {
        c.rope_theta = 500000.0;
        c.rope_scaling = Some(RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8,
        });
    }
    c
}

fn tokens(n: usize, vocab: u32, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(salt * 97) >> 7) % vocab).collect()
}

/// How the gradients are computed: no backward, the fused backward, or ZeroBubble's B then W.
#[derive(Clone, Copy, PartialEq)]
enum Grads {
    None,
    Fused,
    Split,
}

/// Mean loss over `batches` micro-batches, and the accumulated gradients as `grads` says.
fn loss<B: Backend>(model: &mut Llama<B>, batches: &[Vec<u32>], grads: Grads) -> f64 {
    let tokens_total = (batches.len() * model.micro_batch * model.seq) as f64;
    model.zero_grads();
    let mut sum = 0.0;
    for b in batches {
        sum += model.forward(b, (1.0 / tokens_total) as f32);
        match grads {
            Grads::None => {}
            Grads::Fused => model.backward(),
            Grads::Split => {
                model.backward_input_slot(0);
                model.backward_weight_slot(0, None);
            }
        }
    }
    sum / tokens_total
}

fn check(cfg: ModelConfig, micro_batch: usize, seq: usize, accumulation: usize) {
    for grads in [Grads::Fused, Grads::Split] {
        check_with(cfg.clone(), micro_batch, seq, accumulation, grads);
    }
}

fn check_with(cfg: ModelConfig, micro_batch: usize, seq: usize, accumulation: usize, grads: Grads) {
    let mut model = Llama::new(Arc::new(CpuBackend::<f64>::new()), &cfg, micro_batch, seq);
    model.init_weights(11);
    // Perturb the norm weights away from 1 so their gradients are exercised in general position.
    for (spec, w) in model.table.specs.iter().zip(model.weights.iter_mut()) {
        if spec.shape.len() == 1 {
            for (i, x) in w.iter_mut().enumerate() {
                *x = 1.0 + 0.1 * ((i as f64) * 0.7).sin();
            }
        }
    }
    let batches: Vec<Vec<u32>> =
        (0..accumulation).map(|a| tokens(micro_batch * (seq + 1), cfg.vocab_size as u32, a as u32)).collect();
    loss(&mut model, &batches, grads);
    let analytic: Vec<Vec<f64>> = model.grads.clone();
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for p in 0..model.table.specs.len() {
        let n = model.weights[p].len();
        for probe in 0..4 {
            let i = (probe * 7919 + p * 31) % n;
            let orig = model.weights[p][i];
            model.weights[p][i] = orig + h;
            let up = loss(&mut model, &batches, Grads::None);
            model.weights[p][i] = orig - h;
            let down = loss(&mut model, &batches, Grads::None);
            model.weights[p][i] = orig;
            let numeric = (up - down) / (2.0 * h);
            let a = analytic[p][i];
            let err = (a - numeric).abs() / (numeric.abs() + a.abs()).max(1e-6);
            worst = worst.max(err);
            assert!(err < 1e-5, "{} [{i}]: analytic {a:e}, numeric {numeric:e}", model.table.specs[p].name);
        }
    }
    // The gradient is not trivially zero.
    let norm: f64 = analytic.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    assert!(norm > 1e-3, "gradient norm {norm}");
    eprintln!("worst relative error {worst:e}");
}

#[test]
fn whole_model_gradients_match_finite_differences_untied_gqa() {
    check(small_model(false, false), 2, 7, 1);
}

#[test]
fn whole_model_gradients_match_finite_differences_tied_llama3_rope() {
    check(small_model(true, true), 1, 9, 1);
}

#[test]
fn gradient_accumulation_over_micro_batches_is_the_mean_gradient() {
    check(small_model(false, false), 1, 6, 3);
}

/// The gradients of `cfg` over 3 micro-batches in f32, with the fused backward and the split one.
fn fused_and_split(cfg: &ModelConfig) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let batches: Vec<Vec<u32>> = (0..3).map(|a| tokens(2 * 8, cfg.vocab_size as u32, a)).collect();
    let run = |grads| {
        let mut model = Llama::new(Arc::new(CpuBackend::<f32>::new()), cfg, 2, 7);
        model.init_weights(5);
        loss(&mut model, &batches, grads);
        model.grads.clone()
    };
    (run(Grads::Fused), run(Grads::Split))
}

#[test]
fn split_backward_equals_the_fused_backward_bit_for_bit() {
    // Every weight gradient gets the same GEMMs in the same order, only later (W after B).
    let (fused, split) = fused_and_split(&small_model(false, false));
    assert!(fused.iter().flatten().any(|g| *g != 0.0));
    assert_eq!(fused, split);
}

#[test]
fn split_backward_of_a_tied_embedding_matches_within_rounding() {
    // The tied matrix gets the embedding's part in B and the LM head's in W: the same two sums
    // per micro-batch, added in the other order.
    let (fused, split) = fused_and_split(&small_model(true, false));
    for (p, (a, b)) in fused.iter().zip(&split).enumerate() {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * scale, "parameter {p}: fused {x}, split {y} (largest {scale})");
        }
    }
}
