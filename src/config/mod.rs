//! Model, training and parallel configuration: TOML presets (data/configs/NAME.toml, embedded in
//! the binary so `--config NAME` works from any directory), `key=value` overrides, validation.
//!
//! Every field can be overridden from the command line with `--set section.key=value`; dedicated
//! flags (`--steps`, `--tp`, ...) are spelled as such overrides. Unknown keys and impossible values
//! are rejected with a message naming them. The sections and their defaults: sections.rs.

mod sections;

pub use sections::{ModelConfig, OptimConfig, OptimizerName, ParallelConfig, Recompute, RopeScaling, TrainConfig, TOKEN_ID_KEYS};

use crate::batch_size::BatchSchedule;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A whole configuration: its four sections and the preset or file it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Preset or file name this config came from (informational).
    #[serde(default)]
    pub name: String,
    pub model: ModelConfig,
    #[serde(default = "sections::defaults::train")]
    pub train: TrainConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default = "sections::defaults::parallel")]
    pub parallel: ParallelConfig,
}

/// The presets shipped in data/configs/, embedded at build time.
pub const PRESETS: &[(&str, &str)] = &[
    ("tiny", include_str!("../../data/configs/tiny.toml")),
    ("bench", include_str!("../../data/configs/bench.toml")),
    ("llama2-7b", include_str!("../../data/configs/llama2-7b.toml")),
    ("llama2-13b", include_str!("../../data/configs/llama2-13b.toml")),
    ("llama2-70b", include_str!("../../data/configs/llama2-70b.toml")),
    ("llama3-8b", include_str!("../../data/configs/llama3-8b.toml")),
    ("llama3-70b", include_str!("../../data/configs/llama3-70b.toml")),
    ("swallow-7b", include_str!("../../data/configs/swallow-7b.toml")),
    ("swallow-13b", include_str!("../../data/configs/swallow-13b.toml")),
    ("swallow-70b", include_str!("../../data/configs/swallow-70b.toml")),
];

impl Config {
    /// Loads a preset by name or a TOML file by path, then applies `key=value` overrides.
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Config> {
        let (label, text) = match PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, t)) => (format!("preset {n}"), t.to_string()),
            None => {
                let p = Path::new(name_or_path);
                if !p.exists() {
                    let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                    bail!(
                        "config {name_or_path:?}: no such file and no such preset (presets: {})",
                        names.join(", ")
                    );
                }
                let t = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
                (format!("config file {}", p.display()), t)
            }
        };
        Self::from_toml(&text, &label, overrides)
    }

    pub fn from_toml(text: &str, label: &str, overrides: &[String]) -> Result<Config> {
        let mut table: toml::Table = toml::from_str(text).with_context(|| format!("{label}: invalid TOML"))?;
        for ov in overrides {
            apply_override(&mut table, ov)?;
        }
        let mut cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            anyhow::anyhow!("{label}: {path}: {}", inner.message().trim())
        })?;
        if cfg.name.is_empty() {
            cfg.name = label.rsplit(' ').next().unwrap_or(label).to_string();
        }
        if let Some(samples) = cfg.train.train_samples {
            if overrides.iter().any(|o| o.split('=').next().map(str::trim) == Some("train.steps")) {
                bail!("{label}: train.train_samples (--train-samples) = {samples} and train.steps (--steps) both set the run's length; give one (Megatron's --train-samples and --train-iters)");
            }
            cfg.train.steps = cfg.batch_schedule().with_context(|| format!("{label}: invalid configuration"))?.steps_for_samples(samples);
        }
        // A value may come from the command line, not the file: say so rather than blame the file.
        let source = match overrides.is_empty() {
            true => label.to_string(),
            false => format!("{label} with the command line's settings"),
        };
        cfg.validate().with_context(|| format!("{source}: invalid configuration"))?;
        Ok(cfg)
    }

    /// Checks that do not depend on the world size (see `Config::check_world` for those).
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let t = &self.train;
        let p = &self.parallel;
        let positive = [
            ("model.hidden_size", m.hidden_size),
            ("model.num_layers", m.num_layers),
            ("model.num_heads", m.num_heads),
            ("model.num_kv_heads", m.num_kv_heads),
            ("model.ffn_hidden_size", m.ffn_hidden_size),
            ("model.vocab_size", m.vocab_size),
            ("model.vocab_divisible_by", m.vocab_divisible_by),
            ("train.seq_len", t.seq_len),
            ("train.micro_batch", t.micro_batch),
            ("train.global_batch", t.global_batch),
            ("parallel.tp", p.tp),
            ("parallel.pp", p.pp),
            ("parallel.vpp", p.vpp),
            ("parallel.bucket_size", p.bucket_size),
            ("train.keep_checkpoints", t.keep_checkpoints),
        ];
        for (k, v) in positive {
            if v == 0 {
                bail!("{k} = 0, expected a positive integer");
            }
        }
        if m.hidden_size % m.num_heads != 0 {
            bail!("model.num_heads = {} does not divide model.hidden_size = {}", m.num_heads, m.hidden_size);
        }
        if m.num_heads % m.num_kv_heads != 0 {
            bail!("model.num_kv_heads = {} does not divide model.num_heads = {}", m.num_kv_heads, m.num_heads);
        }
        if m.head_dim() % 2 != 0 {
            bail!("head dim = hidden_size / num_heads = {} must be even for RoPE", m.head_dim());
        }
        if !(m.norm_eps > 0.0) || !(m.rope_theta > 0.0) || !(m.init_std >= 0.0) {
            bail!("model.norm_eps, model.rope_theta must be > 0 and model.init_std >= 0");
        }
        if let Some(rs) = &m.rope_scaling {
            if !(rs.factor >= 1.0) || !(rs.high_freq_factor > rs.low_freq_factor) || rs.low_freq_factor <= 0.0 {
                bail!("model.rope_scaling: need factor >= 1 and high_freq_factor > low_freq_factor > 0, got {rs:?}");
            }
        }
        if t.global_batch % t.micro_batch != 0 {
            bail!("train.global_batch = {} is not a multiple of train.micro_batch = {}", t.global_batch, t.micro_batch);
        }
        if !(t.lr >= 0.0) || !(t.min_lr >= 0.0) || t.min_lr > t.lr {
            bail!("train.lr = {} and train.min_lr = {}: need 0 <= min_lr <= lr", t.lr, t.min_lr);
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) || !(t.adam_eps > 0.0) {
            bail!("{}: need 0 <= train.beta1, train.beta2 < 1 and train.adam_eps > 0", self.optim.name.name());
        }
        if self.optim.name != OptimizerName::Lamb && self.optim.bias_correction.is_some() {
            bail!("optim.bias_correction is a LAMB setting (optim.name = \"lamb\"); AdamW always corrects the bias of its moments");
        }
        if !(t.grad_clip >= 0.0) || !(t.weight_decay >= 0.0) || !(t.peak_tflops > 0.0) {
            bail!("train.grad_clip, train.weight_decay must be >= 0 and train.peak_tflops > 0");
        }
        if let Some(d) = t.decay_steps {
            if d < t.warmup_steps {
                bail!("train.decay_steps = {d} is smaller than train.warmup_steps = {}", t.warmup_steps);
            }
        }
        let batches = self.batch_schedule()?;
        if batches.rampup().is_none() {
            for (k, v) in [("train.warmup_samples (--lr-warmup-samples)", t.warmup_samples), ("train.decay_samples (--lr-decay-samples)", t.decay_samples)] {
                if let Some(v) = v {
                    bail!("{k} = {v} needs train.rampup_batch_size (--rampup-batch-size): without ramp-up the schedule counts steps (train.warmup_steps, train.decay_steps)");
                }
            }
        }
        if let (Some(w), Some(d)) = (t.warmup_samples, t.decay_samples) {
            if d < w {
                bail!("train.decay_samples = {d} is smaller than train.warmup_samples = {w}");
            }
        }
        if !["cpu", "cuda", "auto", "cuda-emulated"].contains(&t.device.as_str()) {
            bail!("train.device = {:?}, expected {}", t.device, crate::backend::cuda::probe::DEVICES);
        }
        if t.save_every.is_some() && t.save.is_none() {
            bail!("train.save_every (--save-every) needs train.save (--save DIR)");
        }
        if !(t.spike_zscore >= 0.0) || (t.spike_zscore > 0.0 && t.spike_window < 2) {
            bail!("train.spike_zscore = {} and train.spike_window = {}: need zscore >= 0 (0: off) and a window of at least 2 steps", t.spike_zscore, t.spike_window);
        }
        if t.eval_every > 0 && (t.split.is_none() || t.eval_iters == 0) {
            bail!("train.eval_every (--eval-every) needs train.split (--split, e.g. 98,1,1: validation reads its second part) and train.eval_iters > 0");
        }
        if p.zero > 2 {
            bail!("parallel.zero = {}, expected 0, 1 or 2", p.zero);
        }
        if p.zero == 2 && t.log_gns {
            bail!("train.log_gns (--log-gns) reads each DP rank's whole gradient, which --zero 2 does not keep: use --zero 0 or 1");
        }
        Ok(())
    }

    /// A training run's sequences fit the model's positions (not part of `validate`: a model's
    /// config alone, as `swallow import` makes it, carries the default train.seq_len).
    pub fn check_positions(&self) -> Result<()> {
        let (t, m) = (&self.train, &self.model);
        if t.seq_len > m.max_position_embeddings {
            bail!(
                "train.seq_len = {} (--seq-len) is longer than model.max_position_embeddings = {}: the model was not trained on such positions; for a context extension raise model.max_position_embeddings deliberately (with a larger model.rope_theta or model.rope_scaling)",
                t.seq_len, m.max_position_embeddings
            );
        }
        Ok(())
    }

    /// The `[model]` keys whose values differ between `self` and `other`: (key, ours, theirs).
    pub fn model_differences(&self, other: &ModelConfig) -> Vec<(String, String, String)> {
        let table = |m: &ModelConfig| toml::Value::try_from(m).ok().and_then(|v| v.as_table().cloned()).unwrap_or_default();
        let (a, b) = (table(&self.model), table(other));
        let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k) && !TOKEN_ID_KEYS.contains(&k.as_str()))
            .map(|k| (format!("model.{k}"), show(a.get(k)), show(b.get(k)))).collect()
    }

    /// The pipeline schedule to run; refused where this configuration cannot run it.
    pub fn schedule_kind(&self) -> Result<crate::pipeline::ScheduleKind> {
        use crate::pipeline::ScheduleKind;
        let p = &self.parallel;
        let kind = match p.schedule.as_deref() {
            None => ScheduleKind::default_for(p.vpp),
            Some(name) => ScheduleKind::from_name(name).with_context(|| {
                let names: Vec<String> = ScheduleKind::ALL.iter().map(|k| format!("{:?}", k.name())).collect();
                format!("parallel.schedule = {name:?}, expected one of {}", names.join(", "))
            })?,
        };
        kind.check_recompute(self.train.recompute)?;
        kind.check_zero(self.parallel.zero)?;
        Ok(kind)
    }

    /// Tensor-parallel divisibility: heads and FFN columns split evenly over `tp`; KV heads too,
    /// or, with more ranks than KV heads, each KV head replicated on `tp / kv_heads` ranks.
    pub fn check_tensor_parallel(&self) -> Result<()> {
        let (m, tp) = (&self.model, self.parallel.tp);
        for (what, n) in [("model.num_heads", m.num_heads), ("model.ffn_hidden_size", m.ffn_hidden_size)] {
            if n % tp != 0 {
                bail!("parallel.tp = {tp} does not divide {what} = {n}");
            }
        }
        let kv = m.num_kv_heads;
        if (tp <= kv && kv % tp != 0) || (tp > kv && tp % kv != 0) {
            bail!("parallel.tp = {tp} and model.num_kv_heads = {kv}: one must divide the other (KV heads are split, or replicated when tp > kv heads)");
        }
        Ok(())
    }

    /// Data-parallel size for a world of `world` ranks, or an error naming the numbers.
    pub fn data_parallel_size(&self, world: usize) -> Result<usize> {
        let p = &self.parallel;
        let mp = p.tp * p.pp;
        if world % mp != 0 {
            bail!("world size {world} is not divisible by tp x pp = {} x {} = {mp}", p.tp, p.pp);
        }
        let dp = world / mp;
        self.batch_schedule()?.check_layout(self.train.micro_batch, dp)?;
        if self.train.log_gns && dp < 2 {
            bail!(
                "train.log_gns (--log-gns) needs data parallelism: it compares one DP rank's gradient with the global batch's, and world {world} / (tp x pp = {mp}) gives dp = {dp}"
            );
        }
        Ok(dp)
    }

    /// The global batch of every step (src/batch_size.rs): constant, or ramped up.
    pub fn batch_schedule(&self) -> Result<BatchSchedule> {
        BatchSchedule::new(self.train.global_batch, self.train.rampup_batch_size)
    }
}

/// Applies one `section.key=value` override; the value is parsed as a TOML value when it is one
/// (numbers, booleans, quoted strings, inline tables) and taken as a plain string otherwise.
pub fn apply_override(table: &mut toml::Table, ov: &str) -> Result<()> {
    let (key, raw) = ov
        .split_once('=')
        .with_context(|| format!("override {ov:?}: expected key=value, e.g. train.steps=100"))?;
    let key = key.trim();
    let raw = raw.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("override {ov:?}: empty key segment");
    }
    let mut cur = table;
    for seg in &parts[..parts.len() - 1] {
        let entry = cur.entry(seg.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .with_context(|| format!("override {ov:?}: {seg} is not a section"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_loads_and_validates() {
        for (name, _) in PRESETS {
            let c = Config::load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(c.name, *name);
        }
    }

    #[test]
    fn swallow_presets_carry_the_swallow_settings() {
        let c = Config::load("swallow-7b", &[]).unwrap();
        assert_eq!(c.model.vocab_size, 43176);
        assert_eq!((c.parallel.tp, c.parallel.pp), (2, 2));
        assert_eq!(c.train.lr, 1e-4);
        assert_eq!(c.train.min_lr, 3.3e-6);
        assert_eq!((c.train.beta1, c.train.beta2, c.train.weight_decay), (0.9, 0.95, 0.1));
        assert_eq!((c.train.seq_len, c.train.global_batch, c.train.steps), (4096, 1024, 25000));
        let c70 = Config::load("swallow-70b", &[]).unwrap();
        assert_eq!((c70.model.num_heads, c70.model.num_kv_heads, c70.model.num_layers), (64, 8, 80));
        assert_eq!((c70.parallel.tp, c70.parallel.pp), (8, 8));
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_named() {
        let c = Config::load("tiny", &["train.steps=7".into(), "model.tie_embeddings=true".into()]).unwrap();
        assert_eq!(c.train.steps, 7);
        assert!(c.model.tie_embeddings);
        let e = Config::load("tiny", &["model.hiden_size=3".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("hiden_size"), "{e:#}");
        let e = Config::load("tiny", &["train.lr=fast".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("lr"), "{e:#}");
    }

    #[test]
    fn impossible_shapes_are_rejected_with_the_numbers() {
        let e = Config::load("tiny", &["model.num_heads=5".into()]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("num_heads = 5") && msg.contains("hidden_size"), "{msg}");
        let e = Config::load("tiny", &["model.num_kv_heads=3".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("num_kv_heads = 3"));
        let e = Config::load("tiny", &["train.global_batch=7".into(), "train.micro_batch=2".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("global_batch = 7"));
        let e = Config::load("no-such-preset", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("no-such-preset"));
    }

    #[test]
    fn recompute_defaults_to_selective_and_round_trips_through_the_stored_toml() {
        assert_eq!(Config::load("tiny", &[]).unwrap().train.recompute, Recompute::Selective);
        let c = Config::load("tiny", &["train.recompute=full".into()]).unwrap();
        assert_eq!(c.train.recompute, Recompute::Full);
        // Checkpoints store the configuration as TOML (checkpoint/format.rs).
        let back = Config::from_toml(&toml::to_string(&c).unwrap(), "stored", &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rampup_round_trips_through_the_stored_toml_and_sample_settings_need_it() {
        let c = Config::load("tiny", &["train.rampup_batch_size=[4, 4, 30]".into(), "train.warmup_samples=8".into()]).unwrap();
        assert_eq!(c.train.rampup_batch_size, Some([4, 4, 30]));
        assert_eq!(c.batch_schedule().unwrap().global_batch(10), 8);
        let back = Config::from_toml(&toml::to_string(&c).unwrap(), "stored", &[]).unwrap();
        assert_eq!(back, c);
        let e = Config::load("tiny", &["train.decay_samples=100".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("train.decay_samples (--lr-decay-samples) = 100 needs train.rampup_batch_size"), "{e:#}");
        let e = Config::load("tiny", &["train.rampup_batch_size=[4, 4]".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("train.rampup_batch_size"), "{e:#}");
        // The world's DP size must split every batch of the ramp: micro-batch 8 x dp 2 = 16 > 4.
        let e = Config::load("tiny", &["train.rampup_batch_size=[4, 4, 30]".into()]).unwrap().data_parallel_size(2).unwrap_err();
        assert!(format!("{e:#}").contains("START = 4 is not a multiple of micro_batch x dp = 8 x 2 = 16"), "{e:#}");
    }

    #[test]
    fn the_optimizer_is_adamw_unless_named_and_unknown_names_are_refused() {
        let c = Config::load("tiny", &[]).unwrap();
        assert_eq!((c.optim.name, c.optim.bias_correction()), (OptimizerName::AdamW, true));
        let c = Config::load("tiny", &["optim.name=lamb".into(), "optim.bias_correction=false".into()]).unwrap();
        assert_eq!((c.optim.name, c.optim.bias_correction()), (OptimizerName::Lamb, false));
        let back = Config::from_toml(&toml::to_string(&c).unwrap(), "stored", &[]).unwrap();
        assert_eq!(back, c);
        let e = format!("{:#}", Config::load("tiny", &["optim.name=sgd".into()]).unwrap_err());
        assert!(e.contains("optim.name") && e.contains("\"sgd\", expected \"adamw\" or \"lamb\"") && !e.contains('\n'), "{e}");
        let e = format!("{:#}", Config::load("tiny", &["optim.bias_correction=false".into()]).unwrap_err());
        assert!(e.contains("optim.bias_correction is a LAMB setting"), "{e}");
    }

    #[test]
    fn world_size_must_fit_the_layout() {
        let c = Config::load("tiny", &["parallel.tp=2".into()]).unwrap();
        assert!(c.data_parallel_size(3).is_err());
        assert_eq!(c.data_parallel_size(4).unwrap(), 2);
    }
}
