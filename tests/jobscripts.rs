//! The cluster job scripts (jobscripts/) run locally: each scheduler's script (Slurm with its
//! mpirun launcher, PBS, Grid Engine, plain mpirun) under fake scheduler variables pointing at a
//! generated localhost allocation, in dry mode (SWALLOW_DRY_RUN=1, SWALLOW_RANKS scaling the rank
//! count down), launches a real `mpirun ... swallow train --dry-run` of every layout that exits 0,
//! with each rank bound to its node-local GPU and a per-job log; a job too small for its layout is
//! refused; `submit.sh` asks each scheduler for the layout's nodes; a walltime timer makes a real
//! CPU run save and stop, a new run starts from SWALLOW_INIT and the next job resumes from its own
//! checkpoints (`--load auto`); shellcheck finds nothing.

mod common;

use common::repo;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Job {
    dir: PathBuf,
    data: String,
}

impl Job {
    fn new(name: &str) -> Job {
        let dir = common::tmpdir("jobs", name);
        let data = common::sample(&dir);
        Job { dir, data }
    }

    /// `bash SCRIPT` as the scheduler would start it, with `env` on top of a clean SWALLOW_/scheduler environment.
    fn run(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("bash");
        c.arg(repo().join("jobscripts").join(script)).current_dir(&self.dir);
        for (k, _) in std::env::vars() {
            if ["SWALLOW_", "SLURM_", "PBS_", "NCCL_", "UCX_"].iter().any(|p| k.starts_with(p)) || ["PE_HOSTFILE", "JOB_ID", "CUDA_VISIBLE_DEVICES"].contains(&k.as_str()) {
                c.env_remove(k);
            }
        }
        c.envs([
            ("SWALLOW_HOME", repo().to_str().unwrap()),
            ("SWALLOW_BIN", env!("CARGO_BIN_EXE_swallow")),
            ("SWALLOW_DATA", &self.data),
            ("SWALLOW_RUN_DIR", self.dir.join("run").to_str().unwrap()),
            ("SWALLOW_MPIRUN_ARGS", "--oversubscribe"),
            ("SWALLOW_BIND_VERBOSE", "1"),
            ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
            ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
            ("RAYON_NUM_THREADS", "1"),
        ]);
        c.envs(env.iter().copied()).output().unwrap()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn log(&self, job: &str) -> String {
        std::fs::read_to_string(self.dir.join("run/logs").join(format!("{job}.log"))).unwrap_or_else(|e| panic!("job log {job}.log: {e}"))
    }
}

/// What every dry launch on one host must show: the layout's flags, `ranks` ranks each on its own
/// node-local GPU, the dry run passing.
fn assert_dry_launch(out: &str, config: &str, tp_pp: &str, ranks: usize) {
    let launch = out.lines().find(|l| l.contains("launching: mpirun")).unwrap_or_else(|| panic!("no mpirun launch:\n{out}"));
    for flag in [&format!("-np {ranks} "), tp_pp, "--device cuda", "--load auto", "--save ", "--metrics ", "--dry-run", "bind-gpu.sh", "-x CUDA_DEVICE_MAX_CONNECTIONS "] {
        assert!(launch.contains(flag), "{flag:?} missing from: {launch}");
    }
    assert!(out.contains(&format!("swallow train: {config} |")), "{out}");
    assert!(out.contains("dry run: configuration, topology, layout and data are valid"), "{out}");
    for local in 0..ranks {
        let bound = format!("local rank {local} -> CUDA_VISIBLE_DEVICES={local}\n");
        assert_eq!(out.matches(&bound).count(), 1, "{bound:?} once expected:\n{out}");
    }
    assert!(out.contains("finished with exit code 0"), "{out}");
}

#[test]
fn every_scheduler_script_launches_a_dry_run() {
    let job = Job::new("schedulers");
    // Slurm, with the mpirun launcher (srun needs a real Slurm): the node list expands through
    // scontrol, faked here for the one local host.
    let bin = job.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let scontrol = job.file("bin/scontrol", "#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] || exit 1\necho \"$3\"\n");
    std::fs::set_permissions(&scontrol, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let slurm = [("SLURM_JOB_ID", "101"), ("SLURM_JOB_NODELIST", "localhost"), ("SWALLOW_LAUNCHER", "mpirun"), ("PATH", &path)];
    // PBS: $PBS_NODEFILE lists the host once per MPI process; the job id's server part is dropped.
    let nodefile = job.file("pbs_nodefile", &"localhost\n".repeat(8));
    let pbs = [("PBS_JOBID", "202.pbs1"), ("PBS_NODEFILE", &nodefile), ("SWALLOW_WALLTIME", "01:00:00")];
    // Grid Engine: host, slots, queue, processors; TSUBAME 4.0 nodes have 4 GPUs.
    let pe = job.file("pe_hostfile", "localhost 4 all.q@localhost UNDEFINED\n");
    let age = [("JOB_ID", "303"), ("PE_HOSTFILE", &pe), ("SWALLOW_WALLTIME", "3600")];
    let hosts = job.file("hosts", "localhost\n");
    let local = [("SWALLOW_HOSTS", &hosts[..])];
    let cases: [(&str, &[(&str, &str)], &str, usize); 4] = [
        ("slurm/train.sbatch", &slurm, "101", 8),
        ("pbs/train.pbs", &pbs, "202", 8),
        ("age/train.sh", &age, "303", 4),
        ("local/train.sh", &local, "local-", 4),
    ];
    for (script, env, id, ranks) in cases {
        let n = ranks.to_string();
        let o = job.run(script, &[&[("SWALLOW_LAYOUT", "swallow-7b"), ("SWALLOW_DRY_RUN", "1"), ("SWALLOW_RANKS", &n)], env].concat());
        let out = common::succeeded(&o, script);
        assert_dry_launch(&out, "swallow-7b", "--tp 2 --pp 2", ranks);
        assert!(out.contains(&format!("job {id}")), "{out}");
        // The per-job log holds what the job printed, the ranks' output included.
        let name = out.split("job ").nth(1).unwrap().split(':').next().unwrap();
        assert!(job.log(name).contains("dry run: configuration, topology, layout and data are valid"), "{script}");
        let timer = out.contains("checkpoint-and-stop signal in 3000 s");
        assert_eq!(timer, script.starts_with("pbs") || script.starts_with("age"), "{script}: the timer runs where the scheduler gives no warning:\n{out}");
    }
}

#[test]
fn every_layout_launches_a_dry_run() {
    let job = Job::new("layouts");
    let hosts = job.file("hosts", "localhost\n");
    // The smallest rank count of each layout (DP 1, one host holding every rank): 13B TP 2 x PP 4, 70B TP 8 x PP 8.
    for (layout, config, tp_pp, ranks) in [
        ("swallow-13b", "swallow-13b", "--tp 2 --pp 4", 8),
        ("swallow-70b", "swallow-70b", "--tp 8 --pp 8", 64),
        ("swallow-70b-512", "swallow-70b", "--tp 8 --pp 8", 64),
    ] {
        let n = ranks.to_string();
        let env = [("SWALLOW_LAYOUT", layout), ("SWALLOW_DRY_RUN", "1"), ("SWALLOW_RANKS", &n), ("SWALLOW_GPUS_PER_NODE", &n), ("SWALLOW_HOSTS", &hosts)];
        let out = common::succeeded(&job.run("local/train.sh", &env), layout);
        assert_dry_launch(&out, config, tp_pp, ranks);
    }
}

#[test]
fn a_job_smaller_than_its_layout_or_with_bad_settings_is_refused() {
    let job = Job::new("refused");
    let hosts = job.file("hosts", "localhost\n");
    let o = job.run("local/train.sh", &[("SWALLOW_LAYOUT", "swallow-7b"), ("SWALLOW_HOSTS", &hosts)]);
    let err = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("layout swallow-7b needs 32 GPUs = 4 nodes x 8, but the job has 1 node(s)"), "{err}");
    let o = job.run("local/train.sh", &[("SWALLOW_LAYOUT", "swallow-8b"), ("SWALLOW_HOSTS", &hosts)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("layout 'swallow-8b' is not in") && err.contains("swallow-70b-512"), "{err}");
    let o = job.run("local/train.sh", &[("SWALLOW_LAYOUT", "swallow-7b"), ("SWALLOW_RANKS", "6"), ("SWALLOW_HOSTS", &hosts)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("6 ranks do not divide into tp 2 x pp 2"));
    let o = job.run("local/train.sh", &[("SWALLOW_LAYOUT", "tiny"), ("SWALLOW_WALLTIME", "2h"), ("SWALLOW_HOSTS", &hosts), ("SWALLOW_DRY_RUN", "1")]);
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(all.contains("walltime '2h': expected HH:MM:SS or seconds") && !all.contains("launching"), "{all}");
}

#[test]
fn submit_asks_each_scheduler_for_the_layouts_nodes() {
    let job = Job::new("submit");
    let o = job.run("submit.sh", &[("SWALLOW_SUBMIT_PRINT", "1")]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("usage: jobscripts/submit.sh"));
    let submit = |scheduler: &str, layout: &str| {
        let mut c = Command::new(repo().join("jobscripts/submit.sh"));
        c.args([scheduler, layout]).envs([("SWALLOW_SUBMIT_PRINT", "1"), ("SWALLOW_DATA", "d"), ("SWALLOW_PROJECT", "gx"), ("SWALLOW_QUEUE", "rt_HF")]);
        c.env("SWALLOW_RUN_DIR", job.dir.join("run")).env_remove("SWALLOW_GPUS_PER_NODE").env_remove("SWALLOW_WALLTIME");
        common::succeeded(&c.output().unwrap(), "submit.sh")
    };
    // Nodes = GPUs / GPUs per node, by hand: 32 / 8, 512 / 8; TSUBAME's 4-GPU nodes: 32 / 4, 256 / 4.
    let s = submit("slurm", "swallow-7b");
    assert!(s.starts_with("sbatch ") && s.contains("--nodes=4 ") && s.contains("--signal=B:USR1@600") && s.contains("--time=24:00:00"), "{s}");
    let s = submit("slurm", "swallow-70b-512");
    assert!(s.contains("--nodes=64 ") && s.contains("--gpus-per-node=8"), "{s}");
    let s = submit("pbs", "swallow-13b");
    assert!(s.contains("select=8:ncpus=96:ngpus=8:mpiprocs=8") && s.contains("walltime=24:00:00") && s.contains("-q rt_HF -P gx"), "{s}");
    let s = submit("age", "swallow-7b");
    assert!(s.contains("node_f=8 ") && s.contains("h_rt=24:00:00") && s.contains("-g gx") && s.ends_with("jobscripts/age/train.sh \n"), "{s}");
    assert!(!job.dir.join("run").exists(), "print mode created the run directory");
    // TSUBAME 4.0's 4-GPU nodes cannot hold the 70B layouts' TP 8 (issue 20, item 5): refused
    // before anything is queued, unless SWALLOW_TP says otherwise.
    let mut c = Command::new(repo().join("jobscripts/submit.sh"));
    c.args(["age", "swallow-70b"]).envs([("SWALLOW_SUBMIT_PRINT", "1"), ("SWALLOW_DATA", "d")]).env("SWALLOW_RUN_DIR", job.dir.join("run"));
    let o = c.env_remove("SWALLOW_GPUS_PER_NODE").env_remove("SWALLOW_TP").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("tp 8 is larger than the 4 GPUs of a node"), "{err}");
    let s = common::succeeded(&c.env("SWALLOW_TP", "4").output().unwrap(), "submit.sh with SWALLOW_TP=4");
    assert!(s.contains("node_f=64 "), "{s}");
}

/// The layout's tp/pp give way to SWALLOW_TP / SWALLOW_PP, and a flag of SWALLOW_TRAIN_ARGS that
/// repeats one of the script's own takes its last value instead of a duplicate-flag error.
#[test]
fn layout_settings_can_be_overridden() {
    let job = Job::new("overrides");
    let hosts = job.file("hosts", "localhost\n");
    let env = [
        ("SWALLOW_LAYOUT", "tiny"), ("SWALLOW_DRY_RUN", "1"), ("SWALLOW_HOSTS", hosts.as_str()), ("SWALLOW_TP", "1"), ("SWALLOW_DEVICE", "cpu"),
        ("SWALLOW_TRAIN_ARGS", "--pp 2 --set train.lr=0.002 --set train.min_lr=0.0001"),
    ];
    let out = common::succeeded(&job.run("local/train.sh", &env), "overridden tiny");
    assert!(out.contains("--tp 1 --pp 1") && out.contains("--pp 2"), "{out}");
    assert!(out.contains("topology: world 2 = tp 1 x dp 1 x pp 2"), "{out}");
}

#[test]
fn the_walltime_timer_saves_a_checkpoint_and_the_next_job_resumes() {
    let job = Job::new("timer");
    let hosts = job.file("hosts", "localhost\n");
    let base = [("SWALLOW_LAYOUT", "tiny"), ("SWALLOW_DEVICE", "cpu"), ("SWALLOW_HOSTS", &hosts[..])];
    // A 20 s walltime with a 16 s margin: SIGUSR1 4 s in, long before 1000 steps are done.
    let first = [("SWALLOW_WALLTIME", "20"), ("SWALLOW_SAVE_MARGIN", "16"), ("SWALLOW_TRAIN_ARGS", "--steps 1000 --micro-batch 2")];
    let out = common::succeeded(&job.run("local/train.sh", &[&base[..], &first].concat()), "first job");
    assert!(out.contains("SIGUSR1 received: asking every rank to save"), "{out}");
    let step: u64 = out
        .split("stopping after step ")
        .nth(1)
        .unwrap_or_else(|| panic!("no save-and-stop:\n{out}"))
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(step < 1000);
    let ckpt = job.dir.join("run/checkpoints");
    assert_eq!(std::fs::read_to_string(ckpt.join("latest")).unwrap().trim(), format!("step-{step}.h5"));
    // A new run directory starts from SWALLOW_INIT (as from an imported model) ...
    let run_b = job.dir.join("run-b");
    let init = ckpt.join(format!("step-{step}.h5"));
    let next = |steps: u64, init: &str| {
        let args = format!("--steps {steps} --micro-batch 2");
        let env = [("SWALLOW_RUN_DIR", run_b.to_str().unwrap()), ("SWALLOW_INIT", init), ("SWALLOW_TRAIN_ARGS", &args[..])];
        common::succeeded(&job.run("local/train.sh", &[&base[..], &env].concat()), "next job")
    };
    let out = next(step + 1, init.to_str().unwrap());
    assert!(out.contains("starting from") && out.contains(&format!("--load {}", init.display())), "{out}");
    assert!(out.contains("resumed from") && out.contains(&format!("step-{step}.h5")), "{out}");
    assert!(out.contains(&format!("done: step {}/{}", step + 1, step + 1)), "{out}");
    // ... and once it has checkpoints, the next job resumes from them (--load auto), not from SWALLOW_INIT.
    let out = next(step + 2, "/nonexistent/init.h5");
    assert!(out.contains("--load auto") && out.contains(&format!("step-{}.h5", step + 1)), "{out}");
    assert!(out.contains(&format!("done: step {}/{}", step + 2, step + 2)), "{out}");
    assert!(run_b.join("metrics.jsonl").exists());
}

#[test]
fn shellcheck_finds_nothing() {
    if Command::new("shellcheck").arg("--version").output().is_err() {
        eprintln!("note: shellcheck is not installed (make setup installs it); skipped");
        return;
    }
    let mut scripts = Vec::new();
    for dir in ["", "lib", "slurm", "pbs", "age", "local"] {
        for e in std::fs::read_dir(repo().join("jobscripts").join(dir)).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if p.is_file() && ["#!/bin/bash", "#!/usr/bin/env bash", "# shellcheck shell=bash"].iter().any(|s| text.starts_with(s)) {
                scripts.push(p.strip_prefix(repo()).unwrap().to_path_buf());
            }
        }
    }
    assert!(scripts.len() >= 7, "{scripts:?}");
    let o = Command::new("shellcheck").arg("-x").args(&scripts).current_dir(repo()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}
