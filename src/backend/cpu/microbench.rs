//! Micro-benchmarks of the CPU kernels at one small-Llama layer's sizes, as ignored tests that
//! print timings: `cargo test --release --lib backend::cpu::microbench -- --ignored --nocapture`.

use super::{attention, attention_bwd, elementwise, gemm, loss, norm};
use crate::backend::AttnShape;
use std::time::Instant;

/// Best of `reps` runs, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

#[test]
#[ignore]
fn bench_gemm() {
    eprintln!("rayon threads: {}", rayon::current_num_threads());
    // The three products of a linear layer `y = x Wᵀ` (x `[tokens, in]`, W `[out, in]`):
    // forward `x Wᵀ`, input gradient `dY W`, weight gradient `dYᵀ x`.
    let tokens = 2048;
    for &(layer, inp, out) in &[
        ("mlp up", 512, 1408),
        ("mlp down", 1408, 512),
        ("lm head", 512, 16384),
    ] {
        for &(name, m, k, n, ta, tb) in &[
            ("x Wt", tokens, inp, out, false, true),
            ("dY W", tokens, out, inp, false, false),
            ("dYt x", out, tokens, inp, true, false),
        ] {
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            let mut c = vec![0.0f32; m * n];
            let s = best(5, || gemm::gemm(&mut c, &a, &b, m, k, n, ta, tb, 1.0, 0.0));
            let flop = 2.0 * (m * k * n) as f64;
            eprintln!(
                "sgemm {layer:8} {name:6} {m:5}x{k:5}x{n:5}: {:7.2} ms {:6.1} GFLOP/s",
                s * 1e3,
                flop / s / 1e9
            );
        }
    }
}

#[test]
#[ignore]
fn bench_attention() {
    let sh = AttnShape {
        batch: 4,
        seq: 512,
        heads: 8,
        kv_heads: 4,
        head_dim: 64,
    };
    let (ql, kl) = (4 * 512 * 8 * 64, 4 * 512 * 4 * 64);
    let (q, k, v, dout) = (data(ql, 3), data(kl, 4), data(kl, 5), data(ql, 6));
    let (mut o, mut lse) = (vec![0.0f32; ql], vec![0.0f32; 4 * 8 * 512]);
    let tf = best(20, || {
        attention::attention_fwd(&mut o, &mut lse, &q, &k, &v, sh)
    });
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; ql], vec![0.0f32; kl], vec![0.0f32; kl]);
    let tb = best(20, || {
        attention_bwd::attention_bwd(&mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, &o, &lse, sh)
    });
    // Causal: half of the 2*B*H*T*T*D multiply-adds per product (2 fwd, 4 bwd products + recompute).
    let half = 2.0 * (4 * 8 * 512 * 512 * 64) as f64 / 2.0;
    eprintln!(
        "attention B4 T512 H8 Hkv4 D64: fwd {:6.2} ms ({:5.1} GFLOP/s), bwd {:6.2} ms ({:5.1} GFLOP/s)",
        tf * 1e3,
        2.0 * half / tf / 1e9,
        tb * 1e3,
        5.0 * half / tb / 1e9
    );
}

#[test]
#[ignore]
fn bench_row_ops() {
    let (rows, dim) = (2048, 512);
    let (x, w, dy) = (data(rows * dim, 7), data(dim, 8), data(rows * dim, 9));
    let (mut out, mut rstd) = (vec![0.0f32; rows * dim], vec![0.0f32; rows]);
    let t1 = best(10, || {
        norm::rmsnorm_fwd(&mut out, &mut rstd, &x, &w, dim, 1e-5)
    });
    let (mut dx, mut dw) = (vec![0.0f32; rows * dim], vec![0.0f32; dim]);
    let t2 = best(10, || {
        norm::rmsnorm_bwd(&mut dx, &mut dw, &dy, &x, &w, &rstd, dim)
    });
    eprintln!(
        "rmsnorm 2048x512: fwd {:.3} ms, bwd {:.3} ms",
        t1 * 1e3,
        t2 * 1e3
    );

    let ne = 2048 * 1408;
    let (g, u, d) = (data(ne, 10), data(ne, 11), data(ne, 12));
    let (mut a, mut b) = (vec![0.0f32; ne], vec![0.0f32; ne]);
    let t1 = best(10, || elementwise::swiglu_fwd(&mut a, &g, &u));
    let t2 = best(10, || elementwise::swiglu_bwd(&mut a, &mut b, &d, &g, &u));
    eprintln!(
        "swiglu 2048x1408: fwd {:.3} ms, bwd {:.3} ms",
        t1 * 1e3,
        t2 * 1e3
    );

    let (rows, vocab) = (512, 32000);
    let mut logits = data(rows * vocab, 13);
    let targets: Vec<u32> = (0..rows as u32).map(|i| i * 61 % 32000).collect();
    let mut losses = vec![0.0f32; rows];
    // Re-running on its own output is still a valid input (finite logits).
    let t = best(5, || {
        loss::cross_entropy(&mut logits, &mut losses, &targets, vocab, vocab, 1.0)
    });
    eprintln!("cross entropy 512x32000: {:.3} ms", t * 1e3);

    let np = 16 << 20;
    let (mut p, gr, mut mm, mut vv) = (
        data(np, 14),
        data(np, 15),
        vec![0.0f32; np],
        vec![0.0f32; np],
    );
    let h = crate::backend::AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 3,
    };
    let t = best(5, || elementwise::adamw(&mut p, &gr, &mut mm, &mut vv, h));
    let t2 = best(5, || {
        elementwise::sum_squares(&gr);
    });
    eprintln!(
        "adamw 16M: {:.2} ms, sum_squares 16M: {:.2} ms",
        t * 1e3,
        t2 * 1e3
    );
}
