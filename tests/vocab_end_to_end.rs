//! Swallow's recipe end to end, on a real Llama-2-kind tokenizer (SentencePiece BPE with byte
//! fallback, trained on English text only and converted as Llama 2's was, by
//! tests/fixtures/make_tokenizers.py) and real Japanese text (Debian's documentation): a base Hugging Face Llama with that tokenizer (trained a few steps by swallow
//! and exported) -> `swallow vocab` (Japanese pieces appended) -> `swallow import --tokenizer`
//! (new rows = mean of the old pieces' rows) -> prep with the new tokenizer -> train a few steps
//! from the import -> `swallow export --tokenizer`. Checked: Japanese text takes fewer tokens and
//! English no more; every base id keeps its token; the import keeps the old rows; the export gives
//! `eval --load`'s loss under `eval --hf`; and where a Python with torch and transformers is found
//! ($SWALLOW_PYTHON, else python3), transformers loads the export and its tokenizer and gives the
//! same loss and the same ids.

mod common;

use common::{repo, succeeded, tmpdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn swallow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swallow")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn last_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// A Python that imports torch and transformers, if there is one.
fn python_with_transformers() -> Option<String> {
    let py = std::env::var("SWALLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py).args(["-c", "import torch, transformers"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

fn config(dir: &Path, name: &str, vocab: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "[model]\nhidden_size = 64\nnum_layers = 2\nnum_heads = 4\nnum_kv_heads = 2\nffn_hidden_size = 160\n\
             vocab_size = {vocab}\nmax_position_embeddings = 64\nrope_theta = 10000.0\nnorm_eps = 1e-5\n\
             [train]\nseq_len = 32\nmicro_batch = 4\nglobal_batch = 8\nlr = 1e-3\nmin_lr = 1e-4\nwarmup_steps = 1\n"
        ),
    )
    .unwrap();
    p
}

fn eval_loss(model: &[&str], data: &str) -> f64 {
    let mut args = vec!["eval"];
    args.extend(model);
    args.extend(["--data", data, "--seq-len", "32", "--batches", "4"]);
    last_json(&succeeded(&swallow(&args), &format!("eval {model:?}")))["loss"].as_f64().unwrap()
}

#[test]
fn vocab_import_train_export_round_trip() {
    let dir = tmpdir("vocab-e2e", "recipe");
    let text = repo().join("tests/fixtures/tokenizers/text");
    let (ja, en) = (text.join("ja.jsonl"), text.join("en.jsonl"));
    // English-centric, as Llama 2's is: SentencePiece BPE trained on the English text only.
    let base_tok = repo().join("tests/fixtures/tokenizers/english-base/llama2");

    // The base model: a few steps on the base tokenizer's shards, exported with its tokenizer.
    let base_data = dir.join("base_text_document");
    succeeded(&swallow(&["prep", "--tokenizer", s(&base_tok.join("tokenizer.json")), "--input", s(&ja), s(&en), "--output", s(&base_data), "--append-eod"]), "prep base");
    let ck0 = dir.join("ck0");
    succeeded(&swallow(&["train", "--config", s(&config(&dir, "base.toml", 4000)), "--data", s(&base_data), "--steps", "2", "--save", s(&ck0)]), "train base");
    let hf0 = dir.join("hf0");
    succeeded(&swallow(&["export", "--load", s(&ck0), "--out", s(&hf0), "--dtype", "fp32", "--tokenizer", s(&base_tok)]), "export base");

    // Swallow's expansion, learned on two thirds of the Japanese documents; the rest held out.
    let docs: Vec<String> = std::fs::read_to_string(&ja).unwrap().lines().map(str::to_string).collect();
    let cut = docs.len() * 2 / 3;
    let (learn, held_ja, held_en) = (dir.join("learn.jsonl"), dir.join("held_ja.jsonl"), en.clone());
    std::fs::write(&learn, docs[..cut].join("\n")).unwrap();
    std::fs::write(&held_ja, docs[cut..].join("\n")).unwrap();
    let tok1 = dir.join("tok1");
    let out = succeeded(
        &swallow(&["vocab", "--base", s(&hf0.join("tokenizer.json")), "--input", s(&learn), "--add", "1000", "--output", s(&tok1),
                   "--held-out", s(&held_ja), s(&held_en)]),
        "vocab",
    );
    let report = last_json(&out);
    let size = report["vocab_size"].as_u64().expect("vocab_size in the last line") as usize;
    assert!(size >= 5000 && size.is_multiple_of(8), "{out}");
    let base = tokenizers::Tokenizer::from_file(hf0.join("tokenizer.json")).unwrap();
    let grown = tokenizers::Tokenizer::from_file(tok1.join("tokenizer.json")).unwrap();
    assert_eq!(grown.get_vocab_size(true), size);
    for (token, id) in base.get_vocab(true) {
        assert_eq!(grown.id_to_token(id).as_deref(), Some(token.as_str()), "base id {id} keeps its token");
    }
    let per_char = |t: &tokenizers::Tokenizer, f: &Path| {
        let (mut tokens, mut chars) = (0usize, 0usize);
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let doc = v["text"].as_str().unwrap();
            tokens += t.encode(doc, false).unwrap().len();
            chars += doc.chars().count();
        }
        tokens as f64 / chars as f64
    };
    let (ja_before, ja_after) = (per_char(&base, &held_ja), per_char(&grown, &held_ja));
    let (en_before, en_after) = (per_char(&base, &held_en), per_char(&grown, &held_en));
    assert!(ja_after < 0.5 * ja_before, "Japanese tokens/char {ja_before:.4} -> {ja_after:.4}");
    assert!(en_after <= en_before, "English tokens/char {en_before:.4} -> {en_after:.4}");

    // Import with the grown vocabulary, train from it on shards of the new tokenizer, export.
    let ck1 = dir.join("ck1");
    succeeded(&swallow(&["import", "--hf", s(&hf0), "--out", s(&ck1), "--tokenizer", s(&tok1.join("tokenizer.json"))]), "import");
    let data1 = dir.join("grown_text_document");
    succeeded(&swallow(&["prep", "--tokenizer", s(&tok1.join("tokenizer.json")), "--input", s(&ja), s(&en), "--output", s(&data1), "--append-eod"]), "prep grown");
    let grown_cfg = config(&dir, "grown.toml", size);
    let out = succeeded(&swallow(&["train", "--config", s(&grown_cfg), "--data", s(&data1), "--steps", "3", "--save", s(&ck1), "--load", "auto"]), "train grown");
    assert!(out.contains("resumed from") && out.contains("step-0.h5"), "{out}");
    let hf1 = dir.join("hf1");
    succeeded(&swallow(&["export", "--load", s(&ck1), "--out", s(&hf1), "--dtype", "fp32", "--tokenizer", s(&tok1)]), "export grown");
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
        assert!(hf1.join(f).exists(), "{f}");
    }
    let hf_config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf1.join("config.json")).unwrap()).unwrap();
    assert_eq!(hf_config["vocab_size"].as_u64(), Some(size as u64));
    let reference = eval_loss(&["--load", s(&ck1)], s(&data1));
    assert_eq!(eval_loss(&["--hf", s(&hf1)], s(&data1)), reference, "eval --hf of the export");

    let Some(py) = python_with_transformers() else {
        eprintln!("note: no Python with torch and transformers (set SWALLOW_PYTHON); skipped loading the export with transformers");
        return;
    };
    let o = Command::new(&py).arg(repo().join("scripts/check_hf_export.py")).args([s(&hf1), s(&data1), "32", "4"]).output().unwrap();
    let theirs = last_json(&succeeded(&o, "check_hf_export.py"))["loss"].as_f64().unwrap();
    assert!(((theirs - reference) / reference).abs() < 1e-5, "transformers {theirs} vs swallow {reference}");
    // transformers' AutoTokenizer on the export gives the ids the shards hold.
    let doc = std::fs::read_to_string(&ja).unwrap().lines().next().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()).unwrap();
    let script = "import json, sys\nfrom transformers import AutoTokenizer\nt = AutoTokenizer.from_pretrained(sys.argv[1])\nprint(json.dumps(t(sys.stdin.read()).input_ids))";
    let mut child = Command::new(&py).args(["-c", script, s(&hf1)]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let theirs: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    let ds = swallow::data::indexed::IndexedDataset::open(&data1).unwrap();
    let mut ours = ds.document(0).unwrap();
    ours.pop(); // EOD
    assert_eq!(theirs, ours, "AutoTokenizer vs swallow prep on the first document");
}
