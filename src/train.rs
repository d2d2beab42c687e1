//! The training loop, readable top to bottom: check and open what the run needs, build the model
//! on the backend, initialise it from the seed or a checkpoint, then per step fetch the global
//! batch (a pure function of seed and step), run one optimizer step (src/trainer.rs: micro-batches
//! forward and backward with gradient accumulation, clip, update or skip), log, validate
//! (src/validation.rs), save.

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::backend::CudaBackend;
use crate::backend::cuda::driver::{DriverOptions, DriverRuntime};
use crate::backend::cuda::emulated::EmulatedRuntime;
use crate::backend::cuda::launch::ATT_HEAD_DIMS;
use crate::backend::cuda::probe::{choose_device, device_for_local_rank, TrainDevice};
use crate::backend::cuda::runtime::Runtime;
use crate::backend::{Backend, SideLane};
use crate::config::Config;
use crate::trainer::Trainer;
use crate::data::blend::{BlendedSampler, Part, Split};
use crate::data::spec::DataSpec;
use crate::parallel::{MpiWorld, Topology};
use crate::fault::Halted;
use crate::metrics::{flops_per_token, MetricsWriter, StepRecord, ValidRecord};
use crate::parallel::device::CommKind;
use crate::parallel::{traffic, ParallelGroups};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What `run` checks and opens before its first collective call.
struct Setup {
    topo: Topology,
    device: TrainDevice,
    sampler: BlendedSampler,
    validation: Option<crate::validation::Validation>,
}

/// The run's checks that need no other rank (configuration against the world, device, data).
fn prepare(cfg: &Config, mpi: &MpiWorld, dry_run: Option<&crate::plan::hardware::GpuKind>) -> Result<Setup> {
    let topo = Topology::new(mpi.size(), mpi.rank(), cfg.parallel.tp, cfg.parallel.pp)?;
    let dp = cfg.data_parallel_size(topo.world)?;
    // Every batch size of the run (a ramp-up's too) fits the pipeline schedule.
    crate::trainer::pipeline_slots(cfg, topo.pp, topo.pp_rank, dp)?;
    cfg.check_tensor_parallel()?;
    cfg.check_positions()?;
    let microbatches = cfg.train.global_batch / (cfg.train.micro_batch * dp);
    crate::pipeline::schedule(cfg.schedule_kind()?, topo.pp, cfg.parallel.vpp, microbatches, topo.pp_rank)
        .context("pipeline schedule")?;
    let device = match choose_device(&cfg.train.device, topo.rank == 0) {
        Ok(d) => d,
        // The cluster job scripts pass --device cuda; their dry runs check everything else.
        Err(e) if dry_run.is_some() && cfg.train.device == "cuda" => {
            if topo.rank == 0 {
                log::warn!("{e:#}; a real run would stop here");
            }
            TrainDevice::Cpu
        }
        Err(e) => return Err(e),
    };
    let on_cuda = matches!(device, TrainDevice::Cuda | TrainDevice::CudaEmulated) || cfg.train.device == "cuda";
    let head_dim = cfg.model.head_dim();
    if on_cuda && !ATT_HEAD_DIMS.contains(&head_dim) {
        bail!(
            "--device {}: head dim {head_dim} (model.hidden_size {} / model.num_heads {}); the CUDA flash-attention kernels take head dims {ATT_HEAD_DIMS:?}",
            cfg.train.device, cfg.model.hidden_size, cfg.model.num_heads
        );
    }
    if on_cuda && cfg.parallel.zero == 2 {
        bail!("--zero 2 with --device {}: ZeRO-2 runs on the CPU backend only (the CUDA backend's exchange runs in place in one whole gradient buffer); use --zero 1 there", cfg.train.device);
    }
    let t = &cfg.train;
    let spec = t.data.as_deref().context("no training data: pass --data PREFIX (or set train.data)")?;
    let data = DataSpec::parse(spec)?;
    let sampler = match t.split.as_deref() {
        None => BlendedSampler::new(&data, t.seq_len, t.seed, cfg.model.vocab_size)?,
        Some(s) => BlendedSampler::new_part(&data, &Split::parse(s)?, Part::Train, t.seq_len, t.seed, cfg.model.vocab_size)?,
    };
    let validation = crate::validation::Validation::new(cfg, &data)?;
    Ok(Setup { topo, device, sampler, validation })
}

/// `swallow train`: the whole run on this rank; with `dry_run` (the GPU kind to plan memory for)
/// only the checks and the plan, without building the model.
pub fn run(cfg: &Config, mpi: &MpiWorld, dry_run: Option<&crate::plan::hardware::GpuKind>) -> Result<()> {
    // The checks before the first collective end on every rank together (parallel/agree.rs): an error
    // every rank raises is printed once, and one rank's own (a shard only it cannot read) ends the
    // job with its message.
    let Setup { topo, device, sampler, validation } = crate::parallel::agree::agree(&mpi.world, prepare(cfg, mpi, dry_run))?;
    let t = &cfg.train;
    let spec = t.data.as_deref().unwrap_or_default();
    let params = crate::model::ParamTable::llama(&cfg.model).numel();
    let say = |line: String| {
        if topo.rank == 0 {
            println!("{line}");
        }
    };
    say(format!(
        "swallow train: {} | {:.2}M parameters | {} layers, hidden {}, heads {}/{} kv | seq {} | global batch {} = {} x {} micro-batches{} | {} steps | data {} ({} samples/epoch)",
        cfg.name, params as f64 / 1e6, cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_heads,
        cfg.model.num_kv_heads, t.seq_len, t.global_batch, t.global_batch / t.micro_batch, t.micro_batch,
        cfg.batch_schedule()?.rampup().map_or(String::new(), |r| format!(
            ", ramped up from {} by {} over {} samples (learning rate over samples)", r.start, r.increment, r.samples
        )),
        t.steps, spec, sampler.num_samples()
    ));
    if let Some(v) = &validation {
        say(format!("validation: every {} steps, {} global batches of the valid part ({} samples/epoch)", t.eval_every, v.batches(), v.num_samples()));
    }
    let shards: Vec<&crate::data::indexed::IndexedDataset> = sampler.samplers().iter().flat_map(|s| s.datasets()).collect();
    say(format!("data: {}", crate::data::token_check::check(&shards, cfg.model.vocab_size, &mpi.world)?));
    if let Some(gpu) = dry_run {
        crate::preflight::check(cfg, &sampler, &mpi.world)?;
        return crate::plan::ranks::dry_run(cfg, mpi, &topo, gpu);
    }
    match device {
        TrainDevice::Cpu => {
            CommKind::choose(&cfg.train.comm, "cpu")?;
            crate::plan::ranks::check_cpu_memory(cfg, mpi, &topo)?;
            let held = train_on(Arc::new(CpuBackend::<f32>::new()), cfg, mpi, &topo, mpi.groups(&topo), &sampler, validation.as_ref())?;
            if crate::memstat::live() > 0 {
                crate::plan::ranks::report_measured(cfg, mpi, &topo, held)?;
            }
            Ok(())
        }
        TrainDevice::Cuda | TrainDevice::CudaEmulated => {
            let runtime: Arc<dyn Runtime> = if device == TrainDevice::Cuda {
                let (local, per_node) = mpi.node_local();
                let ordinal = device_for_local_rank(local, per_node)?;
                Arc::new(DriverRuntime::new(&DriverOptions { ordinal, ..Default::default() })?)
            } else {
                Arc::new(EmulatedRuntime::new())
            };
            let backend = Arc::new(CudaBackend::new(runtime)?);
            say(format!("device: {} on every rank (rank 0: {})", backend.name(), backend.describe()));
            let comm = CommKind::choose(&cfg.train.comm, if device == TrainDevice::Cuda { "cuda" } else { "cuda-emulated" })?;
            let groups = mpi.groups_on(&topo, comm)?;
            // Made by groups_on above when any group spans ranks.
            let nccl = (comm == CommKind::Nccl && topo.world > 1).then(crate::parallel::nccl_lib::Nccl::get).and_then(Result::ok);
            let library = nccl.map(|n| format!(" (NCCL {} from {})", crate::parallel::nccl_lib::version_text(n.version), n.path.display())).unwrap_or_default();
            say(format!("collectives on device buffers (TP, DP and PP groups): {}{library}", comm.name()));
            train_on(backend.clone(), cfg, mpi, &topo, groups, &sampler, validation.as_ref())?;
            crate::plan::ranks::report_device_memory(cfg, mpi, &topo, backend.instruments().memory().peak as f64)
        }
    }
}

/// Builds the trainer on `backend`, restores a checkpoint when asked, and runs the steps; returns
/// the host heap held during the steps above what existed before the trainer.
fn train_on<B: Backend>(
    backend: Arc<B>,
    cfg: &Config,
    mpi: &MpiWorld,
    topo: &Topology,
    groups: ParallelGroups,
    sampler: &BlendedSampler,
    validation: Option<&crate::validation::Validation>,
) -> Result<f64> {
    let t = &cfg.train;
    let topo = *topo;
    let say = |line: String| {
        if topo.rank == 0 {
            println!("{line}");
        }
    };
    let heap_before = crate::memstat::live();
    let wire = traffic::Wire::of(&groups);
    let mut trainer = Trainer::new(backend, cfg, groups)?;
    let (_, ranks_per_node) = mpi.node_local();
    if topo.rank == 0 {
        println!(
            "layout: world {} = tp {} x dp {} x pp {} ({} on rank 0's node) | optimizer {}, state {:.1} MB per rank{}",
            topo.world, topo.tp, topo.dp, topo.pp, crate::parallel::topology::ranks(ranks_per_node), cfg.optim.name.name(),
            trainer.optimizer.state_bytes() as f64 / 1e6,
            if trainer.optimizer.is_sharded() { format!(" (ZeRO-{}, sharded over dp {})", cfg.parallel.zero, topo.dp) } else { String::new() }
        );
    }
    if topo.world > 1 && topo.rank == 0 {
        let x = traffic::per_step(cfg, &topo, trainer.pipeline.sends(), wire)?;
        println!(
            "expected traffic per step on rank 0 (ring model{}): tp {:.2} MB, dp {:.2} MB, pp {:.2} MB",
            if t.rampup_batch_size.is_some() { ", at the full global batch" } else { "" },
            x.tp / 1e6, x.dp / 1e6, x.pp / 1e6
        );
    }
    // Checkpoints (resume.rs): restore before the first step, save after steps.
    let save_dir = t.save.as_deref().map(Path::new);
    // One writer per checkpoint directory, for the whole run (dirlock.rs).
    let _save_lock = match save_dir {
        Some(dir) if topo.rank == 0 => Some(crate::dirlock::lock(dir, "--save")?),
        _ => None,
    };
    if save_dir.is_some() {
        crate::resume::catch_stop_signals()?;
    }
    if let Some(load) = t.load.as_deref() {
        let target = crate::checkpoint::store::LoadTarget::parse(load, save_dir)?;
        let (model, opt) = (&mut trainer.model, &mut trainer.optimizer);
        if let Some(p) = crate::resume::load(&target, &mpi.world, &topo, cfg, model, opt)? {
            (trainer.step, trainer.consumed_samples) = (p.step, p.consumed_samples);
        }
    }
    // Rank 0 writes the metrics, from the step after the one resumed (metrics.rs).
    let opened = match (topo.rank, t.metrics.as_deref()) {
        (0, Some(p)) => MetricsWriter::open(Path::new(p), trainer.step).map(Some),
        _ => Ok(None),
    };
    let mut metrics = crate::parallel::agree::agree(&mpi.world, opened)?;
    let flops_tok = flops_per_token(&cfg.model, t.seq_len);
    let row = t.seq_len + 1;
    // Room for the largest batch (the full global batch); under ramp-up a step uses its front.
    let mut batch = vec![0u32; t.global_batch / topo.dp * row];
    let mut last_global = None;
    let start = Instant::now();
    crate::memstat::reset_peak();
    let first_step = trainer.step + 1;
    let mut eta = crate::progress::EtaClock::new(crate::progress::ETA_WARMUP_STEPS);
    let _watchdog = start_watchdog(cfg, mpi, &topo)?;
    let backend = trainer.model.backend.clone();
    let tp_on_side = || backend.side_collectives(SideLane::TensorParallel);
    for step in first_step..=t.steps {
        let tp_on_side_before = tp_on_side();
        let t0 = Instant::now();
        let (global, consumed) = (trainer.global_batch(), trainer.consumed_samples);
        if trainer.batches.rampup().is_some() && last_global != Some(global) {
            say(format!(
                "batch-size ramp-up: global batch {global} from {consumed} consumed samples ({} micro-batches of {} per DP rank)",
                trainer.batches.micro_batches(consumed, t.micro_batch, topo.dp), t.micro_batch
            ));
        }
        last_global = Some(global);
        let local = &mut batch[..trainer.local_batch() * row];
        crate::data::batches::fill(sampler, crate::data::batches::local_rows(consumed, global, topo.dp, topo.dp_rank), local)?;
        let s = trainer.train_step(local);
        crate::watchdog::progress();
        let dt = t0.elapsed().as_secs_f64();
        if let (true, Some((buckets, early))) = (step == first_step && topo.dp > 1, trainer.optimizer.overlapped_buckets()) {
            say(format!("DP gradient exchange on the device: {buckets} buckets, {early} started as the backward pass completed them"));
        }
        if step == first_step && trainer.model.tp.size() > 1 && trainer.model.tp.device().is_some() {
            let n = tp_on_side() - tp_on_side_before;
            say(format!("TP collectives of the backward pass on the device's TP stream, overlapping its GEMMs: {n} in step {step}"));
        }
        let tokens_per_s = (global * t.seq_len) as f64 / dt;
        let tflops = flops_tok * tokens_per_s / topo.world as f64 / 1e12;
        let rec = StepRecord {
            step,
            loss: s.loss,
            lr: s.lr,
            grad_norm: s.grad_norm,
            tokens_per_s,
            tflops,
            mfu: tflops / t.peak_tflops,
            skipped: s.skipped,
            global_batch: global,
            consumed_samples: trainer.consumed_samples,
            step_time_s: dt,
            elapsed_s: start.elapsed().as_secs_f64(),
            comm_s: s.comm.iter().map(|c| c.seconds).sum(),
            tp_bytes: s.comm[0].bytes,
            dp_bytes: s.comm[1].bytes,
            pp_bytes: s.comm[2].bytes,
            heap_mb: crate::memstat::peak().saturating_sub(heap_before) as f64 / 1e6,
            skip_reason: s.skip_reason.map(|r| r.to_string()),
            peak_rss_bytes: crate::metrics::peak_rss_bytes().unwrap_or(0),
            eta_s: eta.step_done(start.elapsed().as_secs_f64(), dt, t.steps - step),
            noise_scale: s.noise_scale,
        };
        if topo.rank == 0 {
            if step == 1 || step == t.steps || step % t.log_every.max(1) == 0 || s.skipped {
                println!("{}", rec.line(t.steps, topo.world > 1));
            }
            if let Some(w) = metrics.as_mut() {
                w.write(&rec)?;
            }
        }
        if let Some(v) = validation.filter(|_| step % t.eval_every == 0 || step == t.steps) {
            let valid_loss = v.loss(&mut trainer, topo.dp_rank)?;
            say(format!("validation at step {step}: loss {valid_loss:.4} (perplexity {:.2}) over {} batches", valid_loss.exp(), v.batches()));
            if let (0, Some(w)) = (topo.rank, metrics.as_mut()) {
                w.write(&ValidRecord { kind: "valid", step, valid_loss, valid_batches: v.batches() })?;
            }
        }
        let halt = trainer.guard.should_stop();
        crate::watchdog::step_done(step);
        if let Some(dir) = save_dir {
            let stop = crate::resume::stop_requested(&mpi.world);
            if halt || stop || step == t.steps || t.save_every.is_some_and(|n| n > 0 && step % n == 0) {
                crate::resume::save(dir, &mpi.world, &topo, cfg, &trainer.model, &trainer.optimizer, step, trainer.consumed_samples)?;
            }
            if stop {
                if topo.rank == 0 {
                    println!("stopping after step {step}: SIGTERM or SIGUSR1 received, checkpoint saved");
                }
                break;
            }
        }
        if halt {
            let saved = match save_dir {
                Some(dir) => format!("checkpoint of step {step} saved in {}", dir.display()),
                None => "no checkpoint saved (no --save)".into(),
            };
            return Err(Halted(format!(
                "stopped at step {step}: {} steps in a row were skipped (train.max_skipped_in_a_row = {}; last: {}); {saved}; \
                 the weights are those of the last applied step — lower train.lr or restart from an earlier checkpoint",
                trainer.guard.skipped_in_a_row(), t.max_skipped_in_a_row,
                s.skip_reason.map(|r| r.to_string()).unwrap_or_default()
            ))
            .into());
        }
    }
    say(format!("done: step {}/{} in {:.1} s", trainer.step, t.steps, start.elapsed().as_secs_f64()));
    Ok(crate::memstat::peak().saturating_sub(heap_before) as f64)
}

/// The run's watchdog (watchdog.rs), its heartbeats in `--save DIR/.swallow-heartbeat`, else in
/// the temp directory of rank 0's node; with train.watchdog_s = 0 none. Collective.
fn start_watchdog(cfg: &Config, mpi: &MpiWorld, topo: &Topology) -> Result<Option<crate::watchdog::Watchdog>> {
    let t = &cfg.train;
    if t.watchdog_s == 0 {
        return Ok(None);
    }
    let mut pid0 = std::process::id() as u64;
    mpi::traits::Root::broadcast_into(&mpi::traits::Communicator::process_at_rank(&mpi.world, 0), &mut pid0);
    let dir = match t.save.as_deref() {
        Some(save) => Path::new(save).join(".swallow-heartbeat"),
        None => std::env::temp_dir().join(format!("swallow-heartbeat-{pid0}")),
    };
    let made = match topo.rank {
        0 => std::fs::create_dir_all(&dir).with_context(|| format!("watchdog heartbeat directory {}", dir.display())),
        _ => Ok(()),
    };
    crate::parallel::agree::agree(&mpi.world, made)?;
    let started = crate::watchdog::Watchdog::start(dir, topo.rank, topo.world, t.watchdog_s);
    crate::parallel::agree::agree(&mpi.world, started).map(Some)
}
