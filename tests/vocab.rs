//! `swallow vocab` end to end with the real binary: a Llama-2-kind tokenizer (SentencePiece BPE with
//! byte fallback, both tokenizer.json forms) expanded with real Japanese text loads in `tokenizers`,
//! keeps every base id's token, has a size that is a multiple of 8, and cuts Japanese tokens per
//! character without costing English any; the output is byte-identical for 1 to 3 ranks under real
//! mpirun and for any thread count; bad input is a one-line error that leaves no output directory.

mod common;

use common::{mpirun, repo, tmpdir};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokenizers::Tokenizer;

fn swallow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swallow")).args(args).output().unwrap()
}

fn fixture(p: &str) -> PathBuf {
    repo().join("tests/fixtures/tokenizers").join(p)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The Japanese fixture cut into training inputs (JSONL, gzipped JSONL, plain text) and a held-out
/// JSONL file of the documents not trained on; returns (inputs, held-out).
fn japanese(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let text = std::fs::read_to_string(fixture("text/ja.jsonl")).unwrap();
    let docs: Vec<&str> = text.lines().collect();
    let (a, b, c, held) = (&docs[..15], &docs[15..25], &docs[25..38], &docs[38..]);
    std::fs::write(dir.join("a.jsonl"), a.join("\n") + "\n").unwrap();
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(dir.join("b.jsonl.gz")).unwrap(), flate2::Compression::fast());
    gz.write_all((b.join("\n") + "\n").as_bytes()).unwrap();
    gz.finish().unwrap();
    let paragraphs: Vec<String> = c.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().replace("\n\n", "\n")).collect();
    std::fs::write(dir.join("c.txt"), paragraphs.join("\n\n")).unwrap();
    std::fs::write(dir.join("held.jsonl"), held.join("\n") + "\n").unwrap();
    (vec![dir.join("a.jsonl"), dir.join("b.jsonl.gz"), dir.join("c.txt")], dir.join("held.jsonl"))
}

fn vocab_args<'a>(base: &'a Path, inputs: &'a [PathBuf], out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["vocab", "--base", s(base), "--input"];
    a.extend(inputs.iter().map(|p| s(p)));
    a.extend(["--output", s(out)]);
    a.extend(extra);
    a
}

/// The last stdout line of a successful run, parsed.
fn summary(o: &Output) -> Value {
    let out = common::succeeded(o, "swallow vocab");
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// The Llama-2-kind fixture without its Japanese tokens (ids renumbered, merges of dropped tokens
/// dropped): like Llama 2 itself, it spells most Japanese in byte tokens.
fn english_centric(dir: &Path) -> PathBuf {
    let base = fixture("llama2/tokenizer.json");
    let mut t: Value = serde_json::from_slice(&std::fs::read(&base).unwrap()).unwrap();
    let japanese = |s: &str| s.chars().any(|c| matches!(c as u32, 0x3000..=0x30FF | 0x3400..=0x9FFF | 0xFF00..=0xFFEF));
    let mut tokens: Vec<(String, u64)> =
        t["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    tokens.sort_by_key(|t| t.1);
    let kept: serde_json::Map<String, Value> =
        tokens.into_iter().filter(|(k, _)| !japanese(k)).enumerate().map(|(i, (k, _))| (k, i.into())).collect();
    let merges: Vec<Value> = t["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            let (l, r) = m.as_str().unwrap().split_once(' ').unwrap();
            [l, r, &format!("{l}{r}")].iter().all(|p| kept.contains_key(*p))
        })
        .cloned()
        .collect();
    t["model"]["vocab"] = kept.into();
    t["model"]["merges"] = merges.into();
    let d = dir.join("english-centric");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("tokenizer.json"), serde_json::to_string_pretty(&t).unwrap()).unwrap();
    d.join("tokenizer.json")
}

#[test]
fn japanese_text_takes_far_fewer_tokens_after_expansion() {
    let dir = tmpdir("vocab", "fewer");
    let (inputs, held) = japanese(&dir);
    let base = english_centric(&dir);
    let base_size = Tokenizer::from_file(&base).unwrap().get_vocab_size(true);
    let out = dir.join("out");
    let en = fixture("text/en.jsonl");
    let sum = summary(&swallow(&vocab_args(&base, &inputs, &out, &["--add", "2000", "--held-out", s(&held), s(&en)])));
    assert_eq!(sum["vocab_size"].as_u64().unwrap() as usize, (base_size + 2000).next_multiple_of(8));
    assert!(sum["new_chars"].as_u64().unwrap() > 500, "kana and kanji become tokens: {sum}");
    let [ja, en] = [&sum["held_out"][0], &sum["held_out"][1]];
    let ratio = |h: &Value| h["tokens_after"].as_f64().unwrap() / h["tokens_before"].as_f64().unwrap();
    assert!(ratio(ja) < 0.6, "Japanese held-out text should take far fewer tokens: {ja}");
    assert!(ratio(en) <= 1.0, "English must not take more tokens: {en}");
    // The new tokens are used, and decode back to the text.
    let new = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    for line in std::fs::read_to_string(&held).unwrap().lines() {
        let text = serde_json::from_str::<Value>(line).unwrap()["text"].as_str().unwrap().to_string();
        let ids = new.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert!(ids.iter().any(|&i| i as usize >= base_size), "new tokens are used");
        assert_eq!(new.decode(&ids, false).unwrap(), text);
    }
    // No tokenizer_config.json beside this base: a minimal one is written.
    let config: Value = serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(config["eos_token"], "</s>");
    assert!(!out.join("special_tokens_map.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn expands_a_llama2_kind_tokenizer() {
    let dir = tmpdir("vocab", "expand");
    let (inputs, held) = japanese(&dir);
    for kind in ["llama2", "llama2-metaspace"] {
        let base = fixture(&format!("{kind}/tokenizer.json"));
        let out = dir.join(kind);
        let en = fixture("text/en.jsonl");
        let o = swallow(&vocab_args(&base, &inputs, &out, &["--add", "1001", "--held-out", s(&held), s(&en)]));
        let sum = summary(&o);
        assert_eq!(sum["vocab_size"], 9008, "8000 + 1001 rounded up to a multiple of 8");
        assert_eq!(sum["new_pieces"].as_u64().unwrap() + sum["new_chars"].as_u64().unwrap(), 1008);
        let (old, new) = (Tokenizer::from_file(&base).unwrap(), Tokenizer::from_file(out.join("tokenizer.json")).unwrap());
        assert_eq!(new.get_vocab_size(true), 9008);
        for id in 0..9008 {
            let tok = new.id_to_token(id).unwrap_or_else(|| panic!("{kind}: id {id} has no token"));
            if id < 8000 {
                assert_eq!(Some(tok), old.id_to_token(id), "{kind}: base id {id}");
            }
        }
        for f in ["tokenizer_config.json", "special_tokens_map.json"] {
            assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(base.with_file_name(f)).unwrap(), "{kind}: {f}");
        }
        let [ja, en] = [&sum["held_out"][0], &sum["held_out"][1]];
        let per_char = |h: &Value, k: &str| h[k].as_f64().unwrap() / h["chars"].as_f64().unwrap();
        // This base was trained on the same Japanese text: the new pieces help it a little.
        assert!(per_char(ja, "tokens_after") < per_char(ja, "tokens_before"), "{kind}: Japanese {ja}");
        assert!(en["tokens_after"].as_u64() <= en["tokens_before"].as_u64(), "{kind}: English {en}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_is_identical_for_any_rank_and_thread_count() {
    let dir = tmpdir("vocab", "ranks");
    let (inputs, _) = japanese(&dir);
    let base = fixture("llama2/tokenizer.json");
    let reference = dir.join("one");
    summary(&swallow(&vocab_args(&base, &inputs, &reference, &["--add", "600", "--workers", "1"])));
    let want = std::fs::read(reference.join("tokenizer.json")).unwrap();
    for (np, workers) in [(1, "2"), (2, "1"), (3, "2")] {
        let out = dir.join(format!("np{np}"));
        let args = vocab_args(&base, &inputs, &out, &["--add", "600", "--workers", workers]);
        let sum = summary(&if np == 1 { swallow(&args) } else { mpirun(np, &args) });
        assert_eq!(sum["ranks"], np);
        assert!(std::fs::read(out.join("tokenizer.json")).unwrap() == want, "{np} ranks, {workers} workers");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A clean failure: exit code != 0, `error:` naming `needle`, no panic, no output directory.
fn assert_fails(o: &Output, needle: &str, out: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail with {needle:?}");
    assert!(err.contains("error") && err.contains(needle), "stderr should name {needle:?}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{needle}: {} was left behind", out.display());
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_no_output() {
    let dir = tmpdir("vocab", "bad");
    let (inputs, _) = japanese(&dir);
    let out = dir.join("out");
    let llama2 = fixture("llama2/tokenizer.json");
    let run = |base: &Path, inputs: &[PathBuf], extra: &[&str]| swallow(&vocab_args(base, inputs, &out, extra));

    let corrupt = dir.join("corrupt.json");
    std::fs::write(&corrupt, "{\"model\": {\"type\": \"BPE\", ").unwrap();
    assert_fails(&run(&corrupt, &inputs, &["--add", "8"]), "corrupt.json: not valid JSON", &out);
    assert_fails(&run(&fixture("llama3/tokenizer.json"), &inputs, &["--add", "8"]), "byte-level BPE tokenizer (Llama 3 kind", &out);
    let mut wordlevel: Value = serde_json::from_slice(&std::fs::read(&llama2).unwrap()).unwrap();
    wordlevel["model"]["type"] = "WordLevel".into();
    let wordlevel_path = dir.join("wordlevel.json");
    std::fs::write(&wordlevel_path, wordlevel.to_string()).unwrap();
    assert_fails(&run(&wordlevel_path, &inputs, &["--add", "8"]), "model type \"WordLevel\"", &out);
    // A SentencePiece model whose Metaspace splits at every "▁" is not the text the trainer learns for.
    let mut splitting: Value = serde_json::from_slice(&std::fs::read(fixture("llama2-metaspace/tokenizer.json")).unwrap()).unwrap();
    splitting["pre_tokenizer"]["split"] = true.into();
    let splitting_path = dir.join("splitting.json");
    std::fs::write(&splitting_path, splitting.to_string()).unwrap();
    assert_fails(&run(&splitting_path, &inputs, &["--add", "8"]), "is not SentencePiece's", &out);
    assert_fails(&run(&llama2, &inputs, &["--add", "0"]), "--add 0", &out);
    assert_fails(&run(&llama2, &inputs, &["--target-size", "7999"]), "--target-size 7999 is not larger than the base's 8000", &out);
    assert_fails(&run(&llama2, &[fixture("text/en.jsonl")], &["--add", "8"]), "no Japanese text", &out);
    assert_fails(&run(&llama2, &[dir.join("missing.jsonl")], &["--add", "8"]), "missing.jsonl does not exist", &out);
    assert_fails(&run(&llama2, &inputs, &["--add", "8", "--held-out", s(&dir.join("gone.txt"))]), "gone.txt does not exist", &out);
    assert_fails(&run(&llama2, &inputs, &["--add", "100000"]), "yields only", &out);
    let bad_line = dir.join("bad.jsonl");
    std::fs::write(&bad_line, "{\"text\": \"日本語\"}\n{\"body\": 1}\n").unwrap();
    assert_fails(&run(&llama2, &[bad_line], &["--add", "8"]), "bad.jsonl:2: no field \"text\"", &out);

    // A base that already has every piece the input can give.
    let line = dir.join("tiny.txt");
    std::fs::write(&line, "あいあい あいあい\n").unwrap();
    let mut full: Value = serde_json::from_slice(&std::fs::read(&llama2).unwrap()).unwrap();
    let word: Vec<char> = "▁あいあい".chars().collect();
    let vocab = full["model"]["vocab"].as_object_mut().unwrap();
    for i in 0..word.len() {
        for j in i + 1..=word.len() {
            let piece: String = word[i..j].iter().collect();
            let id = vocab.len();
            vocab.entry(piece).or_insert(id.into());
        }
    }
    let full_path = dir.join("full.json");
    std::fs::write(&full_path, full.to_string()).unwrap();
    assert_fails(&run(&full_path, &[line], &["--add", "8"]), "already has every piece learned from the input", &out);

    // Under mpirun, a failing job also exits != 0 and writes nothing.
    let en = [fixture("text/en.jsonl"), fixture("text/en.jsonl")];
    assert_fails(&mpirun(2, &vocab_args(&llama2, &en, &out, &["--add", "8"])), "no Japanese text", &out);
    std::fs::remove_dir_all(&dir).unwrap();
}
