//! The fast encoders against the `tokenizers` crate: every fixture tokenizer (built by
//! tests/fixtures/make_tokenizers.py as the families ship them) on real Japanese and English text
//! and an edge-case corpus, and variants of them (JSON edits of the real files) for the forms the
//! fixtures do not have. Ids must be identical document by document.

use super::*;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(kind: &str) -> PathBuf {
    root().join("tests/fixtures/tokenizers").join(kind).join("tokenizer.json")
}

/// The documents of a JSONL file.
fn jsonl(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}

/// Real text (Debian's Japanese and English documentation, the sample corpus), the edge cases,
/// and each document's lines and halves (more starts and ends).
pub(super) fn corpus() -> Vec<String> {
    let text = root().join("tests/fixtures/tokenizers/text");
    let mut docs = Vec::new();
    for p in [text.join("ja.jsonl"), text.join("en.jsonl"), root().join("data/sample/ja.jsonl"), root().join("data/sample/en.jsonl")] {
        docs.extend(jsonl(&p));
    }
    let mut pieces = Vec::new();
    for d in &docs {
        pieces.extend(d.lines().take(20).map(str::to_string));
        let mid = d.char_indices().nth(d.chars().count() / 2).map_or(0, |(i, _)| i);
        pieces.push(d[..mid].to_string());
        pieces.push(d[mid..].to_string());
    }
    docs.extend(pieces);
    docs.extend(jsonl(&text.join("edge.jsonl")));
    docs
}

/// Check `encoder` against `tokenizers` on `texts`; returns how many went to `tokenizers`.
fn check_exact(encoder: &Encoder, texts: &[String], what: &str) -> u64 {
    assert!(encoder.fast.is_some(), "{what}: no fast encoder: {}", encoder.name());
    let before = encoder.slow_documents();
    for t in texts {
        let want = encoder.reference(t).unwrap();
        assert_eq!(encoder.encode(t).unwrap(), want, "{what}: {t:?}");
        assert_eq!(encoder.encode(t).unwrap(), want, "{what} (cached): {t:?}");
    }
    (encoder.slow_documents() - before) / 2
}

fn load_variant(kind: &str, edit: impl FnOnce(&mut Value)) -> Encoder {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixture(kind)).unwrap()).unwrap();
    edit(&mut v);
    let dir = std::env::temp_dir().join(format!("swallow-tokenize-{}-{kind}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("variant-{}.json", bpe::cache_tag()));
    std::fs::write(&p, v.to_string()).unwrap();
    let e = Encoder::from_file(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    e
}

#[test]
fn every_fixture_kind_is_exact_on_real_text_and_edge_cases() {
    let texts = corpus();
    assert!(texts.len() > 1000, "{} texts", texts.len());
    for (kind, name) in [
        ("llama2", "sentencepiece-bpe, fast (Prepend(▁) + Replace(\" \"->▁) + byte fallback)"),
        ("llama2-metaspace", "sentencepiece-bpe, fast (Metaspace(prepend true, split false) + byte fallback)"),
        ("mistral", "sentencepiece-bpe, fast"),
        ("llama3", "byte-level-bpe, fast (Llama 3 split regex, ignore_merges)"),
    ] {
        let e = Encoder::from_file(&fixture(kind)).unwrap();
        assert!(e.name().starts_with(name), "{kind}: {}", e.name());
        let slow = check_exact(&e, &texts, kind);
        // Only the edge lines holding special-token text go to tokenizers.
        assert!((1..=12).contains(&slow), "{kind}: {slow} documents through tokenizers");
    }
    let sample = Encoder::from_file(&root().join("data/sample/tokenizer.json")).unwrap();
    assert_eq!(sample.name(), "byte-level-bpe, fast (ByteLevel regex)");
    check_exact(&sample, &texts, "sample");
}

/// Forms the fixtures lack, as JSON edits of real files: Metaspace splitting at every '▁' and the
/// legacy `add_prefix_space` spelling, digit splitting, an unknown token without full byte fallback
/// (fused or not), `ignore_merges` on a SentencePiece model, and Llama 3 without `ignore_merges`.
#[test]
fn variants_of_the_real_files_are_exact() {
    let texts: Vec<String> = corpus().into_iter().step_by(3).collect();
    let metaspace = |split: bool| {
        move |v: &mut Value| {
            v["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
                {"type": "Metaspace", "replacement": "▁", "add_prefix_space": true, "split": split},
                {"type": "Digits", "individual_digits": true}]});
        }
    };
    check_exact(&load_variant("llama2-metaspace", metaspace(true)), &texts, "Metaspace split + Digits");
    check_exact(&load_variant("llama2-metaspace", metaspace(false)), &texts, "legacy Metaspace + Digits");
    let contiguous = load_variant("llama2", |v| {
        v["pre_tokenizer"] = serde_json::json!({"type": "Digits", "individual_digits": false});
    });
    check_exact(&contiguous, &texts, "Prepend + contiguous Digits");
    for fuse in [true, false] {
        // Byte fallback for ASCII and a few lead bytes only; everything else unknown.
        let e = load_variant("llama2", |v| {
            v["model"]["fuse_unk"] = fuse.into();
            let vocab = v["model"]["vocab"].as_object_mut().unwrap();
            for b in 0x80..=0xFFu32 {
                if b != 0xE3 && b != 0x81 {
                    vocab.remove(&format!("<0x{b:02X}>"));
                }
            }
        });
        check_exact(&e, &texts, &format!("partial byte fallback, fuse_unk {fuse}"));
    }
    let no_fallback = load_variant("llama2", |v| v["model"]["byte_fallback"] = false.into());
    check_exact(&no_fallback, &texts, "no byte fallback");
    check_exact(&load_variant("llama2", |v| v["model"]["ignore_merges"] = true.into()), &texts, "SentencePiece ignore_merges");
    check_exact(&load_variant("llama3", |v| v["model"]["ignore_merges"] = false.into()), &texts, "Llama 3 without ignore_merges");
    // Another pattern with the look-ahead tail (Qwen2's: single digits) goes through the regex path.
    let qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let custom = load_variant("llama3", |v| v["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = qwen2.into());
    assert!(custom.name().contains("custom split regex"), "{}", custom.name());
    check_exact(&custom, &texts, "Qwen2's split regex");
}

#[test]
fn unsupported_forms_fall_back_to_tokenizers_and_say_why() {
    let nfkc = load_variant("llama2", |v| {
        v["normalizer"] = serde_json::json!({"type": "NFKC"});
    });
    assert!(nfkc.name().starts_with("tokenizers (no fast encoder: normalizer NFKC"), "{}", nfkc.name());
    assert_eq!(nfkc.encode("ｶﾀｶﾅ ＡＢＣ").unwrap(), nfkc.reference("ｶﾀｶﾅ ＡＢＣ").unwrap());
    let pattern = load_variant("llama3", |v| {
        v["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+".into();
    });
    assert!(pattern.name().contains("split pattern"), "{}", pattern.name());
    let not_a_tokenizer = Encoder::from_file(&root().join("tests/fixtures/tokenizers/llama2/tokenizer_config.json"));
    assert!(not_a_tokenizer.is_err(), "a tokenizer_config.json is not a tokenizer");
}

/// The ids the Python `tokenizers` gave when the fixtures were built (expected_ids.jsonl, written
/// by make_tokenizers.py) equal both the Rust crate's and the fast encoder's.
#[test]
fn fixture_ids_from_python_tokenizers_match() {
    let text = root().join("tests/fixtures/tokenizers/text");
    for kind in ["llama2", "llama2-metaspace", "mistral", "llama3"] {
        let e = Encoder::from_file(&fixture(kind)).unwrap();
        let expected = std::fs::read_to_string(fixture(kind).with_file_name("expected_ids.jsonl")).unwrap();
        let mut sets: std::collections::HashMap<String, Vec<String>> = Default::default();
        let mut n = 0;
        for line in expected.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let set = v["set"].as_str().unwrap().to_string();
            let texts = sets.entry(set.clone()).or_insert_with(|| jsonl(&text.join(format!("{set}.jsonl"))));
            let t = texts.remove(0);
            let want: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
            assert_eq!(e.reference(&t).unwrap(), want, "{kind} {set} {}: the Rust crate", v["source"]);
            assert_eq!(e.encode(&t).unwrap(), want, "{kind} {set} {}: the fast encoder", v["source"]);
            n += 1;
        }
        assert_eq!(n, 147, "{kind}");
    }
}
