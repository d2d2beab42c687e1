//! The `swallow` command line: a thin layer that parses arguments, initialises MPI and calls the
//! library. Errors print one line `error: ...` on stderr and exit 1 (under mpirun with several
//! ranks, the failing rank prints first and then aborts the whole job); commands owned by later
//! milestones say so and exit 2.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use swallow::config::Config;
use swallow::dist::MpiWorld;

#[derive(Parser)]
#[command(name = "swallow", version, about = "Llama continual pretraining over MPI (CPU and CUDA backends)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize a corpus (JSONL or text) into Megatron .bin/.idx shards.
    Prep(PrepArgs),
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
    /// Memory, time and cost planner (not yet).
    Plan(Rest),
    /// Throughput benchmark of the fixed bench configuration.
    Bench(BenchArgs),
    /// Plot a metrics file (not yet).
    Plot(Rest),
}

#[derive(Args)]
struct Rest {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[derive(Args)]
struct PrepArgs {
    #[arg(long)]
    tokenizer: PathBuf,
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Output prefix: writes PREFIX.bin and PREFIX.idx.
    #[arg(long)]
    output: PathBuf,
    /// JSON field holding the text.
    #[arg(long, default_value = "text")]
    field: String,
    #[arg(long)]
    append_eod: bool,
    #[arg(long, default_value_t = 0, help = "worker threads (0: all cores)")]
    workers: usize,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Documents, tokens, dtype and id range of a shard; last line JSON.
    Inspect {
        prefix: PathBuf,
        #[arg(long)]
        vocab_size: Option<usize>,
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

#[derive(Args)]
struct TrainArgs {
    /// Preset name (data/configs/NAME.toml) or TOML file.
    #[arg(long, default_value = "tiny")]
    config: String,
    #[arg(long)]
    tp: Option<usize>,
    #[arg(long)]
    pp: Option<usize>,
    #[arg(long)]
    vpp: Option<usize>,
    #[arg(long)]
    zero: Option<u8>,
    #[arg(long)]
    sequence_parallel: bool,
    #[arg(long)]
    data: Option<String>,
    /// Train/valid/test ratios over each shard's documents, e.g. 98,1,1 (train reads the first part).
    #[arg(long)]
    split: Option<String>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    seq_len: Option<usize>,
    #[arg(long)]
    micro_batch: Option<usize>,
    #[arg(long)]
    global_batch: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    save: Option<PathBuf>,
    #[arg(long)]
    save_every: Option<u64>,
    #[arg(long)]
    load: Option<String>,
    #[arg(long)]
    metrics: Option<String>,
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    dry_run: bool,
    /// Any config field: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    config: Option<String>,
    #[arg(long)]
    load: Option<String>,
    /// A Hugging Face Llama directory (config.json + safetensors).
    #[arg(long)]
    hf: Option<PathBuf>,
    #[arg(long)]
    data: String,
    #[arg(long)]
    seq_len: Option<usize>,
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    #[arg(long)]
    batches: Option<usize>,
}

#[derive(Args)]
struct ExportArgs {
    /// A checkpoint file, or a checkpoint directory (its `latest`).
    #[arg(long)]
    load: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "bf16", help = "bf16, fp16 or fp32")]
    dtype: String,
    /// tokenizer.json, or a directory with the tokenizer files, copied into the output.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
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
    /// Backend to benchmark.
    #[arg(default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "bench")]
    config: String,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    steps: usize,
}

/// Exit code for "this part is not built yet".
const NOT_YET: i32 = 2;

fn train_overrides(a: &TrainArgs) -> Vec<String> {
    let mut o = Vec::new();
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            o.push(format!("{k}={v}"));
        }
    };
    push("parallel.tp", a.tp.map(|v| v.to_string()));
    push("parallel.pp", a.pp.map(|v| v.to_string()));
    push("parallel.vpp", a.vpp.map(|v| v.to_string()));
    push("parallel.zero", a.zero.map(|v| v.to_string()));
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
    push("train.save", a.save.as_ref().map(|v| toml_string(&v.to_string_lossy())));
    push("train.save_every", a.save_every.map(|v| v.to_string()));
    push("train.load", a.load.as_ref().map(|v| toml_string(v)));
    o.extend(a.set.iter().cloned());
    o
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn run(cli: Cli, mpi: &MpiWorld) -> Result<i32> {
    match cli.command {
        Command::Prep(a) => {
            let opts = swallow::data::prep::PrepOptions {
                tokenizer: a.tokenizer,
                inputs: a.input,
                output: a.output,
                field: a.field,
                append_eod: a.append_eod,
                workers: a.workers,
            };
            let summary = swallow::data::prep::run(&opts)?;
            println!("{summary}");
        }
        Command::Data { command: DataCommand::Inspect { prefix, vocab_size } } => {
            swallow::data::inspect::run(&prefix, vocab_size)?;
        }
        Command::Data { command: DataCommand::Merge { inputs, output } } => {
            swallow::data::merge::run(&inputs, &output)?;
        }
        Command::Train(a) => {
            let cfg = Config::load(&a.config, &train_overrides(&a))?;
            swallow::train::run(&cfg, mpi, a.dry_run)?;
        }
        Command::Eval(a) => {
            let ckpt = a.load.as_deref().map(|p| swallow::checkpoint::store::checkpoint_file(p.as_ref())).transpose()?;
            let model = match (&ckpt, &a.hf) {
                (Some(c), None) => swallow::eval::ModelSource::Checkpoint(c, &mpi.world),
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
        Command::Bench(a) => {
            if a.device != "cpu" {
                eprintln!("swallow bench {}: only the cpu backend exists yet", a.device);
                return Ok(NOT_YET);
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
        Command::Import(a) => {
            if mpi.size() > 1 {
                anyhow::bail!("swallow import runs as one process (without mpirun, or mpirun -np 1), not {}", mpi.size());
            }
            swallow::checkpoint::import::import(&a.hf, &a.out, a.tokenizer.as_deref(), &mpi.world)?;
        }
        Command::Plan(_) | Command::Plot(_) => {
            let name = std::env::args().nth(1).unwrap_or_default();
            eprintln!("swallow {name}: not yet implemented in this version");
            return Ok(NOT_YET);
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
