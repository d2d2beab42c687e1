//! Builds the sample tokenizer, `data/sample/tokenizer.json`: a byte-level BPE (GPT-2 style: byte
//! alphabet, no prefix space, no normalizer, no post-processor tokens) trained with the
//! `tokenizers` crate on `data/sample/*.jsonl`, vocabulary exactly 4096 entries with the special
//! tokens `<unk>` = 0, `<s>` = 1, `</s>` = 2 (`</s>` is the EOD token of `swallow prep --append-eod`).
//! The result also loads with the Python `tokenizers` package.
//!
//!     cargo run --release --example build_tokenizer
//!
//! Training is deterministic: rerunning it on the same corpus gives the same file.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::{AddedToken, Tokenizer};

const VOCAB_SIZE: usize = 4096;
const SPECIAL: [&str; 3] = ["<unk>", "<s>", "</s>"];

fn main() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    inputs.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    inputs.sort();
    if inputs.is_empty() {
        bail!("no *.jsonl corpus in {} (run data/sample/make_corpus.py)", dir.display());
    }
    let mut texts = Vec::new();
    for p in &inputs {
        let body = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        for (k, line) in body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", p.display(), k + 1))?;
            let text = v["text"]
                .as_str()
                .ok_or_else(|| anyhow!("{}:{}: no string field \"text\"", p.display(), k + 1))?;
            texts.push(text.to_string());
        }
    }

    // add_prefix_space = false (decode gives back the exact text), trim_offsets, GPT-2 regex.
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_pre_tokenizer(Some(byte_level))
        .with_decoder(Some(byte_level));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(VOCAB_SIZE)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(SPECIAL.iter().map(|s| AddedToken::from(*s, true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;

    let size = tokenizer.get_vocab_size(true);
    if size != VOCAB_SIZE {
        bail!("trained vocabulary has {size} entries, expected {VOCAB_SIZE} (corpus too small?)");
    }
    for (id, tok) in SPECIAL.iter().enumerate() {
        if tokenizer.token_to_id(tok) != Some(id as u32) {
            bail!("special token {tok} did not get id {id}");
        }
    }
    let out = dir.join("tokenizer.json");
    tokenizer
        .save(&out, false)
        .map_err(|e| anyhow!("writing {}: {e}", out.display()))?;
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let tokens: usize = texts
        .iter()
        .map(|t| tokenizer.encode_fast(t.as_str(), false).map(|e| e.len()))
        .sum::<tokenizers::Result<usize>>()
        .map_err(|e| anyhow!("{e}"))?;
    println!(
        "wrote {} (vocab {size}): {} documents, {bytes} bytes of text -> {tokens} tokens ({:.2} bytes/token)",
        out.display(),
        texts.len(),
        bytes as f64 / tokens as f64
    );
    Ok(())
}
