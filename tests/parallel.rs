//! Parallel layouts with real MPI processes: the tiny model trained under `mpirun -np N` with
//! tensor parallelism (TP 2 and 4, incl. a vocabulary that needs TP padding), pipeline parallelism
//! (1F1B, interleaved, GPipe, ZeroBubble's ZB-H1), sequence parallelism and data parallelism, with and without the ZeRO-1 distributed
//! optimizer — every 8-rank layout the model's heads allow — gives the single-rank run's per-step
//! losses and gradient norms (within 1e-5 relative). The LAMB optimizer, whose per-tensor trust
//! ratios need the norms of whole tensors, matches too under ZeRO-1, TP (incl. replicated KV
//! heads) and 8 ranks of TP x DP x PP. The gradient noise scale (`--log-gns`) is checked against
//! single-rank runs that measure its parts. A failure on one rank (a missing shard given to rank
//! 1 only) ends the whole job promptly with that rank's message.

mod common;

use common::{mpirun, sample};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tmpdir(name: &str) -> PathBuf {
    common::tmpdir("parallel", name)
}

fn run(dir: &Path, data: &str, np: usize, tp: usize, zero: u8, extra: &[&str]) -> Vec<(f64, f64)> {
    let metrics = dir.join(format!("m-{np}-{tp}-{zero}-{}.jsonl", extra.join("_").replace(['/', '.', '='], "")));
    let mut args = vec![
        "train", "--config", "tiny", "--data", data, "--steps", "5", "--micro-batch", "2",
        "--metrics", metrics.to_str().unwrap(),
        // A large learning rate makes any layout error visible in the later steps.
        "--set", "train.warmup_steps=0", "--set", "train.lr=0.01",
    ];
    let (tp_s, zero_s) = (tp.to_string(), zero.to_string());
    args.extend(["--tp", &tp_s, "--zero", &zero_s]);
    args.extend(extra);
    let o = mpirun(np, &args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "np {np} tp {tp} zero {zero}:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let pp: usize = extra.iter().position(|a| *a == "--pp").map_or(1, |i| extra[i + 1].parse().unwrap());
    let dp = np / (tp * pp);
    assert!(out.contains(&format!("tp {tp} x dp {dp} x pp {pp}")), "{out}");
    if zero >= 1 && dp > 1 {
        assert!(out.contains(&format!("ZeRO-{zero}, sharded over dp {dp}")), "{out}");
    }
    common::metrics(&metrics).iter().map(|v| (v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap())).collect()
}

fn assert_matches(got: &[(f64, f64)], reference: &[(f64, f64)], what: &str) {
    assert_eq!(got.len(), reference.len(), "{what}");
    for (step, (a, b)) in got.iter().zip(reference).enumerate() {
        let loss_err = ((a.0 - b.0) / b.0).abs();
        let norm_err = ((a.1 - b.1) / b.1).abs();
        assert!(loss_err < 1e-5, "{what} step {}: loss {} vs {}", step + 1, a.0, b.0);
        // Looser for the norm: Adam turns rounding-level differences in near-zero gradients into
        // full-size updates, so the norm drifts faster than the loss does.
        assert!(norm_err < 1e-3, "{what} step {}: grad norm {} vs {}", step + 1, a.1, b.1);
    }
}

#[test]
fn tensor_and_data_parallel_layouts_match_the_single_rank_run() {
    let dir = tmpdir("match");
    let data = sample(&dir);
    let reference = run(&dir, &data, 1, 1, 0, &[]);
    assert_eq!(reference.len(), 5);
    assert!(reference[4].0 < reference[0].0 - 0.1, "the reference run must learn: {reference:?}");
    // (ranks, tp, zero): DP alone, TP alone, TP x DP with the distributed optimizer.
    for (np, tp, zero) in [(1, 1, 1), (2, 1, 0), (4, 1, 1), (2, 2, 0), (4, 2, 1)] {
        let got = run(&dir, &data, np, tp, zero, &[]);
        assert_matches(&got, &reference, &format!("np {np} tp {tp} zero {zero}"));
    }
    // Gradients in buckets of about 100,000 elements (the tiny model has 1.8M parameters): one
    // collective per bucket of whole parameters, ZeRO-1 blocks cut from every bucket.
    for (np, zero) in [(2, 0), (4, 1)] {
        let got = run(&dir, &data, np, 1, zero, &["--set", "parallel.bucket_size=100000"]);
        assert_matches(&got, &reference, &format!("np {np} zero {zero}, 100k-element buckets"));
    }
}

#[test]
fn every_8_rank_layout_matches_the_single_rank_run() {
    // A GQA model (8 heads, 4 KV heads, 4 layers) that TP 1, 2, 4 and PP x VPP up to 4 can split;
    // TP 8 replicates each KV head on two ranks.
    let dir = tmpdir("eight");
    let data = sample(&dir);
    let model = ["--set", "model.num_heads=8", "--set", "model.num_kv_heads=4"];
    let reference = run(&dir, &data, 1, 1, 0, &model);
    // (tp, zero, pipeline flags); dp = 8 / (tp x pp)
    let layouts: [(usize, u8, &[&str]); 10] = [
        (1, 1, &[]),
        (8, 0, &[]),
        (2, 0, &[]),
        (1, 1, &["--pp", "2"]),
        (2, 1, &["--pp", "2", "--vpp", "2"]),
        (4, 0, &[]),
        (2, 0, &["--pp", "4"]),
        (2, 1, &["--pp", "2", "--set", "parallel.schedule=gpipe"]),
        (4, 1, &["--sequence-parallel"]),
        (2, 0, &["--pp", "2", "--vpp", "2", "--sequence-parallel"]),
    ];
    for (tp, zero, pipe) in layouts {
        let args: Vec<&str> = model.iter().chain(pipe).copied().collect();
        let got = run(&dir, &data, 8, tp, zero, &args);
        assert_matches(&got, &reference, &format!("8 ranks, tp {tp}, zero {zero}, {pipe:?}"));
    }
}

#[test]
fn zero2_layouts_match_the_single_rank_run() {
    // ZeRO-2: each micro-batch's gradients reduce-scattered bucket by bucket into the owner's
    // block (100k-element buckets: several per rank, blocks cutting parameters in two), with
    // AdamW and LAMB; DP 4 with 2 micro-batches per rank, TP 2 x DP 2 x PP 2 (1F1B and
    // interleaved: buckets spanning chunks), DP 8, TP 2 x DP 4 with sequence parallelism
    // (norm weights summed over TP after the backward) and tied embeddings split over PP 2.
    let dir = tmpdir("zero2");
    let data = sample(&dir);
    let model = ["--set", "model.num_heads=8", "--set", "model.num_kv_heads=4", "--set", "parallel.bucket_size=100000"];
    let tied = ["--set", "model.tie_embeddings=true"];
    for (optim, lr) in [("adamw", "0.01"), ("lamb", "0.05")] {
        let opt = [format!("optim.name={optim}"), format!("train.lr={lr}")];
        let base: Vec<&str> = model.iter().copied().chain(["--set", &opt[0], "--set", &opt[1]]).collect();
        let reference = run(&dir, &data, 1, 1, 0, &base);
        let tied_reference = run(&dir, &data, 1, 1, 0, &[&base[..], &tied].concat());
        let layouts: [(usize, usize, &[&str], bool); 6] = [
            (4, 1, &[], false),
            (8, 2, &["--pp", "2"], false),
            (8, 2, &["--pp", "2", "--vpp", "2"], false),
            (8, 1, &[], false),
            (8, 2, &["--sequence-parallel"], false),
            (8, 2, &["--pp", "2", "--set", "model.tie_embeddings=true"], true),
        ];
        for (np, tp, pipe, is_tied) in layouts {
            let args: Vec<&str> = base.iter().chain(pipe).copied().collect();
            let got = run(&dir, &data, np, tp, 2, &args);
            let want = if is_tied { &tied_reference } else { &reference };
            assert_matches(&got, want, &format!("{optim}, zero 2, {np} ranks, tp {tp}, {pipe:?}"));
        }
    }
}

/// `--log-gns` against its definition (src/optim/noise_scale.rs), from runs that measure its
/// parts: at learning rate 0 the weights stay put, so a single-rank run of half the global batch
/// gives in its steps 1 and 2 the gradient norms of DP rank 0's and rank 1's halves, and a
/// single-rank run of the whole batch the global norm. The DP 2 run's noise scale is the estimate
/// from those, and so is the TP 2 x DP 2 run's (ZeRO-1); DP 1 is refused.
#[test]
fn the_gradient_noise_scale_matches_its_parts() {
    let dir = tmpdir("gns");
    let data = sample(&dir);
    let records = |np: usize, global: &str, steps: &str, extra: &[&str]| {
        let metrics = dir.join(format!("gns-{np}-{global}-{}.jsonl", extra.join("")));
        let mut args = vec![
            "train", "--config", "tiny", "--data", &data, "--steps", steps, "--micro-batch", "2", "--global-batch", global,
            "--metrics", metrics.to_str().unwrap(), "--set", "train.lr=0", "--set", "train.min_lr=0",
        ];
        args.extend(extra);
        common::succeeded(&mpirun(np, &args), "train");
        common::metrics(&metrics)
    };
    let norm_sq = |r: &serde_json::Value| r["grad_norm"].as_f64().unwrap().powi(2);
    let halves = records(1, "4", "2", &[]);
    let small_sq = (norm_sq(&halves[0]) + norm_sq(&halves[1])) / 2.0;
    let big_sq = norm_sq(&records(1, "8", "1", &[])[0]);
    let grad_sq = (8.0 * big_sq - 4.0 * small_sq) / (8.0 - 4.0);
    let trace = (small_sq - big_sq) / (1.0 / 4.0 - 1.0 / 8.0);
    let want = trace / grad_sq;
    assert!(want.is_finite() && want > 0.0, "|G|² {grad_sq}, tr(Σ) {trace}");
    for (np, extra) in [(2, &["--log-gns"][..]), (4, &["--log-gns", "--tp", "2", "--zero", "1"][..])] {
        let got = records(np, "8", "1", extra)[0]["noise_scale"].as_f64().unwrap();
        assert!((got / want - 1.0).abs() < 1e-3, "np {np} {extra:?}: noise scale {got} vs {want} from the single-rank norms");
    }
    let o = mpirun(1, &["train", "--config", "tiny", "--data", &data, "--steps", "1", "--log-gns"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && common::error_lines(&err).len() == 1 && err.contains("--log-gns) needs data parallelism"), "{err}");
}

#[test]
fn lamb_layouts_match_the_single_rank_run() {
    // Each tensor's trust ratio ||w|| / ||u|| from the norms of the whole tensor: ZeRO-1 segments
    // summed over DP, TP shards over TP with norm weights and (TP 4 over 2 KV heads) replicated
    // KV heads counted once, pipeline stages each their own tensors.
    let dir = tmpdir("lamb");
    let data = sample(&dir);
    // Each step moves every tensor by lr x its norm: a larger rate than AdamW's to learn as fast.
    let lamb = ["--set", "optim.name=lamb", "--set", "train.lr=0.05"];
    let reference = run(&dir, &data, 1, 1, 0, &lamb);
    assert!(reference[4].0 < reference[0].0 - 0.1, "the LAMB reference run must learn: {reference:?}");
    let adamw = run(&dir, &data, 1, 1, 0, &lamb[2..]);
    assert_ne!(adamw, reference, "optim.name=lamb must change the run");
    // (ranks, tp, zero, pipeline flags)
    // 100k-element buckets: DP blocks cut many parameters in two.
    let buckets: &[&str] = &["--set", "parallel.bucket_size=100000"];
    let layouts: [(usize, usize, u8, &[&str]); 4] = [(2, 1, 1, buckets), (2, 2, 0, &[]), (8, 2, 1, &["--pp", "2"]), (8, 4, 1, &[])];
    for (np, tp, zero, pipe) in layouts {
        let args: Vec<&str> = lamb.iter().chain(pipe).copied().collect();
        let got = run(&dir, &data, np, tp, zero, &args);
        assert_matches(&got, &reference, &format!("lamb, {np} ranks, tp {tp}, zero {zero}, {pipe:?}"));
    }
}

#[test]
fn zero_bubble_schedule_matches_the_single_rank_run() {
    // ZB-H1 runs each backward as a B pass (input gradients, sent on at once) and a W pass
    // (weight gradients) that stage s runs s micro-batches later; a parameter's gradient, and
    // so its DP bucket's exchange, is complete only after its chunk's last W pass.
    let dir = tmpdir("zb");
    let data = sample(&dir);
    let model = ["--set", "model.num_heads=8", "--set", "model.num_kv_heads=4", "--set", "parallel.schedule=zb-h1"];
    let reference = run(&dir, &data, 1, 1, 0, &model[..4]);
    // (ranks, tp, zero, layout flags); dp = ranks / (tp x pp)
    let layouts: [(usize, usize, u8, &[&str]); 6] = [
        (1, 1, 0, &[]),
        (2, 1, 0, &["--pp", "2"]),
        (4, 1, 1, &["--pp", "4"]),
        (8, 2, 1, &["--pp", "2"]),
        (8, 1, 1, &["--pp", "4", "--set", "parallel.bucket_size=100000"]),
        (8, 2, 0, &["--pp", "2", "--sequence-parallel"]),
    ];
    for (np, tp, zero, pipe) in layouts {
        let args: Vec<&str> = model.iter().chain(pipe).copied().collect();
        let got = run(&dir, &data, np, tp, zero, &args);
        assert_matches(&got, &reference, &format!("zb-h1, {np} ranks, tp {tp}, zero {zero}, {pipe:?}"));
    }
}

#[test]
fn zero_bubble_refuses_what_it_cannot_run() {
    let dir = tmpdir("zb-refuse");
    let data = sample(&dir);
    let zb = ["--set", "parallel.schedule=zb-h1"];
    let o = mpirun(2, &[&["train", "--config", "tiny", "--data", &data, "--pp", "2", "--vpp", "2"][..], &zb].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("the zb-h1 schedule runs one chunk per rank (got vpp=2)"), "{err}");
    let o = mpirun(2, &[&["train", "--config", "tiny", "--data", &data, "--pp", "2", "--set", "train.recompute=full"][..], &zb].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("parallel.schedule = \"zb-h1\" with train.recompute = \"full\""), "{err}");
    // ZeRO-2 streams each backward's gradients; the split backward's W pass is not followed yet.
    let o = mpirun(4, &[&["train", "--config", "tiny", "--data", &data, "--pp", "2", "--zero", "2"][..], &zb].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("parallel.schedule = \"zb-h1\" with parallel.zero = 2 (--zero 2)"), "{err}");
    let o = mpirun(1, &["train", "--config", "tiny", "--data", &data, "--set", "parallel.schedule=zb-h2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("parallel.schedule = \"zb-h2\", expected one of \"gpipe\", \"1f1b\", \"interleaved\", \"zb-h1\""), "{err}");
}

#[test]
fn tied_embeddings_split_over_the_pipeline_match_the_single_rank_run() {
    // The embedding (first stage) and the LM head (last stage) are one matrix: their gradients
    // are summed over the embedding group and the copies stay equal.
    let dir = tmpdir("tied");
    let data = sample(&dir);
    let tied = ["--set", "model.tie_embeddings=true"];
    let reference = run(&dir, &data, 1, 1, 0, &tied);
    // ZB-H1: the LM head's part of the tied matrix comes in the last stage's W passes.
    for (np, tp, pp, schedule) in [(4, 1, "4", "1f1b"), (8, 2, "2", "1f1b"), (8, 2, "2", "zb-h1")] {
        let schedule = format!("parallel.schedule={schedule}");
        let args: Vec<&str> = tied.iter().copied().chain(["--pp", pp, "--set", &schedule]).collect();
        let got = run(&dir, &data, np, tp, 1, &args);
        assert_matches(&got, &reference, &format!("tied, {np} ranks, tp {tp}, pp {pp}, {schedule}"));
    }
}

#[test]
fn measured_traffic_equals_the_analytic_count() {
    use swallow::config::Config;
    use swallow::parallel::traffic;
    let dir = tmpdir("traffic");
    let data = sample(&dir);
    // (ranks, tp, pp, vpp, zero, sequence parallel, bucket size, schedule)
    for (np, tp, pp, vpp, zero, sp, bucket, schedule) in [
        (4, 2, 1, 1, 0, false, 40_000_000, "1f1b"),
        (8, 2, 2, 1, 1, false, 40_000_000, "1f1b"),
        (4, 1, 4, 1, 0, false, 40_000_000, "1f1b"),
        (8, 2, 2, 2, 1, true, 40_000_000, "interleaved"),
        (4, 1, 1, 1, 1, false, 99_999, "1f1b"),
        (4, 1, 1, 1, 2, false, 99_999, "1f1b"),
        (8, 2, 2, 1, 2, false, 99_999, "1f1b"),
        (8, 2, 2, 1, 0, true, 40_000_000, "zb-h1"),
    ] {
        let metrics = dir.join(format!("t-{np}-{tp}-{pp}-{vpp}-{zero}-{sp}-{bucket}-{schedule}.jsonl"));
        let schedule_set = format!("parallel.schedule={schedule}");
        let (tp_s, pp_s, vpp_s, zero_s) = (tp.to_string(), pp.to_string(), vpp.to_string(), zero.to_string());
        let bucket_set = format!("parallel.bucket_size={bucket}");
        let mut args = vec![
            "train", "--config", "tiny", "--data", &data, "--steps", "2", "--micro-batch", "2", "--tp", &tp_s,
            "--pp", &pp_s, "--vpp", &vpp_s, "--zero", &zero_s, "--metrics", metrics.to_str().unwrap(),
            "--set", &bucket_set, "--set", &schedule_set,
        ];
        if sp {
            args.push("--sequence-parallel");
        }
        let o = mpirun(np, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut overrides = vec![
            format!("parallel.tp={tp}"), format!("parallel.pp={pp}"), format!("parallel.vpp={vpp}"),
            format!("parallel.zero={zero}"), format!("parallel.sequence_parallel={sp}"), "train.micro_batch=2".into(),
        ];
        overrides.push("train.steps=2".into());
        overrides.push(bucket_set.clone());
        overrides.push(schedule_set.clone());
        let cfg = Config::load("tiny", &overrides).unwrap();
        let what = format!("{np} ranks tp {tp} pp {pp} vpp {vpp} zero {zero} sp {sp} bucket {bucket}");
        common::assert_traffic(&common::metrics(&metrics), &cfg, np, traffic::Wire::HOST, &what);
    }
}

#[test]
fn tensor_parallel_vocabulary_padding_is_excluded_from_the_loss() {
    // 4097 tokens over TP 4: 4100 rows, the last shard has 1022 real rows and 3 padding rows; with
    // Megatron's make-vocab-size-divisible-by 64, 4352 rows (the last shard: 833 real rows, 255 padding).
    let dir = tmpdir("pad");
    let data = sample(&dir);
    let model = ["--set", "model.vocab_size=4097", "--set", "model.num_kv_heads=4"];
    let reference = run(&dir, &data, 1, 1, 0, &model);
    let got = run(&dir, &data, 4, 4, 0, &model);
    assert_matches(&got, &reference, "tp 4, padded vocabulary");
    let padded: Vec<&str> = model.iter().copied().chain(["--set", "model.vocab_divisible_by=64"]).collect();
    let got = run(&dir, &data, 4, 4, 1, &padded);
    assert_matches(&got, &reference, "tp 4, vocabulary padded to a multiple of 256");
}

#[test]
fn layouts_that_do_not_divide_the_model_are_refused() {
    let dir = tmpdir("refuse");
    let data = sample(&dir);
    let o = mpirun(3, &["train", "--config", "tiny", "--data", &data, "--tp", "3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("parallel.tp = 3 does not divide model.num_heads = 4"), "{err}");
    let o = mpirun(2, &["train", "--config", "tiny", "--data", &data, "--pp", "2", "--set", "model.num_layers=1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 layers cannot fill pp x vpp = 2 x 1"), "{err}");
    let o = mpirun(3, &["train", "--config", "tiny", "--data", &data, "--tp", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("world size 3 is not divisible by tp x pp = 2 x 1"), "{err}");
}

#[test]
fn a_failure_on_one_rank_ends_the_job_with_its_message() {
    let dir = tmpdir("fail");
    let data = sample(&dir);
    let missing = dir.join("only-rank-1-lacks-this");
    let start = Instant::now();
    // MPMD launch: rank 0 gets good data, rank 1 a missing shard.
    let o = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "1", env!("CARGO_BIN_EXE_swallow"), "train", "--data", &data])
        .args([":", "-np", "1", env!("CARGO_BIN_EXE_swallow"), "train", "--data", missing.to_str().unwrap()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(start.elapsed() < Duration::from_secs(60), "the job took {:?} to end", start.elapsed());
    assert!(err.contains("rank 1 of 2") && err.contains("only-rank-1-lacks-this"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
