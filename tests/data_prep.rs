//! `swallow prep` as users run it: the output is byte-identical for every worker count and every
//! rank count under real mpirun (the single-process, single-thread run is the reference); a bad
//! line on any rank fails the job with its file:line and leaves no output or parts behind; and the
//! shards it writes are the ones megatron-core's IndexedDataset reads (expected results committed by
//! tests/fixtures/make_prep_megatron_expected.py, so no torch is needed here).

mod common;
use common::{mpirun, repo, tmpdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn swallow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swallow")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sample corpus as several inputs of every kind: JSONL (split between ranks by bytes),
/// gzip'd JSONL and a .txt file (each read whole by one rank).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    use std::io::Write;
    let ja = repo().join("data/sample/ja.jsonl");
    let en = repo().join("data/sample/en.jsonl");
    let gz = dir.join("en.jsonl.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&std::fs::read(&en).unwrap()).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    let txt = dir.join("notes.txt");
    std::fs::write(&txt, "First paragraph,\ntwo lines.\n\n\nSecond: 日本語の段落。\n\nThird.\n").unwrap();
    vec![ja, gz, txt, en]
}

fn tokenizer() -> &'static str {
    static TOK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOK.get_or_init(|| repo().join("data/sample/tokenizer.json").to_str().unwrap().to_string())
}

fn prep_args<'a>(inputs: &'a [PathBuf], out: &'a Path, workers: &'a str) -> Vec<&'a str> {
    let mut a = vec!["prep", "--tokenizer", tokenizer(), "--input"];
    a.extend(inputs.iter().map(|p| s(p)));
    a.extend(["--output", s(out), "--append-eod", "--workers", workers]);
    a
}

fn files(prefix: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(prefix.with_extension("bin")).unwrap(),
        std::fs::read(prefix.with_extension("idx")).unwrap(),
    )
}

fn leftovers(dir: &Path, stem: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(stem))
        .collect()
}

#[test]
fn output_is_byte_identical_for_any_workers_and_ranks() {
    let dir = tmpdir("prep", "identical");
    let inputs = inputs(&dir);
    let reference = dir.join("ref");
    let o = swallow(&prep_args(&inputs, &reference, "1"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(summary.starts_with("prep: ") && summary.contains("tokens/s"), "{summary}");
    // Not a terminal: no progress bar, only the summary line.
    assert!(!String::from_utf8_lossy(&o.stderr).contains('\r'));
    let want = files(&reference);
    assert!(want.0.len() > 100_000);
    for (np, workers) in [(1, "3"), (1, "2"), (2, "1"), (2, "2"), (3, "1"), (3, "2")] {
        let out = dir.join(format!("np{np}w{workers}"));
        let args = prep_args(&inputs, &out, workers);
        let o = if np == 1 { swallow(&args) } else { mpirun(np, &args) };
        assert!(o.status.success(), "np {np}: {}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(stdout.lines().filter(|l| l.starts_with("prep: ")).count(), 1, "{stdout}");
        // Same counts in the summary (documents, tokens, bytes of text) as the reference.
        let head = |t: &str| t.split(" in ").next().unwrap().to_string();
        assert_eq!(head(&stdout), head(&summary), "np {np} workers {workers}");
        assert!(files(&out) == want, "np {np} workers {workers}: output differs from the single-process run");
        let stem = out.file_name().unwrap().to_str().unwrap();
        let mut left = leftovers(&dir, stem);
        left.sort();
        assert_eq!(left, [format!("{stem}.bin"), format!("{stem}.idx")], "parts or temp files left");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_line_on_one_rank_fails_the_job_and_leaves_nothing() {
    let dir = tmpdir("prep", "badrank");
    // The bad line sits near the end, in the last rank's piece.
    let good = std::fs::read_to_string(repo().join("data/sample/en.jsonl")).unwrap();
    let bad = dir.join("bad.jsonl");
    let lines = good.lines().count();
    std::fs::write(&bad, format!("{good}{{\"text\": \"ok\"}}\n{{\"text\": broken}}\n")).unwrap();
    let out = dir.join("out");
    let inputs = vec![bad.clone()];
    let o = mpirun(3, &prep_args(&inputs, &out, "1"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("bad.jsonl:{}: not a JSON object", lines + 2)), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(leftovers(&dir, "out").is_empty(), "left behind: {:?}", leftovers(&dir, "out"));
    // With --skip-bad-lines the line is skipped and counted, the same for 1 and 3 ranks.
    let mut args = prep_args(&inputs, &out, "1");
    args.push("--skip-bad-lines");
    let one = swallow(&args);
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    assert!(String::from_utf8_lossy(&one.stdout).contains("; 1 bad lines skipped"));
    let want = files(&out);
    let three = mpirun(3, &args);
    assert!(three.status.success(), "{}", String::from_utf8_lossy(&three.stderr));
    assert!(String::from_utf8_lossy(&three.stdout).contains("; 1 bad lines skipped"));
    assert!(files(&out) == want);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fnv1a64(ids: &[u32]) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in ids.iter().flat_map(|t| t.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    format!("{h:016x}")
}

#[test]
fn prep_shards_are_what_megatron_reads() {
    use swallow::data::indexed::IndexedDataset;
use swallow::data::token_dtype::TokenDtype;
    let fixtures = repo().join("tests/fixtures");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("prep_megatron_expected.json")).unwrap()).unwrap();
    let dir = tmpdir("prep", "megatron");
    let out = dir.join("prep");
    let inputs = vec![fixtures.join("prep_input.jsonl")];
    for workers in ["1", "2"] {
        let o = swallow(&prep_args(&inputs, &out, workers));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ds = IndexedDataset::open(&out).unwrap();
        assert_eq!(ds.dtype(), TokenDtype::U16);
        assert_eq!(want["dtype"], "uint16");
        let n = ds.num_sequences();
        let lens: Vec<u64> = (0..n).map(|i| ds.sequence_len(i) as u64).collect();
        let ptrs: Vec<u64> = (0..n).map(|i| ds.sequence_pointer(i)).collect();
        let docs: Vec<u64> = ds.document_boundaries().into_iter().map(|d| d as u64).collect();
        let as_u64 = |k: &str| -> Vec<u64> { want[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect() };
        assert_eq!(lens, as_u64("sequence_lengths"));
        assert_eq!(ptrs, as_u64("sequence_pointers"));
        assert_eq!(docs, as_u64("document_indices"));
        let expected = want["documents"].as_array().unwrap();
        assert_eq!(expected.len(), ds.num_documents());
        for (d, e) in expected.iter().enumerate() {
            let ids = ds.document(d).unwrap();
            assert_eq!(ids.len() as u64, e["length"].as_u64().unwrap(), "document {d}");
            assert_eq!(fnv1a64(&ids), e["fnv1a64"].as_str().unwrap(), "document {d}");
            let head: Vec<u32> = e["head"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(ids[..head.len()], head[..], "document {d}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On a terminal (a pseudo-terminal from util-linux `script`) the progress bar is drawn on stderr
/// and erased before the summary line; without one there is no bar (checked above).
#[test]
fn progress_bar_only_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let dir = tmpdir("prep", "tty");
    let out = dir.join("o");
    let inputs = vec![repo().join("data/sample/en.jsonl")];
    let cmd: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_swallow").to_string())
        .chain(prep_args(&inputs, &out, "1").iter().map(|a| a.to_string()))
        .collect();
    let o = Command::new("script").args(["-qec", &cmd.join(" "), "/dev/null"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("\r\x1b[Kprep: 100% "), "{shown:?}");
    assert!(shown.contains("prep: 156 documents"), "{shown:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The real tokenizer kinds (fixtures built as Llama 2 and Llama 3 ship theirs) on real Japanese
/// and English text: the fast encoder is named, the EOD is the eos_token of tokenizer_config.json
/// (Llama 3's `<|end_of_text|>`, which no fixed list had), every document is BOS + the
/// `tokenizers` ids + EOD as fixtures/tokenizers/*/expected_ids.jsonl records them, and the
/// output is byte-identical for 1 and 2 workers and 2 ranks. `--eod-token` overrides; an unknown
/// one is an error naming it.
#[test]
fn real_tokenizer_kinds_prep_exactly_with_their_eos() {
    let dir = tmpdir("prep", "real-kinds");
    let text = repo().join("tests/fixtures/tokenizers/text");
    let inputs = [text.join("ja.jsonl"), text.join("en.jsonl")];
    for (kind, encoder, eod) in [
        ("llama2", "encoder sentencepiece-bpe, fast", "EOD 2 (eos_token \"</s>\""),
        ("llama3", "encoder byte-level-bpe, fast (Llama 3 split regex", "EOD 16001 (eos_token \"<|end_of_text|>\""),
    ] {
        let tok = repo().join("tests/fixtures/tokenizers").join(kind).join("tokenizer.json");
        let run = |out: &Path, workers: &str, np: usize, extra: &[&str]| {
            let mut a = vec!["prep", "--tokenizer", s(&tok), "--input", s(&inputs[0]), s(&inputs[1])];
            a.extend(["--output", s(out), "--append-eod", "--workers", workers]);
            a.extend(extra);
            if np == 1 { swallow(&a) } else { mpirun(np, &a) }
        };
        let reference = dir.join(format!("{kind}-ref"));
        let o = run(&reference, "1", 1, &[]);
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{kind}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout.contains(encoder) && stdout.contains(eod), "{kind}: {stdout}");
        let expected = std::fs::read_to_string(tok.with_file_name("expected_ids.jsonl")).unwrap();
        let want: Vec<Vec<u32>> = expected
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["set"] != "edge")
            .map(|v| v["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect())
            .collect();
        let ds = swallow::data::indexed::IndexedDataset::open(&reference).unwrap();
        assert_eq!(ds.num_documents(), want.len(), "{kind}");
        let eod_id: u32 = if kind == "llama2" { 2 } else { 16001 };
        for (d, w) in want.iter().enumerate() {
            let mut w = w.clone();
            w.push(eod_id);
            assert_eq!(ds.document(d).unwrap(), w, "{kind} document {d}");
        }
        let ref_files = files(&reference);
        for (workers, np) in [("2", 1), ("1", 2)] {
            let out = dir.join(format!("{kind}-w{workers}-np{np}"));
            let o = run(&out, workers, np, &[]);
            assert!(o.status.success(), "{kind} np {np}: {}", String::from_utf8_lossy(&o.stderr));
            assert!(files(&out) == ref_files, "{kind}: workers {workers}, {np} ranks differ");
        }
        let over = dir.join(format!("{kind}-bos-as-eod"));
        let bos = if kind == "llama2" { "<s>" } else { "<|begin_of_text|>" };
        let o = run(&over, "1", 1, &["--eod-token", bos]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--eod-token"), "{kind}");
        let ds = swallow::data::indexed::IndexedDataset::open(&over).unwrap();
        assert_eq!(ds.document(0).unwrap().last(), ds.document(0).unwrap().first(), "{kind}: EOD = BOS");
        let o = run(&dir.join("none"), "1", 1, &["--eod-token", "<nope>"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("--eod-token \"<nope>\" is not a token of") && !err.contains("panicked"), "{err}");
    }
}
