//! Finite-difference check (f64) of the whole model's backward: for every parameter tensor, a few
//! elements are perturbed and the central difference of the mean loss is compared with the
//! gradient the explicit backward computed. Covers GQA, untied and tied embeddings, Llama 3 RoPE
//! scaling and gradient accumulation over micro-batches.

use std::sync::Arc;
use swallow::backend::cpu::CpuBackend;
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

/// Mean loss over `batches` micro-batches, and (when `grads`) the accumulated gradients.
fn loss(model: &mut Llama<CpuBackend<f64>>, batches: &[Vec<u32>], grads: bool) -> f64 {
    let tokens_total = (batches.len() * model.micro_batch * model.seq) as f64;
    model.zero_grads();
    let mut sum = 0.0;
    for b in batches {
        sum += model.forward(b, (1.0 / tokens_total) as f32);
        if grads {
            model.backward();
        }
    }
    sum / tokens_total
}

fn check(cfg: ModelConfig, micro_batch: usize, seq: usize, accumulation: usize) {
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
    loss(&mut model, &batches, true);
    let analytic: Vec<Vec<f64>> = model.grads.clone();
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for p in 0..model.table.specs.len() {
        let n = model.weights[p].len();
        for probe in 0..4 {
            let i = (probe * 7919 + p * 31) % n;
            let orig = model.weights[p][i];
            model.weights[p][i] = orig + h;
            let up = loss(&mut model, &batches, false);
            model.weights[p][i] = orig - h;
            let down = loss(&mut model, &batches, false);
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
