//! The `swallow` command line: a thin layer that parses arguments, initialises MPI and calls the
//! library. Errors print one line `error: ...` on stderr and exit 1 (under mpirun with several
//! ranks, the failing rank prints first and then aborts the whole job); commands owned by later
//! milestones say so and exit 2.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use swallow::config::Config;
use swallow::dist::MpiWorld;

/// Counts heap bytes so training can report what each rank holds (memstat.rs).
#[global_allocator]
static ALLOC: swallow::memstat::CountingAlloc = swallow::memstat::CountingAlloc;

#[derive(Parser)]
// A flag given twice takes its last value (a job script's SWALLOW_TRAIN_ARGS may repeat one of
// the script's own flags, e.g. --tp, to override it).
#[command(name = "swallow", version, about = "Llama continual pretraining over MPI (CPU and CUDA backends)", args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize a corpus (JSONL or text) into Megatron .bin/.idx shards.
    Prep(PrepArgs),
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
enum KernelsCommand {
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
struct PrepArgs {
    /// The Hugging Face tokenizer.json to encode with (its tokenizer_config.json beside it names
    /// the EOS).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Text files: JSONL (--field), .txt (one document per line), also .gz/.zst; quoted globs are
    /// expanded.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Output prefix: writes PREFIX.bin and PREFIX.idx.
    #[arg(long)]
    output: PathBuf,
    /// JSON field holding the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// Append the end-of-document token to every document (as Megatron's --append-eod).
    #[arg(long)]
    append_eod: bool,
    /// The end-of-document token's text (default: eos_token of the tokenizer_config.json beside
    /// the tokenizer, else </s>, <|endoftext|>, <|end_of_text|> or <eos>).
    #[arg(long, value_name = "TEXT")]
    eod_token: Option<String>,
    #[arg(long, default_value_t = 0, help = "worker threads per rank (0: all cores)")]
    workers: usize,
    /// Skip lines that are not valid records (invalid UTF-8, bad JSON, no text field) and count
    /// them in the summary, instead of stopping at the first with its file:line.
    #[arg(long)]
    skip_bad_lines: bool,
}

#[derive(Args)]
struct VocabArgs {
    /// The tokenizer.json to expand (SentencePiece BPE with byte fallback: Llama 2 kind).
    #[arg(long)]
    base: PathBuf,
    /// Japanese text: JSONL (--field), .txt, also .gz/.zst; quoted globs are expanded.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Tokens to add (the size is rounded up to a multiple of 8).
    #[arg(long, required_unless_present = "target_size", conflicts_with = "target_size")]
    add: Option<usize>,
    /// Vocabulary size to reach (rounded up to a multiple of 8).
    #[arg(long)]
    target_size: Option<usize>,
    /// Directory for tokenizer.json, tokenizer_config.json and special_tokens_map.json.
    #[arg(long)]
    output: PathBuf,
    /// nfkc: learn from NFKC-normalized text (when the corpus will be NFKC-normalized too).
    #[arg(long, default_value = "none", value_parser = ["nfkc", "none"])]
    normalize: String,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 0)]
    min_frequency: u64,
    /// SentencePiece's character_coverage: characters beyond it are in no new piece.
    #[arg(long, default_value_t = 0.9995)]
    character_coverage: f32,
    /// JSON field holding the text.
    #[arg(long, default_value = "text")]
    field: String,
    #[arg(long, default_value_t = 0, help = "worker threads per rank (0: all cores)")]
    workers: usize,
    /// Skip input lines that are not valid records (counted in the summary) instead of stopping.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Japanese and English text (JSONL/.txt) to report tokens per character on, before and after.
    #[arg(long, num_args = 1..)]
    held_out: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum DataCommand {
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
struct LayoutArgs {
    /// Tensor-parallel size (parallel.tp).
    #[arg(long)]
    tp: Option<usize>,
    /// Pipeline-parallel stages (parallel.pp).
    #[arg(long)]
    pp: Option<usize>,
    /// Virtual pipeline chunks per stage, for the interleaved schedule (parallel.vpp).
    #[arg(long)]
    vpp: Option<usize>,
    /// 1: ZeRO-1, the optimizer state sharded over data parallel (parallel.zero).
    #[arg(long)]
    zero: Option<u8>,
    /// Activation recomputation: selective or full (default: the config's train.recompute,
    /// selective); `plan` also takes none (attention probabilities kept, as without flash attention).
    #[arg(long)]
    recompute: Option<String>,
}

#[derive(Args)]
struct TrainArgs {
    /// Preset name (data/configs/NAME.toml) or TOML file [default: the model of the --load
    /// checkpoint, else tiny].
    #[arg(long)]
    config: Option<String>,
    /// A model setting that may differ from the --load checkpoint's, e.g. rope_theta for a
    /// context extension (repeatable); any other difference is an error.
    #[arg(long, value_name = "KEY")]
    change_model: Vec<String>,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Megatron's sequence parallelism over the TP group (parallel.sequence_parallel).
    #[arg(long)]
    sequence_parallel: bool,
    /// The data spec: PREFIX, P1,P2, "W1 P1 W2 P2" or a mix .toml (train.data).
    #[arg(long)]
    data: Option<String>,
    /// Train/valid/test ratios over each shard's documents, e.g. 98,1,1 (train reads the first part).
    #[arg(long)]
    split: Option<String>,
    /// Optimizer steps of the whole run (train.steps).
    #[arg(long)]
    steps: Option<u64>,
    /// Tokens per sample (train.seq_len).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Samples per micro-batch on one rank (train.micro_batch).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Samples per optimizer step over all data-parallel ranks (train.global_batch).
    #[arg(long)]
    global_batch: Option<usize>,
    /// Seed of the initialisation and the data order (train.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Peak learning rate (train.lr).
    #[arg(long)]
    lr: Option<f64>,
    /// Checkpoint directory: DIR/step-N.h5 and DIR/latest (train.save).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Save every N steps; the last step is always saved (train.save_every).
    #[arg(long)]
    save_every: Option<u64>,
    /// A checkpoint file, a checkpoint directory (its `latest`), or auto (the newest in --save,
    /// else a fresh start).
    #[arg(long)]
    load: Option<String>,
    /// Validation loss every N steps (and at the last) on the valid part of --split.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Global batches of validation data per evaluation (default 10).
    #[arg(long)]
    eval_iters: Option<u64>,
    /// A JSONL file that gets one record per step (and per validation).
    #[arg(long)]
    metrics: Option<String>,
    /// cpu, cuda, auto (cuda where a GPU is visible) or cuda-emulated (train.device).
    #[arg(long)]
    device: Option<String>,
    /// Collectives on device buffers: auto (NCCL on a GPU), host, mpi (CUDA-aware MPI), nccl,
    /// nccl-emulated (NCCL's calls over MPI on the emulated device: CI's check of the NCCL path).
    #[arg(long)]
    comm: Option<String>,
    /// Check configuration, topology, layout, data (token ids, epochs), the --load checkpoint and
    /// the --save directory, print every rank's memory plan, exit.
    #[arg(long)]
    dry_run: bool,
    /// GPU kind the dry run plans memory for (h100, h100-94, h200, a100).
    #[arg(long, default_value = "h100")]
    gpu: String,
    /// Any config field: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct PlanArgs {
    /// Preset name (data/configs/NAME.toml).
    #[arg(long, conflicts_with = "config")]
    model: Option<String>,
    /// Preset name or TOML file.
    #[arg(long)]
    config: Option<String>,
    /// GPUs of the run (ranks, for --gpu cpu).
    #[arg(long)]
    gpus: usize,
    /// h100 (8 per node), h100-94 (TSUBAME 4.0: 94 GB, 4 per node), h200, a100, or cpu (this
    /// build's CPU backend: memory only).
    #[arg(long, default_value = "h100")]
    gpu: String,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Samples per micro-batch (default: the config's).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Samples per step (default: the config's).
    #[arg(long)]
    global_batch: Option<usize>,
    /// Tokens per sample (default: the config's).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Override the GPU kind's memory, GiB (e.g. the total nvidia-smi reports).
    #[arg(long)]
    gpu_memory_gib: Option<f64>,
    /// Override the GPU kind's GPUs per node.
    #[arg(long)]
    gpus_per_node: Option<usize>,
    /// Token budget (default: the config's steps x global batch x seq), e.g. 1e11.
    #[arg(long)]
    tokens: Option<f64>,
    /// Yen per GPU-hour, for the cost estimate.
    #[arg(long, default_value_t = swallow::plan::report::DEFAULT_PRICE_YEN)]
    price_per_gpu_hour: f64,
    /// Rank every valid layout that fits by predicted step time.
    #[arg(long)]
    search: bool,
    /// Any config field: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// Preset name or TOML file, for its train.seq_len when --seq-len is not given.
    #[arg(long)]
    config: Option<String>,
    /// A checkpoint file or directory (its `latest`); the model comes from it.
    #[arg(long)]
    load: Option<String>,
    /// A Hugging Face Llama directory (config.json + safetensors).
    #[arg(long)]
    hf: Option<PathBuf>,
    /// The data spec; windows of seq-len + 1 tokens are read in order.
    #[arg(long)]
    data: String,
    /// Tokens per window [default: the --config's, else the checkpoint's train.seq_len].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    /// Micro-batches to evaluate [default: all whole ones of the data].
    #[arg(long)]
    batches: Option<usize>,
}

#[derive(Args)]
struct ExportArgs {
    /// A checkpoint file, or a checkpoint directory (its `latest`).
    #[arg(long)]
    load: PathBuf,
    /// The Hugging Face directory to write (made if missing).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "bf16", help = "bf16, fp16 or fp32")]
    dtype: String,
    /// tokenizer.json, or a directory with the tokenizer files, copied into the output.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(Args)]
struct PlotArgs {
    /// `swallow train --metrics` JSONL files: several runs share one chart, a colour each.
    #[arg(required = true)]
    metrics: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1200)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 900)]
    height: u32,
}

#[derive(Args)]
struct ImportArgs {
    /// A Hugging Face Llama directory (config.json + safetensors; tokenizer.json for --tokenizer).
    #[arg(long)]
    hf: PathBuf,
    /// The checkpoint: a file NAME.h5, or a directory (gets step-0.h5 and `latest`).
    #[arg(long)]
    out: PathBuf,
    /// A tokenizer.json whose vocabulary extends the model's: the embedding and LM head are
    /// re-arranged into it (new tokens: the mean of the old tokenizer's pieces).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Backend to benchmark (cpu), or `data`: the sampler's index build at 1e7 documents.
    #[arg(default_value = "cpu")]
    device: String,
    /// Preset name or TOML file of the model to time.
    #[arg(long, default_value = "bench")]
    config: String,
    /// Steps run before timing.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Steps timed.
    #[arg(long, default_value_t = 5)]
    steps: usize,
}

fn train_overrides(a: &TrainArgs) -> Vec<String> {
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
    push("train.seq_len", a.seq_len.map(|v| v.to_string()));
    push("train.micro_batch", a.micro_batch.map(|v| v.to_string()));
    push("train.global_batch", a.global_batch.map(|v| v.to_string()));
    push("train.seed", a.seed.map(|v| v.to_string()));
    push("train.lr", a.lr.map(|v| v.to_string()));
    push("train.metrics", a.metrics.as_ref().map(|v| toml_string(v)));
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

fn plan_options(a: PlanArgs) -> Result<swallow::plan::report::PlanOptions> {
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

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn run(cli: Cli, mpi: &MpiWorld) -> Result<i32> {
    // The commands of one process (they print a report, or write one file) run on rank 0 alone
    // when started under mpirun with several ranks; the others leave quietly, so the report is
    // printed once and no two processes write the same file.
    let one_process = matches!(
        cli.command,
        Command::Eval(_) | Command::Plan(_) | Command::Plot(_) | Command::Bench(_)
            | Command::Data { command: DataCommand::Inspect { .. } | DataCommand::Merge { .. } }
    );
    if one_process && mpi.rank() != 0 {
        return Ok(0);
    }
    match cli.command {
        Command::Prep(a) => {
            let opts = swallow::data::prep::PrepOptions {
                tokenizer: a.tokenizer,
                inputs: a.input,
                output: a.output,
                field: a.field,
                append_eod: a.append_eod,
                eod_token: a.eod_token,
                workers: a.workers,
                bad_lines: swallow::data::prep_input::BadLines::skip_if(a.skip_bad_lines),
            };
            let comm = mpi.world_group();
            if let Some(summary) = swallow::data::prep::run(&opts, &comm)? {
                println!("{summary}");
            }
        }
        Command::Vocab(a) => {
            let opts = swallow::tokenize::vocab::VocabOptions {
                base: a.base,
                inputs: a.input,
                field: a.field,
                size: match (a.add, a.target_size) {
                    (Some(n), _) => swallow::tokenize::vocab::Size::Add(n),
                    (None, v) => swallow::tokenize::vocab::Size::Target(v.expect("clap requires --add or --target-size")),
                },
                output: a.output,
                nfkc: a.normalize == "nfkc",
                character_coverage: a.character_coverage,
                min_frequency: a.min_frequency,
                workers: a.workers,
                bad_lines: swallow::data::prep_input::BadLines::skip_if(a.skip_bad_lines),
                held_out: a.held_out,
            };
            if let Some(summary) = swallow::tokenize::vocab::run(&opts, &mpi.world_group())? {
                println!("{summary}");
            }
        }
        Command::Data { command: DataCommand::Inspect { prefix, vocab_size } } => {
            swallow::data::inspect::run(&prefix, vocab_size)?;
        }
        Command::Data {
            command: DataCommand::Batches { data, split, seq_len, global_batch, seed, vocab_size, start_step, steps },
        } => {
            let o = swallow::data::batches::BatchesOptions {
                data: &data,
                split: split.as_deref(),
                seq_len,
                global_batch,
                seed,
                vocab_size: vocab_size.unwrap_or(usize::MAX),
                start_step,
                steps,
            };
            swallow::data::batches::run(&o, &mpi.world)?;
        }
        Command::Data { command: DataCommand::Merge { inputs, output } } => {
            swallow::data::merge::run(&inputs, &output)?;
        }
        Command::Train(a) => {
            // Every rank resolves the same settings: a bad one is one error, printed once.
            let resolved = (|| {
                let overrides = train_overrides(&a);
                let cfg = match (&a.config, &a.load) {
                    (Some(c), load) => {
                        let mut cfg = Config::load(c, &overrides)?;
                        if let Some(load) = load {
                            swallow::resume::inherit_token_ids(&mut cfg, load, a.save.as_deref());
                        }
                        cfg
                    }
                    (None, Some(load)) => swallow::resume::config_from_checkpoint(load, a.save.as_deref(), &overrides)?,
                    (None, None) => Config::load("tiny", &overrides)?,
                };
                Ok((cfg, swallow::plan::hardware::GpuKind::by_name(&a.gpu)?))
            })();
            let (cfg, gpu) = swallow::dist::agree::agree(&mpi.world, resolved)?;
            swallow::train::run(&cfg, mpi, a.dry_run.then_some(&gpu))?;
        }
        Command::Eval(a) => {
            let self_comm = mpi::topology::SimpleCommunicator::self_comm();
            let ckpt = a.load.as_deref().map(|p| swallow::checkpoint::store::checkpoint_file(p.as_ref())).transpose()?;
            let model = match (&ckpt, &a.hf) {
                (Some(c), None) => swallow::eval::ModelSource::Checkpoint(c, &self_comm),
                (None, Some(dir)) => swallow::eval::ModelSource::Hf(dir),
                _ => anyhow::bail!("swallow eval: pass one of --hf DIR or --load CKPT"),
            };
            let seq_len = match (a.seq_len, &a.config, &ckpt) {
                (Some(s), _, _) => s,
                (None, Some(c), _) => Config::load(c, &[])?.train.seq_len,
                (None, None, Some(c)) => swallow::checkpoint::export::read_config(c)?.train.seq_len,
                (None, None, None) => anyhow::bail!("swallow eval: pass --seq-len N (or --config C for its seq_len)"),
            };
            let opts = swallow::eval::EvalOptions {
                model,
                data: &a.data,
                seq_len,
                micro_batch: a.micro_batch,
                batches: a.batches,
            };
            swallow::eval::run(&opts)?;
        }
        Command::Bench(a) if a.device == "data" => {
            swallow::data::bench::run(&std::env::temp_dir().join(format!("swallow-bench-data-{}", std::process::id())))?;
        }
        Command::Bench(a) => {
            if a.device == "cuda" {
                anyhow::bail!("swallow bench cuda: the GPU benchmark is the swallow-gpu-bench binary (scripts/gpu-check.sh runs it after the kernel conformance suite)");
            }
            if a.device != "cpu" {
                anyhow::bail!("swallow bench {:?}: expected cpu, data or cuda", a.device);
            }
            let cfg = Config::load(&a.config, &[])?;
            swallow::bench::run(&cfg, a.warmup, a.steps)?;
        }
        Command::Export(a) => {
            if mpi.size() > 1 {
                anyhow::bail!("swallow export runs as one process (without mpirun, or mpirun -np 1), not {}", mpi.size());
            }
            let ckpt = swallow::checkpoint::store::checkpoint_file(&a.load)?;
            let dtype = swallow::checkpoint::export::ExportDtype::parse(&a.dtype)?;
            swallow::checkpoint::export::export(&ckpt, &mpi.world, &a.out, dtype, a.tokenizer.as_deref())?;
        }
        Command::Kernels { command: KernelsCommand::Compile { arch, cache, nvrtc, cuda_include } } => {
            swallow::backend::cuda::compile::compile_command(arch.as_deref(), cache, nvrtc, cuda_include)?;
        }
        Command::Plan(a) => swallow::plan::report::run(&plan_options(a)?)?,
        Command::Plot(a) => swallow::plot::run(&a.metrics, &a.out, (a.width, a.height))?,
        Command::Import(a) => {
            if mpi.size() > 1 {
                anyhow::bail!("swallow import runs as one process (without mpirun, or mpirun -np 1), not {}", mpi.size());
            }
            swallow::checkpoint::import::import(&a.hf, &a.out, a.tokenizer.as_deref(), &mpi.world)?;
        }
    }
    Ok(0)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // A panic is a bug, not bad input: print it on one line and end the whole job.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (bug): {info}");
        std::process::exit(101);
    }));
    let cli = Cli::parse();
    let Some(mpi) = MpiWorld::init() else {
        eprintln!("error: MPI could not be initialised");
        std::process::exit(1);
    };
    let code = match run(cli, &mpi) {
        Ok(code) => code,
        // Every rank stops together (src/fault.rs): rank 0 says why, no abort needed.
        Err(e) if e.downcast_ref::<swallow::fault::Halted>().is_some() => {
            if mpi.rank() == 0 {
                eprintln!("error: {e:#}");
            }
            swallow::fault::Halted::EXIT_CODE
        }
        // Every rank holds the same error (src/dist/agree.rs): rank 0 says it once.
        Err(e) if swallow::dist::agree::is_shared(&e) => {
            if mpi.rank() == 0 {
                eprintln!("error: {e:#}");
            }
            1
        }
        Err(e) => {
            if mpi.size() > 1 {
                // One write (stderr is unbuffered: a formatted eprintln! can take several), then a
                // moment for mpirun to forward it before the abort kills the job.
                let line = format!("error (rank {} of {}): {e:#}\n", mpi.rank(), mpi.size());
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                std::thread::sleep(std::time::Duration::from_millis(200));
                mpi.abort(1);
            }
            eprintln!("error: {e:#}");
            1
        }
    };
    drop(mpi);
    std::process::exit(code);
}
