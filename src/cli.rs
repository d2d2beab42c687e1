//! The command line of `swallow`: every command and its flags (clap; each flag's help names the
//! config key it sets), and how a command's flags become the library's settings (`--set`-style
//! overrides for train, the plan's options).

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use swallow::config::Config;

#[derive(Parser)]
// A flag given twice takes its last value (a job script's SWALLOW_TRAIN_ARGS may repeat one of
// the script's own flags, e.g. --tp, to override it).
#[command(name = "swallow", version, about = "Llama continual pretraining over MPI (CPU and CUDA backends)", args_override_self = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Tokenize a corpus (JSONL or text) into Megatron .bin/.idx shards.
    Prep(PrepArgs),
    /// The Swallow corpus refinery: WARC files to clean, deduplicated Japanese JSONL (MPI-parallel).
    Corpus(CorpusArgs),
    /// Swallow's vocabulary expansion: learn Japanese BPE pieces as SentencePiece does and append
    /// those a tokenizer.json lacks (with their merges); last line JSON.
    Vocab(VocabArgs),
    /// Inspect token shards.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Train a model.
    Train(TrainArgs),
    /// Mean loss of a model on token shards.
    Eval(EvalArgs),
    /// Export a checkpoint as a Hugging Face Llama directory (safetensors shards + config.json).
    Export(ExportArgs),
    /// Import a Hugging Face Llama directory as a checkpoint (step 0), optionally into a larger vocabulary.
    Import(ImportArgs),
    /// Memory, step time and cost of a layout on a GPU kind, or --search for the best layouts; last line JSON.
    Plan(PlanArgs),
    /// Throughput benchmark of the fixed bench configuration.
    Bench(BenchArgs),
    /// Draw a metrics file's loss, validation loss, learning rate and throughput as a PNG.
    Plot(PlotArgs),
    /// CUDA kernels: compile them at run time with NVRTC into the kernel cache.
    Kernels {
        #[command(subcommand)]
        command: KernelsCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum KernelsCommand {
    /// Compile every kernel for a GPU architecture into the cache (e.g. on a login node before a job).
    Compile {
        /// sm_80, sm_90, ... (default: the architecture of CUDA device 0).
        #[arg(long)]
        arch: Option<String>,
        /// Cache directory (default: $SWALLOW_KERNEL_CACHE, else ~/.cache/swallow/kernels).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// libnvrtc.so.12 or its directory (default: $SWALLOW_NVRTC, the library path, CUDA_HOME, out/cuda-tools).
        #[arg(long)]
        nvrtc: Option<PathBuf>,
        /// Directory holding cuda_bf16.h (default: $SWALLOW_CUDA_INCLUDE, next to libnvrtc, CUDA_HOME).
        #[arg(long)]
        cuda_include: Option<PathBuf>,
    },
}

#[derive(Args)]
pub(crate) struct CorpusArgs {
    /// WARC files (.warc, .warc.gz per record or whole); quoted globs are expanded in sorted order.
    #[arg(long, num_args = 1.., required = true)]
    pub(crate) input: Vec<PathBuf>,
    /// The output directory: part-NNNNN.jsonl.zst (one per input) and report.json.
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// The refinery's TOML (one section per stage: warc, lang, filters, dedup, clean, output);
    /// without it, Swallow's settings.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    #[arg(long, default_value_t = 0, help = "worker threads per rank (0: all cores)")]
    pub(crate) workers: usize,
}

#[derive(Args)]
pub(crate) struct PrepArgs {
    /// The Hugging Face tokenizer.json to encode with (its tokenizer_config.json beside it names
    /// the EOS).
    #[arg(long)]
    pub(crate) tokenizer: PathBuf,
    /// Text files: JSONL (--field), .txt (one document per line), also .gz/.zst; quoted globs are
    /// expanded.
    #[arg(long, num_args = 1.., required = true)]
    pub(crate) input: Vec<PathBuf>,
    /// Output prefix: writes PREFIX.bin and PREFIX.idx.
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// JSON field holding the text.
    #[arg(long, default_value = "text")]
    pub(crate) field: String,
    /// Append the end-of-document token to every document (as Megatron's --append-eod).
    #[arg(long)]
    pub(crate) append_eod: bool,
    /// The end-of-document token's text (default: eos_token of the tokenizer_config.json beside
    /// the tokenizer, else </s>, <|endoftext|>, <|end_of_text|> or <eos>).
    #[arg(long, value_name = "TEXT")]
    pub(crate) eod_token: Option<String>,
    #[arg(long, default_value_t = 0, help = "worker threads per rank (0: all cores)")]
    pub(crate) workers: usize,
    /// Skip lines that are not valid records (invalid UTF-8, bad JSON, no text field) and count
    /// them in the summary, instead of stopping at the first with its file:line.
    #[arg(long)]
    pub(crate) skip_bad_lines: bool,
}

#[derive(Args)]
pub(crate) struct VocabArgs {
    /// The tokenizer.json to expand (SentencePiece BPE with byte fallback: Llama 2 kind).
    #[arg(long)]
    pub(crate) base: PathBuf,
    /// Japanese text: JSONL (--field), .txt, also .gz/.zst; quoted globs are expanded.
    #[arg(long, num_args = 1.., required = true)]
    pub(crate) input: Vec<PathBuf>,
    /// Tokens to add (the size is rounded up to a multiple of 8).
    #[arg(long, required_unless_present = "target_size", conflicts_with = "target_size")]
    pub(crate) add: Option<usize>,
    /// Vocabulary size to reach (rounded up to a multiple of 8).
    #[arg(long)]
    pub(crate) target_size: Option<usize>,
    /// Directory for tokenizer.json, tokenizer_config.json and special_tokens_map.json.
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// nfkc: learn from NFKC-normalized text (when the corpus will be NFKC-normalized too).
    #[arg(long, default_value = "none", value_parser = ["nfkc", "none"])]
    pub(crate) normalize: String,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 0)]
    pub(crate) min_frequency: u64,
    /// SentencePiece's character_coverage: characters beyond it are in no new piece.
    #[arg(long, default_value_t = 0.9995)]
    pub(crate) character_coverage: f32,
    /// JSON field holding the text.
    #[arg(long, default_value = "text")]
    pub(crate) field: String,
    #[arg(long, default_value_t = 0, help = "worker threads per rank (0: all cores)")]
    pub(crate) workers: usize,
    /// Skip input lines that are not valid records (counted in the summary) instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad_lines: bool,
    /// Japanese and English text (JSONL/.txt) to report tokens per character on, before and after.
    #[arg(long, num_args = 1..)]
    pub(crate) held_out: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Documents, tokens, dtype and id range of a shard; last line JSON.
    Inspect {
        /// The shard: PREFIX (PREFIX.bin + PREFIX.idx).
        prefix: PathBuf,
        /// Also check every id against this vocabulary size.
        #[arg(long)]
        vocab_size: Option<usize>,
    },
    /// Checksums of the rows of each global batch as the DP ranks (one per MPI rank) read them.
    Batches {
        /// The data spec, as train's --data.
        #[arg(long)]
        data: String,
        /// Train/valid/test ratios, as train's --split (the batches of the train part).
        #[arg(long)]
        split: Option<String>,
        /// Tokens per sample (each row holds seq-len + 1).
        #[arg(long)]
        seq_len: usize,
        /// Samples per step.
        #[arg(long)]
        global_batch: usize,
        /// The data order's seed (train.seed).
        #[arg(long, default_value_t = 1234)]
        seed: u64,
        /// Reject ids at or above this [default: no check].
        #[arg(long)]
        vocab_size: Option<usize>,
        /// Steps already consumed (resume point).
        #[arg(long, default_value_t = 0)]
        start_step: u64,
        /// Steps to print, from --start-step + 1.
        #[arg(long)]
        steps: u64,
    },
    /// Concatenate shard sets (same dtype) into one, like Megatron's merge_datasets.py; last line JSON.
    Merge {
        /// Input prefixes, in order.
        #[arg(required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// Output prefix: writes PREFIX.bin and PREFIX.idx.
        #[arg(long)]
        output: PathBuf,
    },
}

/// The parallel layout flags `train` and `plan` share (config keys parallel.tp/pp/vpp/zero,
/// train.recompute).
#[derive(Args)]
pub(crate) struct LayoutArgs {
    /// Tensor-parallel size (parallel.tp).
    #[arg(long)]
    pub(crate) tp: Option<usize>,
    /// Pipeline-parallel stages (parallel.pp).
    #[arg(long)]
    pub(crate) pp: Option<usize>,
    /// Virtual pipeline chunks per stage, for the interleaved schedule (parallel.vpp).
    #[arg(long)]
    pub(crate) vpp: Option<usize>,
    /// 1: ZeRO-1, the optimizer state sharded over data parallel; 2: ZeRO-2, the gradients too
    /// (parallel.zero; 2 on the CPU backend).
    #[arg(long)]
    pub(crate) zero: Option<u8>,
    /// Activation recomputation: selective or full (default: the config's train.recompute,
    /// selective); `plan` also takes none (attention probabilities kept, as without flash attention).
    #[arg(long)]
    pub(crate) recompute: Option<String>,
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// Preset name (data/configs/NAME.toml) or TOML file [default: the model of the --load
    /// checkpoint, else tiny].
    #[arg(long)]
    pub(crate) config: Option<String>,
    /// A model setting that may differ from the --load checkpoint's, e.g. rope_theta for a
    /// context extension (repeatable); any other difference is an error.
    #[arg(long, value_name = "KEY")]
    pub(crate) change_model: Vec<String>,
    #[command(flatten)]
    pub(crate) layout: LayoutArgs,
    /// Megatron's sequence parallelism over the TP group (parallel.sequence_parallel).
    #[arg(long)]
    pub(crate) sequence_parallel: bool,
    /// The data spec: PREFIX, P1,P2, "W1 P1 W2 P2" or a mix .toml (train.data).
    #[arg(long)]
    pub(crate) data: Option<String>,
    /// Train/valid/test ratios over each shard's documents, e.g. 98,1,1 (train reads the first part).
    #[arg(long)]
    pub(crate) split: Option<String>,
    /// Optimizer steps of the whole run (train.steps).
    #[arg(long)]
    pub(crate) steps: Option<u64>,
    /// The run's length in samples instead of steps, as Megatron's --train-samples; the steps
    /// follow from the batch schedule (train.train_samples).
    #[arg(long)]
    pub(crate) train_samples: Option<u64>,
    /// Tokens per sample (train.seq_len).
    #[arg(long)]
    pub(crate) seq_len: Option<usize>,
    /// Samples per micro-batch on one rank (train.micro_batch).
    #[arg(long)]
    pub(crate) micro_batch: Option<usize>,
    /// Samples per optimizer step over all data-parallel ranks (train.global_batch).
    #[arg(long)]
    pub(crate) global_batch: Option<usize>,
    /// Megatron's batch-size ramp-up: the global batch starts at START and grows by INCR in
    /// (global - START) / INCR equal shares of the first SAMPLES consumed samples; the learning
    /// rate then counts samples (train.rampup_batch_size).
    #[arg(long, num_args = 3, value_names = ["START", "INCR", "SAMPLES"], action = clap::ArgAction::Set)]
    pub(crate) rampup_batch_size: Option<Vec<u64>>,
    /// Under --rampup-batch-size: the learning-rate warm-up in consumed samples
    /// (train.warmup_samples; default: the samples of train.warmup_steps steps).
    #[arg(long)]
    pub(crate) lr_warmup_samples: Option<u64>,
    /// Under --rampup-batch-size: the consumed samples at which the cosine decay ends
    /// (train.decay_samples; default: the samples of train.decay_steps, else --steps, steps).
    #[arg(long)]
    pub(crate) lr_decay_samples: Option<u64>,
    /// Seed of the initialisation and the data order (train.seed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Peak learning rate (train.lr).
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Checkpoint directory: DIR/step-N.h5 and DIR/latest (train.save).
    #[arg(long)]
    pub(crate) save: Option<PathBuf>,
    /// Save every N steps; the last step is always saved (train.save_every).
    #[arg(long)]
    pub(crate) save_every: Option<u64>,
    /// A checkpoint file, a checkpoint directory (its `latest`), or auto (the newest in --save,
    /// else a fresh start).
    #[arg(long)]
    pub(crate) load: Option<String>,
    /// Validation loss every N steps (and at the last) on the valid part of --split.
    #[arg(long)]
    pub(crate) eval_every: Option<u64>,
    /// Global batches of validation data per evaluation (default 10).
    #[arg(long)]
    pub(crate) eval_iters: Option<u64>,
    /// A JSONL file that gets one record per step (and per validation).
    #[arg(long)]
    pub(crate) metrics: Option<String>,
    /// Log the gradient noise scale (the critical batch size, McCandlish et al. 2018) each
    /// step, from the DP ranks' gradients against the global batch's; needs dp >= 2
    /// (train.log_gns).
    #[arg(long)]
    pub(crate) log_gns: bool,
    /// cpu, cuda, auto (cuda where a GPU is visible) or cuda-emulated (train.device).
    #[arg(long)]
    pub(crate) device: Option<String>,
    /// Collectives on device buffers: auto (NCCL on a GPU), host, mpi (CUDA-aware MPI), nccl,
    /// nccl-emulated (NCCL's calls over MPI on the emulated device: CI's check of the NCCL path).
    #[arg(long)]
    pub(crate) comm: Option<String>,
    /// Check configuration, topology, layout, data (token ids, epochs), the --load checkpoint and
    /// the --save directory, print every rank's memory plan, exit.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// GPU kind the dry run plans memory for (h100, h100-94, h200, a100).
    #[arg(long, default_value = "h100")]
    pub(crate) gpu: String,
    /// Any config field: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PlanArgs {
    /// Preset name (data/configs/NAME.toml).
    #[arg(long, conflicts_with = "config")]
    pub(crate) model: Option<String>,
    /// Preset name or TOML file.
    #[arg(long)]
    pub(crate) config: Option<String>,
    /// GPUs of the run (ranks, for --gpu cpu).
    #[arg(long)]
    pub(crate) gpus: usize,
    /// h100 (8 per node), h100-94 (TSUBAME 4.0: 94 GB, 4 per node), h200, a100, or cpu (this
    /// build's CPU backend: memory only).
    #[arg(long, default_value = "h100")]
    pub(crate) gpu: String,
    #[command(flatten)]
    pub(crate) layout: LayoutArgs,
    /// Samples per micro-batch (default: the config's).
    #[arg(long)]
    pub(crate) micro_batch: Option<usize>,
    /// Samples per step (default: the config's).
    #[arg(long)]
    pub(crate) global_batch: Option<usize>,
    /// Tokens per sample (default: the config's).
    #[arg(long)]
    pub(crate) seq_len: Option<usize>,
    /// Override the GPU kind's memory, GiB (e.g. the total nvidia-smi reports).
    #[arg(long)]
    pub(crate) gpu_memory_gib: Option<f64>,
    /// Override the GPU kind's GPUs per node.
    #[arg(long)]
    pub(crate) gpus_per_node: Option<usize>,
    /// Token budget (default: the config's steps x global batch x seq), e.g. 1e11.
    #[arg(long)]
    pub(crate) tokens: Option<f64>,
    /// Yen per GPU-hour, for the cost estimate.
    #[arg(long, default_value_t = swallow::plan::report::DEFAULT_PRICE_YEN)]
    pub(crate) price_per_gpu_hour: f64,
    /// Rank every valid layout that fits by predicted step time.
    #[arg(long)]
    pub(crate) search: bool,
    /// Any config field: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// Preset name or TOML file, for its train.seq_len when --seq-len is not given.
    #[arg(long)]
    pub(crate) config: Option<String>,
    /// A checkpoint file or directory (its `latest`); the model comes from it.
    #[arg(long)]
    pub(crate) load: Option<String>,
    /// A Hugging Face Llama directory (config.json + safetensors).
    #[arg(long)]
    pub(crate) hf: Option<PathBuf>,
    /// The data spec; windows of seq-len + 1 tokens are read in order.
    #[arg(long)]
    pub(crate) data: String,
    /// Tokens per window [default: the --config's, else the checkpoint's train.seq_len].
    #[arg(long)]
    pub(crate) seq_len: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 1)]
    pub(crate) micro_batch: usize,
    /// Micro-batches to evaluate [default: all whole ones of the data].
    #[arg(long)]
    pub(crate) batches: Option<usize>,
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// A checkpoint file, or a checkpoint directory (its `latest`).
    #[arg(long)]
    pub(crate) load: PathBuf,
    /// The Hugging Face directory to write (made if missing).
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[arg(long, default_value = "bf16", help = "bf16, fp16 or fp32")]
    pub(crate) dtype: String,
    /// tokenizer.json, or a directory with the tokenizer files, copied into the output.
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct PlotArgs {
    /// `swallow train --metrics` JSONL files: several runs share one chart, a colour each.
    #[arg(required = true)]
    pub(crate) metrics: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1200)]
    pub(crate) width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 900)]
    pub(crate) height: u32,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// A Hugging Face Llama directory (config.json + safetensors; tokenizer.json for --tokenizer).
    #[arg(long)]
    pub(crate) hf: PathBuf,
    /// The checkpoint: a file NAME.h5, or a directory (gets step-0.h5 and `latest`).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// A tokenizer.json whose vocabulary extends the model's: the embedding and LM head are
    /// re-arranged into it (new tokens: the mean of the old tokenizer's pieces).
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Backend to benchmark (cpu), or `data`: the sampler's index build at 1e7 documents.
    #[arg(default_value = "cpu")]
    pub(crate) device: String,
    /// Preset name or TOML file of the model to time.
    #[arg(long, default_value = "bench")]
    pub(crate) config: String,
    /// Steps run before timing.
    #[arg(long, default_value_t = 1)]
    pub(crate) warmup: usize,
    /// Steps timed.
    #[arg(long, default_value_t = 5)]
    pub(crate) steps: usize,
}

pub(crate) fn train_overrides(a: &TrainArgs) -> Vec<String> {
    let mut o = Vec::new();
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            o.push(format!("{k}={v}"));
        }
    };
    push("parallel.tp", a.layout.tp.map(|v| v.to_string()));
    push("parallel.pp", a.layout.pp.map(|v| v.to_string()));
    push("parallel.vpp", a.layout.vpp.map(|v| v.to_string()));
    push("parallel.zero", a.layout.zero.map(|v| v.to_string()));
    push("train.recompute", a.layout.recompute.as_ref().map(|v| toml_string(v)));
    push("parallel.sequence_parallel", a.sequence_parallel.then(|| "true".into()));
    push("train.data", a.data.as_ref().map(|v| toml_string(v)));
    push("train.split", a.split.as_ref().map(|v| toml_string(v)));
    push("train.steps", a.steps.map(|v| v.to_string()));
    push("train.train_samples", a.train_samples.map(|v| v.to_string()));
    push("train.seq_len", a.seq_len.map(|v| v.to_string()));
    push("train.micro_batch", a.micro_batch.map(|v| v.to_string()));
    push("train.global_batch", a.global_batch.map(|v| v.to_string()));
    push("train.rampup_batch_size", a.rampup_batch_size.as_ref().map(|v| format!("{v:?}")));
    push("train.warmup_samples", a.lr_warmup_samples.map(|v| v.to_string()));
    push("train.decay_samples", a.lr_decay_samples.map(|v| v.to_string()));
    push("train.seed", a.seed.map(|v| v.to_string()));
    push("train.lr", a.lr.map(|v| v.to_string()));
    push("train.metrics", a.metrics.as_ref().map(|v| toml_string(v)));
    push("train.log_gns", a.log_gns.then(|| "true".into()));
    push("train.device", a.device.as_ref().map(|v| toml_string(v)));
    push("train.comm", a.comm.as_ref().map(|v| toml_string(v)));
    push("train.save", a.save.as_ref().map(|v| toml_string(&v.to_string_lossy())));
    push("train.save_every", a.save_every.map(|v| v.to_string()));
    push("train.load", a.load.as_ref().map(|v| toml_string(v)));
    push("train.eval_every", a.eval_every.map(|v| v.to_string()));
    push("train.eval_iters", a.eval_iters.map(|v| v.to_string()));
    if !a.change_model.is_empty() {
        push("train.change_model", Some(format!("[{}]", a.change_model.iter().map(|k| toml_string(k)).collect::<Vec<_>>().join(", "))));
    }
    o.extend(a.set.iter().cloned());
    o
}

pub(crate) fn plan_options(a: PlanArgs) -> Result<swallow::plan::report::PlanOptions> {
    let name = a.model.or(a.config).ok_or_else(|| anyhow::anyhow!("swallow plan: pass --model NAME or --config C"))?;
    let mut o = Vec::new();
    for (k, v) in [
        ("parallel.tp", a.layout.tp),
        ("parallel.pp", a.layout.pp),
        ("parallel.vpp", a.layout.vpp),
        ("parallel.zero", a.layout.zero.map(usize::from)),
        ("train.micro_batch", a.micro_batch),
        ("train.global_batch", a.global_batch),
        ("train.seq_len", a.seq_len),
    ] {
        if let Some(v) = v {
            o.push(format!("{k}={v}"));
        }
    }
    o.extend(a.set);
    let cfg = Config::load(&name, &o)?;
    let recompute = match a.layout.recompute.as_deref() {
        Some(r) => swallow::plan::Recompute::parse(r)?,
        None => cfg.train.recompute,
    };
    Ok(swallow::plan::report::PlanOptions {
        config_arg: name,
        settings: o,
        cfg,
        gpus: a.gpus,
        target: swallow::plan::report::Target::parse(&a.gpu, a.gpu_memory_gib, a.gpus_per_node)?,
        recompute,
        tokens: a.tokens,
        price_yen: a.price_per_gpu_hour,
        search: a.search,
    })
}

pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
