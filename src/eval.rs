//! `swallow eval`: the mean token loss of a model on given shards, read whole and in order
//! (sample j = stream tokens [j*T, j*T + T + 1), no shuffle, no split). The model comes from a
//! Hugging Face directory (`--hf DIR`) or a checkpoint (`--load CKPT`); the last line printed is
//! `{"loss": x, ...}`. What it does not score is said: the samples after the last full
//! micro-batch (or after `--batches`), and each entry's last tokens, too few for a sample.

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::checkpoint::{export, hf};
use crate::config::ModelConfig;
use crate::data::blend::BlendedSampler;
use crate::model::Llama;
use anyhow::{Context, Result};
use mpi::topology::SimpleCommunicator;
use std::path::Path;
use std::sync::Arc;

/// Where the evaluated model comes from.
pub enum ModelSource<'a> {
    Hf(&'a Path),
    /// A checkpoint file, read whole through the (one-rank) communicator.
    Checkpoint(&'a Path, &'a SimpleCommunicator),
}

pub struct EvalOptions<'a> {
    pub model: ModelSource<'a>,
    pub data: &'a str,
    pub seq_len: usize,
    pub micro_batch: usize,
    /// Number of micro-batches to evaluate (default: all full micro-batches of the data).
    pub batches: Option<usize>,
}

/// Mean loss, the tokens scored, and those left out.
#[derive(Clone, Copy, Debug)]
pub struct EvalResult {
    pub loss: f64,
    pub tokens: u64,
    /// Whole samples not scored: after the last full micro-batch, or after `--batches`.
    pub samples_left: u64,
    /// Tokens at the ends of the entries, fewer than a sample.
    pub tail_tokens: u64,
}

impl EvalResult {
    /// Predictions the data holds that were not scored.
    pub fn unscored_tokens(&self, seq: usize) -> u64 {
        self.samples_left * seq as u64 + self.tail_tokens
    }

    /// `not scored: ...` for the report line.
    fn unscored_note(&self, seq: usize, micro_batch: usize, limited: bool) -> String {
        let mut parts = Vec::new();
        if self.samples_left > 0 {
            let why = if limited { "after --batches".to_string() } else { format!("fewer than a micro-batch of {micro_batch}") };
            parts.push(format!("{} samples {why}", self.samples_left));
        }
        if self.tail_tokens > 0 {
            parts.push(format!("{} tokens at the data's end, fewer than a sample of {seq}", self.tail_tokens));
        }
        match parts.is_empty() {
            true => "every token scored".into(),
            false => format!("not scored: {} tokens ({})", self.unscored_tokens(seq), parts.join("; ")),
        }
    }
}

/// Loads the weights of an HF directory into a model on `backend`.
pub fn load_hf_model<B: Backend>(backend: Arc<B>, dir: &Path, micro_batch: usize, seq: usize) -> Result<Llama<B>> {
    let cfg: ModelConfig = hf::read_config(dir)?;
    let mut model = Llama::new(backend, &cfg, micro_batch, seq);
    let weights = hf::read_weights(dir, &model.table)?;
    for (w, host) in model.weights.iter_mut().zip(&weights) {
        model.backend.upload(host, w);
    }
    Ok(model)
}

/// Loads the weights of a checkpoint (any layout wrote it) into a one-rank model on `backend`.
pub fn load_checkpoint_model<B: Backend>(backend: Arc<B>, path: &Path, comm: &SimpleCommunicator, micro_batch: usize, seq: usize) -> Result<Llama<B>> {
    let cfg = export::read_config(path)?;
    let mut model = Llama::new(backend, &cfg.model, micro_batch, seq);
    for (spec, w) in model.table.specs.iter().zip(model.weights.iter_mut()) {
        let host = export::read_tensor(path, comm, &spec.name, &spec.shape)?;
        model.backend.upload(&host, w);
    }
    Ok(model)
}

pub fn evaluate<B: Backend>(model: &mut Llama<B>, sampler: &BlendedSampler, batches: Option<usize>) -> Result<EvalResult> {
    let mb = model.micro_batch;
    let available = (sampler.num_samples() as usize) / mb;
    let n_batches = batches.unwrap_or(available).min(available);
    if n_batches == 0 {
        anyhow::bail!(
            "the data holds {} samples of {} tokens, fewer than one micro-batch of {mb}",
            sampler.num_samples(),
            model.seq + 1
        );
    }
    let row = model.seq + 1;
    let mut batch = vec![0u32; mb * row];
    let mut loss_sum = 0.0;
    for b in 0..n_batches {
        for (i, out) in batch.chunks_mut(row).enumerate() {
            sampler.sequential((b * mb + i) as u64, out)?;
        }
        loss_sum += model.forward(&batch, 0.0);
    }
    let tokens = (n_batches * mb * model.seq) as u64;
    let seq = model.seq as u64;
    let tail_tokens = sampler.samplers().iter().map(|s| s.num_tokens().saturating_sub(1) - s.num_samples() * seq).sum();
    let samples_left = sampler.num_samples() - (n_batches * mb) as u64;
    Ok(EvalResult { loss: loss_sum / tokens as f64, tokens, samples_left, tail_tokens })
}

pub fn run(o: &EvalOptions) -> Result<EvalResult> {
    let backend = Arc::new(CpuBackend::<f32>::new());
    let mut model = match o.model {
        ModelSource::Hf(dir) => load_hf_model(backend, dir, o.micro_batch, o.seq_len)
            .with_context(|| format!("loading Hugging Face model {}", dir.display()))?,
        ModelSource::Checkpoint(path, comm) => load_checkpoint_model(backend, path, comm, o.micro_batch, o.seq_len)
            .with_context(|| format!("loading checkpoint {}", path.display()))?,
    };
    let sampler = BlendedSampler::open(o.data, o.seq_len, 0, model.cfg.vocab_size)?;
    let r = evaluate(&mut model, &sampler, o.batches)?;
    let limited = o.batches.is_some_and(|b| b * o.micro_batch < sampler.num_samples() as usize);
    println!(
        "eval: {} tokens from {} | loss {:.6} | perplexity {:.3} | {}",
        r.tokens,
        o.data,
        r.loss,
        r.loss.exp(),
        r.unscored_note(o.seq_len, o.micro_batch, limited)
    );
    println!("{}", serde_json::json!({ "loss": r.loss, "tokens": r.tokens, "unscored_tokens": r.unscored_tokens(o.seq_len) }));
    Ok(r)
}
