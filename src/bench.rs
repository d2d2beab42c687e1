//! `swallow bench cpu`: trains the fixed bench configuration (data/configs/bench.toml: 8 layers,
//! hidden 512, 8/4 heads, FFN 1408, vocab 16384, seq 512, micro-batch 4, AdamW, untied) on
//! random tokens and prints per-step times; the last line is `{"tokens_per_s": x, "gflops": y}`.
//! scripts/bench_pytorch.py is the PyTorch peer on the same configuration.

use crate::backend::cpu::CpuBackend;
use crate::config::Config;
use crate::parallel::ParallelGroups;
use crate::metrics::flops_per_token;
use crate::trainer::Trainer;
use anyhow::Result;
use std::sync::Arc;
use std::time::Instant;

pub fn run(cfg: &Config, warmup: usize, steps: usize) -> Result<()> {
    let t = &cfg.train;
    let mut trainer = Trainer::new(Arc::new(CpuBackend::<f32>::new()), cfg, ParallelGroups::single())?;
    let vocab = cfg.model.vocab_size as u64;
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ t.seed;
    let batch: Vec<u32> = (0..t.global_batch * (t.seq_len + 1))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab) as u32
        })
        .collect();
    let flops_tok = flops_per_token(&cfg.model, t.seq_len);
    let tokens = (t.global_batch * t.seq_len) as f64;
    println!(
        "bench cpu: {} | {} threads | {} warm-up + {} timed steps of {} tokens",
        cfg.name,
        rayon::current_num_threads(),
        warmup,
        steps,
        tokens
    );
    for _ in 0..warmup {
        trainer.train_step(&batch);
    }
    let start = Instant::now();
    for i in 0..steps {
        let t0 = Instant::now();
        let s = trainer.train_step(&batch);
        let dt = t0.elapsed().as_secs_f64();
        println!("step {} | loss {:.4} | {:.3} s | {:.0} tokens/s", i + 1, s.loss, dt, tokens / dt);
    }
    let per_s = tokens * steps as f64 / start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "tokens_per_s": per_s, "gflops": per_s * flops_tok / 1e9 }));
    Ok(())
}
