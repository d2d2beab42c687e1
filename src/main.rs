//! The `swallow` command line: a thin layer that parses arguments, initialises MPI and calls the
//! library. Errors print one line `error: ...` on stderr and exit 1 (under mpirun with several
//! ranks, the failing rank prints first and then aborts the whole job); commands owned by later
//! milestones say so and exit 2.

mod cli;

use anyhow::Result;
use clap::Parser;
use cli::{plan_options, train_overrides, Cli, Command, DataCommand, KernelsCommand};
use swallow::config::Config;
use swallow::parallel::MpiWorld;

/// Counts heap bytes so training can report what each rank holds (memstat.rs).
#[global_allocator]
static ALLOC: swallow::memstat::CountingAlloc = swallow::memstat::CountingAlloc;

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
        Command::Corpus(a) => {
            let opts = swallow::corpus::run::CorpusOptions { inputs: a.input, output: a.output, config: a.config, workers: a.workers };
            if let Some(r) = swallow::corpus::run::run(&opts, &mpi.world)? {
                println!(
                    "corpus: {} inputs, {} records read, {} documents kept ({} characters), {} removed, {} skipped -> {}",
                    r.inputs,
                    r.records_read,
                    r.documents_kept,
                    r.characters_kept,
                    r.documents_removed(),
                    r.skipped.values().map(|c| c.documents).sum::<u64>(),
                    opts.output.join("report.json").display()
                );
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
            let (cfg, gpu) = swallow::parallel::agree::agree(&mpi.world, resolved)?;
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
        // Every rank holds the same error (src/parallel/agree.rs): rank 0 says it once.
        Err(e) if swallow::parallel::agree::is_shared(&e) => {
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
