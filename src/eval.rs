//! `swallow eval`: the mean token loss of a model on given shards, read whole and in order
//! (sample j = stream tokens [j*T, j*T + T + 1), no shuffle, no split). The model comes from a
//! Hugging Face directory (`--hf DIR`) or a checkpoint (`--load CKPT`); the last line printed is
//! `{"loss": x, ...}`.

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

/// Mean loss and token count.
#[derive(Clone, Copy, Debug)]
pub struct EvalResult {
    pub loss: f64,
    pub tokens: u64,
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
    Ok(EvalResult { loss: loss_sum / tokens as f64, tokens })
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
    println!("eval: {} tokens from {} | loss {:.6} | perplexity {:.3}", r.tokens, o.data, r.loss, r.loss.exp());
    println!("{}", serde_json::json!({ "loss": r.loss, "tokens": r.tokens }));
    Ok(r)
}
