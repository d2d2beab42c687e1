//! Periodic validation loss (`--eval-every N --eval-iters K`): the mean token loss of the first K
//! global batches of the valid part of `--split` (the same batches at every evaluation, so the
//! curve compares like with like; full `train.global_batch`es, also during a batch-size ramp-up),
//! computed under the training layout by the training pipeline
//! without an optimizer step (backward runs and its gradients are discarded: a forward-only
//! schedule is a later optimisation).

use crate::backend::Backend;
use crate::config::Config;
use crate::data::blend::{BlendedSampler, Part, Split};
use crate::data::spec::DataSpec;
use crate::trainer::Trainer;
use anyhow::{Context, Result};

pub struct Validation {
    sampler: BlendedSampler,
    batches: u64,
    global_batch: usize,
}

impl Validation {
    /// The validation set of `cfg`, or None when `train.eval_every` is 0.
    pub fn new(cfg: &Config, data: &DataSpec) -> Result<Option<Self>> {
        let t = &cfg.train;
        if t.eval_every == 0 {
            return Ok(None);
        }
        let split = Split::parse(t.split.as_deref().context("--eval-every needs --split")?)?;
        let sampler = BlendedSampler::new_part(data, &split, Part::Valid, t.seq_len, t.seed, cfg.model.vocab_size)
            .context("validation data (--eval-every): the valid part of --split")?;
        Ok(Some(Validation { sampler, batches: t.eval_iters, global_batch: t.global_batch }))
    }

    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Samples in the valid part (one epoch).
    pub fn num_samples(&self) -> u64 {
        self.sampler.num_samples()
    }

    /// Mean token loss over the validation batches; every rank calls it at the same step and
    /// gets the same value. `dp_rank` picks this rank's share of each global batch.
    pub fn loss<B: Backend>(&self, trainer: &mut Trainer<B>, dp_rank: usize) -> Result<f64> {
        let local = self.global_batch / trainer.dp.size();
        let row = trainer.model.seq + 1;
        let mut batch = vec![0u32; local * row];
        let mut sum = 0.0;
        for b in 0..self.batches {
            let first = b * self.global_batch as u64 + (dp_rank * local) as u64;
            for (i, out) in batch.chunks_mut(row).enumerate() {
                self.sampler.sample(first + i as u64, out)?;
            }
            sum += trainer.eval_loss(&batch);
        }
        Ok(sum / self.batches as f64)
    }
}
