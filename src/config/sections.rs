//! The sections of a configuration: `[model]` (ModelConfig, with RoPE scaling), `[train]`
//! (TrainConfig, with the recomputation choice), `[optim]` (OptimConfig: the update rule) and
//! `[parallel]` (ParallelConfig), with the defaults of every field that has one. Loading, overrides and the checks across sections are
//! in mod.rs.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Llama 3 style frequency-dependent RoPE scaling (`rope_type = "llama3"` in HF configs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub ffn_hidden_size: usize,
    pub vocab_size: usize,
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "defaults::norm_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub tie_embeddings: bool,
    /// Standard deviation of the normal init of every matrix (norm weights start at 1).
    #[serde(default = "defaults::init_std")]
    pub init_std: f64,
    /// Pad the vocabulary rows in memory to a multiple of this x TP (Megatron's
    /// --make-vocab-size-divisible-by; padding never enters the loss, checkpoints or exports).
    #[serde(default = "defaults::one")]
    pub vocab_divisible_by: usize,
    /// BOS and EOS ids of the model's tokenizer (from an imported config.json), which export
    /// writes into config.json and generation_config.json. Not part of the model's math: a
    /// checkpoint's are not compared with a run's, and a run without them inherits its --load's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
}

/// The [model] keys that do not change the model's math (its tokenizer's special ids).
pub const TOKEN_ID_KEYS: [&str; 2] = ["bos_token_id", "eos_token_id"];

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "defaults::seq_len")]
    pub seq_len: usize,
    #[serde(default = "defaults::micro_batch")]
    pub micro_batch: usize,
    #[serde(default = "defaults::global_batch")]
    pub global_batch: usize,
    #[serde(default = "defaults::steps")]
    pub steps: u64,
    /// Megatron's `--train-samples`: the run lasts the steps that consume this many samples
    /// (`BatchSchedule::steps_for_samples`), which then replace `steps`.
    #[serde(default)]
    pub train_samples: Option<u64>,
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    #[serde(default = "defaults::min_lr")]
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    /// Steps over which the cosine decays to `min_lr` (default: `steps`).
    #[serde(default)]
    pub decay_steps: Option<u64>,
    /// Megatron's batch-size ramp-up `[START, INCR, SAMPLES]` (`--rampup-batch-size`): the global
    /// batch grows from START by INCR over the first SAMPLES consumed samples (src/batch_size.rs),
    /// and the learning-rate schedule counts consumed samples instead of steps.
    #[serde(default)]
    pub rampup_batch_size: Option<[u64; 3]>,
    /// Under ramp-up: the warm-up in consumed samples (`--lr-warmup-samples`; default: the samples
    /// of the first `warmup_steps` steps).
    #[serde(default)]
    pub warmup_samples: Option<u64>,
    /// Under ramp-up: the consumed samples at which the cosine reaches `min_lr`
    /// (`--lr-decay-samples`; default: the samples of the first `decay_steps`, else `steps`, steps).
    #[serde(default)]
    pub decay_samples: Option<u64>,
    #[serde(default = "defaults::weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "defaults::beta1")]
    pub beta1: f64,
    #[serde(default = "defaults::beta2")]
    pub beta2: f64,
    #[serde(default = "defaults::adam_eps")]
    pub adam_eps: f64,
    #[serde(default = "defaults::grad_clip")]
    pub grad_clip: f64,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Data spec (see the README): `PREFIX`, `P1,P2`, `W1 P1 W2 P2 ...` or a mix `FILE.toml`.
    #[serde(default)]
    pub data: Option<String>,
    /// Megatron --split "98,1,1": training reads only the train documents of every shard.
    #[serde(default)]
    pub split: Option<String>,
    /// JSONL metrics file (one object per optimizer step).
    #[serde(default)]
    pub metrics: Option<String>,
    #[serde(default = "defaults::log_every")]
    pub log_every: u64,
    /// Log the gradient noise scale B_simple every step (`--log-gns`, src/optim/noise_scale.rs):
    /// needs DP >= 2, and exchanges gradients after the backward pass (no overlap).
    #[serde(default)]
    pub log_gns: bool,
    #[serde(default = "defaults::device")]
    pub device: String,
    /// How the TP, DP and PP groups of a CUDA run move device buffers: "auto" (NCCL on a GPU, else
    /// through host memory), "host", "mpi" (CUDA-aware MPI) or "nccl".
    #[serde(default = "defaults::comm")]
    pub comm: String,
    /// Checkpoint directory (`--save`): `DIR/step-N.h5`, `DIR/latest`.
    #[serde(default)]
    pub save: Option<String>,
    /// Save every N steps (`--save-every`); the last step is always saved when `save` is set.
    #[serde(default)]
    pub save_every: Option<u64>,
    /// Checkpoints kept in the save directory (the newest).
    #[serde(default = "defaults::keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// `--load`: a checkpoint file, a save directory (its newest complete checkpoint), or `auto`.
    #[serde(default)]
    pub load: Option<String>,
    /// Peak TFLOP/s of one device, the denominator of MFU.
    #[serde(default = "defaults::peak_tflops")]
    pub peak_tflops: f64,
    /// Skip a step whose loss is this many standard deviations above the mean of the last
    /// `spike_window` applied steps (src/fault.rs); 0 (the default, as in Megatron-LM) turns it off.
    #[serde(default)]
    pub spike_zscore: f64,
    #[serde(default = "defaults::spike_window")]
    pub spike_window: usize,
    /// Save (with `save`) and stop with exit code 3 after this many skipped steps in a row; 0: never.
    #[serde(default = "defaults::max_skipped_in_a_row")]
    pub max_skipped_in_a_row: u64,
    /// End the job when no rank made progress for this many seconds after step 1, naming the
    /// silent ranks (src/watchdog.rs); 0: no watchdog.
    #[serde(default = "defaults::watchdog_s")]
    pub watchdog_s: u64,
    /// Validation loss every N steps on the valid part of `split` (`--eval-every`); 0: never.
    #[serde(default)]
    pub eval_every: u64,
    /// Global batches of validation data per evaluation (`--eval-iters`), the same ones each time.
    #[serde(default = "defaults::eval_iters")]
    pub eval_iters: u64,
    /// Model settings that may differ from those of the checkpoint `load` reads (`--change-model
    /// KEY`, e.g. rope_theta for a context extension); any other difference is an error.
    #[serde(default)]
    pub change_model: Vec<String>,
    /// Activation recomputation (`--recompute`): "selective" (the default) or "full".
    #[serde(default)]
    pub recompute: Recompute,
}

/// Activation recomputation (Korthikanti et al. 2022; Megatron-LM's `--recompute-granularity`).
/// The planner models all three; training takes `selective` and `full` (`train.recompute`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Recompute {
    /// Every activation the backward reads is kept, incl. the attention probabilities (planner only).
    None,
    /// The attention core is recomputed in backward: what flash-style attention does anyway (both
    /// backends recompute the probabilities from the saved log-sum-exp), so this is training
    /// without any further recomputation.
    #[default]
    Selective,
    /// Only each layer's input is kept; the layer's forward runs again just before its backward.
    Full,
}

impl Recompute {
    /// `swallow plan --recompute`: none, selective or full.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Recompute::None,
            "selective" => Recompute::Selective,
            "full" => Recompute::Full,
            other => bail!("--recompute {other:?}: expected none, selective or full"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        }
    }
}

/// `train.recompute`: only what training can do. "none" is refused rather than taken as a synonym:
/// the attention never keeps its probabilities, so a run without recomputation does not exist
/// here, and a plan of "none" (probabilities kept) would not describe the run.
impl TryFrom<String> for Recompute {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "selective" => Ok(Recompute::Selective),
            "full" => Ok(Recompute::Full),
            "none" => Err("\"none\" is not a training option: the attention is flash-style and never keeps its \
                probabilities, so \"selective\" (the default) is already the run without recomputation; expected \"selective\" or \"full\""
                .into()),
            other => Err(format!("{other:?}, expected \"selective\" or \"full\"")),
        }
    }
}

impl From<Recompute> for String {
    fn from(r: Recompute) -> String {
        r.name().to_string()
    }
}

/// `[optim]`: the optimizer's update rule. The hyper-parameters the rules share stay in `[train]`:
/// `beta1`, `beta2`, `adam_eps`, `weight_decay` (matrices only, never norm weights) and
/// `grad_clip` (the global norm, before the moments).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// `optim.name`: "adamw" (the default) or "lamb" (src/optim/lamb.rs).
    #[serde(default)]
    pub name: OptimizerName,
    /// LAMB: divide the moments by `1 - beta^t` before the update (default true). AdamW always
    /// does, so setting it there is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_correction: Option<bool>,
}

impl OptimConfig {
    /// Whether the moments are bias-corrected.
    pub fn bias_correction(&self) -> bool {
        self.bias_correction.unwrap_or(true)
    }
}

/// The update rule (`optim.name`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OptimizerName {
    /// torch.optim.AdamW (decoupled weight decay).
    #[default]
    AdamW,
    /// LAMB (You et al. 2019): the AdamW direction scaled per tensor by ||w|| / ||update||.
    Lamb,
}

impl OptimizerName {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerName::AdamW => "adamw",
            OptimizerName::Lamb => "lamb",
        }
    }
}

impl TryFrom<String> for OptimizerName {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "adamw" => Ok(OptimizerName::AdamW),
            "lamb" => Ok(OptimizerName::Lamb),
            other => Err(format!("{other:?}, expected \"adamw\" or \"lamb\"")),
        }
    }
}

impl From<OptimizerName> for String {
    fn from(n: OptimizerName) -> String {
        n.name().to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelConfig {
    #[serde(default = "defaults::one")]
    pub tp: usize,
    #[serde(default = "defaults::one")]
    pub pp: usize,
    #[serde(default = "defaults::one")]
    pub vpp: usize,
    #[serde(default)]
    pub zero: u8,
    #[serde(default)]
    pub sequence_parallel: bool,
    /// Pipeline schedule: "1f1b", "interleaved", "gpipe" or "zb-h1" (default: interleaved when vpp > 1).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Elements per data-parallel gradient bucket (one collective each).
    #[serde(default = "defaults::bucket_size")]
    pub bucket_size: usize,
    /// Start each bucket's exchange as soon as the backward pass has completed it (Megatron's
    /// --overlap-grad-reduce; on the CUDA backend's device path), else all at the optimizer step.
    #[serde(default = "defaults::yes")]
    pub overlap_grad_reduce: bool,
    /// Under ZeRO-1 leave each bucket's weight all-gather running until the next forward pass
    /// first reads it (Megatron's --overlap-param-gather; on the CUDA backend's device path),
    /// else wait for all of them at the optimizer step.
    #[serde(default = "defaults::yes")]
    pub overlap_param_gather: bool,
    /// In backward, issue the TP reduction of each column-parallel layer's input gradient, and
    /// under sequence parallelism the re-gather of its saved normalised input, to a stream of
    /// their own while the layer's other GEMMs run (Megatron's asynchronous tensor-parallel
    /// all-reduce; on the CUDA backend with `--comm nccl`), else in line.
    #[serde(default = "defaults::yes")]
    pub overlap_tp_backward: bool,
}

pub(super) mod defaults {
    use super::*;
    pub fn max_position_embeddings() -> usize { 4096 }
    pub fn rope_theta() -> f64 { 10000.0 }
    pub fn norm_eps() -> f64 { 1e-5 }
    pub fn init_std() -> f64 { 0.02 }
    pub fn seq_len() -> usize { 1024 }
    pub fn micro_batch() -> usize { 1 }
    pub fn global_batch() -> usize { 8 }
    pub fn steps() -> u64 { 100 }
    pub fn lr() -> f64 { 3e-4 }
    pub fn min_lr() -> f64 { 3e-5 }
    pub fn weight_decay() -> f64 { 0.1 }
    pub fn beta1() -> f64 { 0.9 }
    pub fn beta2() -> f64 { 0.95 }
    pub fn adam_eps() -> f64 { 1e-8 }
    pub fn grad_clip() -> f64 { 1.0 }
    pub fn seed() -> u64 { 1234 }
    pub fn log_every() -> u64 { 1 }
    pub fn device() -> String { "cpu".into() }
    pub fn comm() -> String { "auto".into() }
    pub fn peak_tflops() -> f64 { 0.45 }
    pub fn keep_checkpoints() -> usize { 3 }
    pub fn spike_window() -> usize { 100 }
    pub fn max_skipped_in_a_row() -> u64 { 10 }
    pub fn watchdog_s() -> u64 { 600 }
    pub fn eval_iters() -> u64 { 10 }
    pub fn one() -> usize { 1 }
    pub fn bucket_size() -> usize { 40_000_000 }
    pub fn yes() -> bool { true }
    pub fn train() -> TrainConfig {
        toml::Table::new().try_into().expect("train defaults")
    }
    pub fn parallel() -> ParallelConfig {
        toml::Table::new().try_into().expect("parallel defaults")
    }
}
