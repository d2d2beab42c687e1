//! The `swallow` binary end to end, as a user runs it: prep the bundled sample corpus, inspect it,
//! train the tiny preset (alone and under `mpirun -np 1`) and see the loss fall, and the clear
//! one-line errors (exit code != 0, no panic, nothing already written lost) for bad input.

mod common;

use common::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_swallow")
}

fn tmpdir(name: &str) -> PathBuf {
    common::tmpdir("cli", name)
}

fn swallow(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run swallow")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A clean failure: exit code 1, a one-line `error:` naming `needle`, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("error:") && err.contains(needle), "stderr should name {needle:?}:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic:\n{err}");
}

/// The sample corpus prepared once for all tests of this file.
fn sample_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let dir = tmpdir("sample");
        let prefix = dir.join("sample");
        let o = swallow(&[
            "prep",
            "--tokenizer",
            repo().join("data/sample/tokenizer.json").to_str().unwrap(),
            "--input",
            repo().join("data/sample/ja.jsonl").to_str().unwrap(),
            repo().join("data/sample/en.jsonl").to_str().unwrap(),
            "--output",
            prefix.to_str().unwrap(),
            "--append-eod",
        ]);
        assert!(o.status.success(), "{:?}", text(&o));
        prefix.to_str().unwrap().to_string()
    })
}

fn losses(metrics: &Path) -> Vec<f64> {
    common::metrics(metrics)
        .iter()
        .map(|v| {
            for key in ["step", "lr", "grad_norm", "tokens_per_s", "tflops", "mfu", "skipped"] {
                assert!(v.get(key).is_some(), "metrics line lacks {key}: {v}");
            }
            v["loss"].as_f64().unwrap()
        })
        .collect()
}

#[test]
fn inspect_reports_the_prepared_sample_as_json() {
    let o = swallow(&["data", "inspect", sample_prefix(), "--vocab-size", "4096"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(last["documents"].as_u64().unwrap() > 100, "{last}");
    assert!(last["tokens"].as_u64().unwrap() > 20_000, "{last}");
    assert_eq!(last["dtype"], "u16");
    assert!(last["max_id"].as_u64().unwrap() < 4096);
}

#[test]
fn the_tiny_preset_learns_the_sample_corpus() {
    let dir = tmpdir("learn");
    let metrics = dir.join("m.jsonl");
    let o = swallow(&[
        "train", "--config", "tiny", "--data", sample_prefix(), "--steps", "40",
        "--metrics", metrics.to_str().unwrap(), "--set", "train.warmup_steps=5",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("step     40/40"), "{out}");
    let l = losses(&metrics);
    assert_eq!(l.len(), 40);
    let first = l[0];
    let last5 = l[35..].iter().sum::<f64>() / 5.0;
    // Starts near ln(4096) = 8.32 (uniform) and must have learned a good part of the way.
    assert!((first - 4096f64.ln()).abs() < 0.5, "first loss {first}");
    assert!(last5 < first - 1.5, "loss did not fall enough: first {first}, last five {last5}");
}

#[test]
fn training_is_deterministic_and_runs_under_mpirun() {
    let dir = tmpdir("mpirun");
    let run = |m: &Path, under_mpirun: bool| {
        let args = [
            "train", "--config", "tiny", "--data", sample_prefix(), "--steps", "3", "--metrics", m.to_str().unwrap(),
        ];
        let o = if under_mpirun {
            Command::new("mpirun")
                .args(["-np", "1", bin()])
                .args(args)
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .output()
                .expect("mpirun (OpenMPI) must be installed: make setup")
        } else {
            swallow(&args)
        };
        assert!(o.status.success(), "{:?}", text(&o));
        losses(m)
    };
    let a = run(&dir.join("a.jsonl"), false);
    let b = run(&dir.join("b.jsonl"), true);
    assert_eq!(a, b, "the same seed and data must give bitwise the same losses");
}

#[test]
fn missing_and_truncated_shards_are_named() {
    let dir = tmpdir("trunc");
    let missing = dir.join("nothing");
    assert_clean_error(&swallow(&["train", "--data", missing.to_str().unwrap(), "--steps", "1"]), "nothing");
    for ext in ["bin", "idx"] {
        std::fs::copy(format!("{}.bin", sample_prefix()), dir.join("t.bin")).unwrap();
        std::fs::copy(format!("{}.idx", sample_prefix()), dir.join("t.idx")).unwrap();
        let f = dir.join(format!("t.{ext}"));
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 2).unwrap();
        let o = swallow(&["train", "--data", dir.join("t").to_str().unwrap(), "--steps", "1"]);
        assert_clean_error(&o, &format!("t.{ext}"));
        assert!(text(&o).1.contains("truncated"), "{}", text(&o).1);
    }
}

#[test]
fn token_ids_beyond_the_vocabulary_are_refused() {
    let o = swallow(&["train", "--data", sample_prefix(), "--steps", "1", "--set", "model.vocab_size=300"]);
    assert_clean_error(&o, "300");
}

#[test]
fn impossible_configs_are_refused_with_the_numbers() {
    let o = swallow(&["train", "--data", sample_prefix(), "--set", "model.num_kv_heads=3"]);
    assert_clean_error(&o, "num_kv_heads = 3");
    let o = swallow(&["train", "--data", sample_prefix(), "--set", "model.hidden_sise=3"]);
    assert_clean_error(&o, "hidden_sise");
    let o = swallow(&["train", "--config", "no/such/config.toml"]);
    assert_clean_error(&o, "no/such/config.toml");
}

/// Field-test findings (issue 20, item 14): a sequence longer than the model's positions, a model
/// too large for the machine (an allocation failure with a backtrace, exit 134, before), and a prep
/// input without a single document (exit 0 and an empty shard, before) are clean errors; the
/// empty prep leaves an existing shard of that name as it was.
#[test]
fn absurd_sizes_and_empty_inputs_are_clean_errors() {
    let o = swallow(&["train", "--config", "tiny", "--data", sample_prefix(), "--seq-len", "1024"]);
    assert_clean_error(&o, "train.seq_len = 1024 (--seq-len) is longer than model.max_position_embeddings = 512");
    let huge = ["--set", "model.hidden_size=65536", "--set", "model.ffn_hidden_size=200000", "--set", "model.num_layers=64"];
    let o = swallow(&[&["train", "--config", "tiny", "--data", sample_prefix(), "--steps", "1"][..], &huge[..]].concat());
    assert_clean_error(&o, "GiB available");
    let dir = tmpdir("empty-prep");
    std::fs::write(dir.join("keep.bin"), b"old bin").unwrap();
    std::fs::write(dir.join("keep.idx"), b"old idx").unwrap();
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let other_field = dir.join("other.jsonl");
    std::fs::write(&other_field, "{\"body\": \"text under another key\"}\n").unwrap();
    for input in [&empty, &other_field] {
        let o = swallow(&[
            "prep", "--tokenizer", repo().join("data/sample/tokenizer.json").to_str().unwrap(),
            "--input", input.to_str().unwrap(), "--output", dir.join("keep").to_str().unwrap(), "--skip-bad-lines",
        ]);
        assert_clean_error(&o, "no documents in");
        assert_eq!(std::fs::read(dir.join("keep.bin")).unwrap(), b"old bin");
        assert_eq!(std::fs::read(dir.join("keep.idx")).unwrap(), b"old idx");
    }
}

#[test]
fn unwritable_outputs_fail_cleanly_and_keep_what_exists() {
    let dir = tmpdir("unwritable");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let o = swallow(&[
        "train", "--data", sample_prefix(), "--steps", "1",
        "--metrics", blocker.join("m.jsonl").to_str().unwrap(),
    ]);
    assert_clean_error(&o, "a-file");
    let o = swallow(&[
        "prep", "--tokenizer", repo().join("data/sample/tokenizer.json").to_str().unwrap(),
        "--input", repo().join("data/sample/en.jsonl").to_str().unwrap(),
        "--output", blocker.join("x").to_str().unwrap(),
    ]);
    assert_clean_error(&o, "a-file");

    // A failing prep does not touch an existing shard of the same name.
    let prefix = dir.join("keep");
    std::fs::write(dir.join("keep.bin"), b"old bin").unwrap();
    std::fs::write(dir.join("keep.idx"), b"old idx").unwrap();
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\nthis is not json\n").unwrap();
    let o = swallow(&[
        "prep", "--tokenizer", repo().join("data/sample/tokenizer.json").to_str().unwrap(),
        "--input", bad.to_str().unwrap(), "--output", prefix.to_str().unwrap(),
    ]);
    assert_clean_error(&o, "bad.jsonl:2");
    assert_eq!(std::fs::read(dir.join("keep.bin")).unwrap(), b"old bin");
    assert_eq!(std::fs::read(dir.join("keep.idx")).unwrap(), b"old idx");
}

/// Every token id is checked against the vocabulary before step 1 and in `--dry-run` (issue 20,
/// item 13): one id past the vocabulary in the very last token of the last document fails both,
/// naming the shard, the document and the id, on one rank and (one error line) on two; a shard's
/// largest id is cached by file identity, so the next run does not scan it again.
#[test]
fn an_out_of_vocabulary_id_anywhere_fails_before_step_one_and_in_the_dry_run() {
    let dir = tmpdir("oov");
    let cache = dir.join("cache");
    let prefix = dir.join("shard");
    for ext in [".bin", ".idx"] {
        std::fs::copy(format!("{}{ext}", sample_prefix()), format!("{}{ext}", prefix.display())).unwrap();
    }
    let p = prefix.to_str().unwrap();
    let run = |np: usize, extra: &[&str]| {
        common::mpirun_command(np, &["train", "--config", "tiny", "--data", p, "--micro-batch", "2", "--steps", "1"])
            .args(extra)
            .env("SWALLOW_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let (out, err) = text(&run(2, &["--dry-run"]));
    assert!(out.contains("token ids of 1 shard(s) checked") && out.contains("1 scanned"), "{out}\n{err}");
    let (out, _) = text(&run(1, &["--dry-run"]));
    assert!(out.contains("0 scanned") && out.contains("1 from the cache"), "{out}");
    // The last token of the .bin (u16) becomes 4096, the tiny model's vocabulary size.
    let bin = dir.join("shard.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let n = bytes.len();
    bytes[n - 2..].copy_from_slice(&4096u16.to_le_bytes());
    std::fs::write(&bin, &bytes).unwrap();
    let docs = swallow(&["data", "inspect", p]);
    let last_doc = serde_json::from_str::<serde_json::Value>(text(&docs).0.lines().last().unwrap()).unwrap()["documents"].as_u64().unwrap() - 1;
    for (np, extra) in [(1, &["--dry-run"][..]), (2, &[][..]), (2, &["--dry-run"][..])] {
        let o = run(np, extra);
        let (out, err) = text(&o);
        assert!(!o.status.success() && !out.contains("step      1"), "{out}\n{err}");
        let errors = common::error_lines(&err);
        assert_eq!(errors.len(), 1, "one error line expected:\n{err}");
        let want = format!("token id 4096 in document {last_doc} ");
        assert!(errors[0].contains("shard.bin") && errors[0].contains(&want) && errors[0].contains("vocabulary of size 4096"), "{err}");
    }
}

/// `--dry-run` checks what the real run will need (issue 20, item 3): the checkpoint --load names
/// (a missing one, a different model), a --save directory that cannot be made, each one line of
/// one error; and it says how many epochs of the data the run reads. It creates nothing.
#[test]
fn dry_run_checks_the_load_the_save_directory_and_the_epochs() {
    let dir = tmpdir("dry-run-needs");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let (missing, unmakeable) = (dir.join("missing.h5"), blocker.join("ck"));
    let o = swallow(&[
        "train", "--config", "tiny", "--data", sample_prefix(), "--dry-run",
        "--load", missing.to_str().unwrap(), "--save", unmakeable.to_str().unwrap(),
    ]);
    assert_clean_error(&o, "the dry run found 2 problem(s)");
    let (_, err) = text(&o);
    assert!(err.contains("--load") && err.contains("missing.h5") && err.contains("--save") && err.contains("a-file is not a directory"), "{err}");
    let ckpt = dir.join("ck");
    let o = swallow(&["train", "--config", "tiny", "--data", sample_prefix(), "--micro-batch", "2", "--steps", "1", "--save", ckpt.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let new_save = dir.join("new/ck");
    let o = swallow(&[
        "train", "--config", "tiny", "--data", sample_prefix(), "--dry-run", "--steps", "40",
        "--load", ckpt.to_str().unwrap(), "--save", new_save.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("step-1.h5, a checkpoint of this model") && out.contains("is writable (the run makes it in"), "{out}");
    assert!(out.contains("the run reads 640 samples") && out.contains("documents repeat"), "{out}");
    assert!(!dir.join("new").exists(), "the dry run created the --save directory");
    let o = swallow(&["train", "--config", "tiny", "--data", sample_prefix(), "--dry-run", "--load", ckpt.to_str().unwrap(), "--set", "model.rope_theta=5000"]);
    assert_clean_error(&o, "model.rope_theta = 5000.0 here, 10000.0 in the checkpoint");
}

/// One voice under mpirun (issue 20, item 6): an error every rank meets before training is printed
/// once; the one-process commands run on rank 0 alone, the other ranks leave quietly.
#[test]
fn reports_are_printed_once_under_mpirun() {
    // An error every rank meets before training (no CUDA driver here) is one line, not one per rank.
    let o = common::mpirun(2, &["train", "--config", "tiny", "--data", sample_prefix(), "--device", "cuda"]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert_eq!(common::error_lines(&err).len(), 1, "{err}");
    // So is a bad setting, which every rank reads alike.
    let o = common::mpirun(2, &["train", "--config", "tiny", "--data", sample_prefix(), "--set", "train.tp=2"]);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("train.tp"), "{err}");
    assert_eq!(common::error_lines(&err).len(), 1, "{err}");
    for args in [&["plan", "--model", "tiny", "--gpus", "2"][..], &["data", "inspect", sample_prefix()][..]] {
        let o = common::mpirun(2, args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{args:?}: {err}");
        let json_lines = out.lines().filter(|l| l.starts_with('{')).count();
        assert_eq!(json_lines, 1, "{args:?} printed its JSON line {json_lines} times:\n{out}");
    }
}

/// `command` run under a pseudo-terminal (util-linux `script`): its output as the terminal got it.
fn on_a_terminal(command: &str, dir: &Path) -> String {
    let o = Command::new("script").args(["-qec", command, "/dev/null"]).current_dir(dir).output().expect("script (util-linux)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{command}:\n{out}");
    out
}

/// Import, export, checkpoint save and load draw their progress on a terminal and leave one
/// summary line in a log (issue 20, item 7).
#[test]
fn long_copies_show_progress_on_a_terminal_and_one_line_in_a_log() {
    let dir = tmpdir("progress");
    let hf = repo().join("tests/fixtures/llama2_gqa");
    let redrawn = "\r\x1b[K";
    let term = on_a_terminal(&format!("{} import --hf {} --out ck-term", bin(), hf.display()), &dir);
    assert!(term.contains(&format!("{redrawn}import: ")) && term.contains(" left"), "{term:?}");
    let o = Command::new(bin()).args(["import", "--hf", hf.to_str().unwrap(), "--out"]).arg(dir.join("ck-log")).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success() && !out.contains('\r') && !err.contains('\r'), "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("import: ")).count(), 1, "{out}");
    let term = on_a_terminal(&format!("{} export --load ck-term --out hf-out", bin()), &dir);
    assert!(term.contains(&format!("{redrawn}export: ")), "{term:?}");
    // Under mpirun a rank's stderr is a pipe: SWALLOW_PROGRESS=always draws there, rank 0 only.
    let save = dir.join("run");
    let train = |env: &str| {
        let mut c = common::mpirun_command(2, &["train", "--config", "tiny", "--data", sample_prefix(), "--steps", "2", "--tp", "2", "--load", "auto"]);
        c.arg("--save").arg(&save).env("SWALLOW_PROGRESS", env);
        text(&c.output().unwrap())
    };
    let (_, err) = train("never");
    assert!(!err.contains(redrawn), "{err}");
    std::fs::remove_dir_all(&save).unwrap();
    let (_, err) = train("always");
    assert!(err.contains(&format!("{redrawn}checkpoint save of step 2: ")), "{err:?}");
    let (out, err) = train("always");
    assert!(err.contains(&format!("{redrawn}checkpoint load: ")) && out.contains("checkpoint: resumed from"), "{out}{err:?}");
}

/// Every flag of every command says what it is for in --help (issue 20, item 7).
#[test]
fn every_flag_has_a_help_text() {
    let commands: [&[&str]; 14] = [
        &["corpus"], &["prep"], &["vocab"], &["data", "inspect"], &["data", "batches"], &["data", "merge"], &["train"], &["eval"],
        &["export"], &["import"], &["plan"], &["bench"], &["plot"], &["kernels", "compile"],
    ];
    let mut bare = Vec::new();
    for c in commands {
        let o = swallow(&[c, &["--help"][..]].concat());
        let (out, err) = text(&o);
        assert!(o.status.success(), "{c:?}: {err}");
        let lines: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("Options:")).collect();
        for (i, line) in lines.iter().enumerate() {
            let flag = line.trim_start();
            // "--name <NAME>  help", or the help on the next lines, indented further (clap's
            // layout when some flag is long), else the flag has none.
            let next_is_help = lines.get(i + 1).is_some_and(|n| {
                let t = n.trim_start();
                !t.is_empty() && !t.starts_with('-') && n.len() - t.len() > line.len() - flag.len()
            });
            if flag.starts_with('-') && !flag.contains("  ") && !next_is_help {
                bare.push(format!("{c:?} {flag}"));
            }
        }
    }
    assert!(bare.is_empty(), "flags without a help text:\n{}", bare.join("\n"));
}

#[test]
fn dry_run_checks_everything_and_trains_nothing() {
    let o = swallow(&["train", "--config", "tiny", "--data", sample_prefix(), "--dry-run"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("dry run") && !out.contains("step "), "{out}");
}
