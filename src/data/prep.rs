//! `swallow prep`: tokenize raw text into a Megatron indexed dataset, as Megatron-LM's
//! `preprocess_data.py` does (one sequence per document, ids of the text as the tokenizer encodes it
//! including any special tokens its post-processor adds, plus EOD with `--append-eod`; u16 data when
//! the vocabulary has < 65,500 entries, else i32).
//!
//! Inputs (each optionally compressed as `.gz` or `.zst`, read on the fly):
//! JSON Lines (any name not ending in `.txt`): one JSON object per line, the document text
//! under `field` (default "text"); blank lines are skipped. Plain text (`*.txt`): one document per
//! paragraph block, blocks separated by one or more blank (or whitespace-only) lines; the lines of a
//! block are kept with their newlines. Documents are read in chunks, tokenized on `workers` threads
//! and written in input order, so the output does not depend on the number of workers. Documents
//! that produce no tokens are skipped (and counted).

use crate::data::indexed::{with_suffix, IndexedWriter, TokenDtype};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

/// EOD candidates, in order of preference.
pub const EOD_TOKENS: [&str; 3] = ["</s>", "<|endoftext|>", "<eos>"];

/// Bytes of text tokenized per parallel chunk (small under test, to exercise chunking).
const CHUNK_BYTES: usize = if cfg!(test) { 4096 } else { 8 << 20 };

#[derive(Clone, Debug)]
pub struct PrepOptions {
    pub tokenizer: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// Output prefix: writes `output.bin` and `output.idx`.
    pub output: PathBuf,
    pub field: String,
    pub append_eod: bool,
    /// Tokenizer threads; 0 = one per core.
    pub workers: usize,
}

#[derive(Clone, Debug)]
pub struct PrepSummary {
    pub output: PathBuf,
    pub dtype: TokenDtype,
    /// Documents written.
    pub documents: u64,
    /// Documents skipped because they produced no tokens.
    pub skipped: u64,
    pub tokens: u64,
    /// UTF-8 bytes of input text tokenized.
    pub bytes: u64,
    pub seconds: f64,
}

impl fmt::Display for PrepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prep: {} documents, {} tokens ({}) from {:.2} MB of text in {:.2} s ({:.0} tokens/s) -> {}",
            self.documents,
            self.tokens,
            self.dtype,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.tokens as f64 / self.seconds.max(1e-9),
            with_suffix(&self.output, ".{bin,idx}").display()
        )?;
        if self.skipped > 0 {
            write!(f, "; {} empty documents skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// The EOD id of `tok`: the first of [`EOD_TOKENS`] it knows.
pub fn eod_id(tok: &Tokenizer) -> Option<u32> {
    EOD_TOKENS.iter().find_map(|t| tok.token_to_id(t))
}

pub fn run(opts: &PrepOptions) -> Result<PrepSummary> {
    let start = Instant::now();
    if opts.inputs.is_empty() {
        bail!("no input files given");
    }
    for p in &opts.inputs {
        if !p.is_file() {
            bail!("input file {} does not exist", p.display());
        }
        if p.extension().is_some_and(|e| e == "bz2" || e == "xz") {
            bail!(
                "input file {} is compressed with a format prep does not read (.gz and .zst are read directly); decompress it first",
                p.display()
            );
        }
    }
    let tok = Tokenizer::from_file(&opts.tokenizer)
        .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", opts.tokenizer.display()))?;
    let eod = if opts.append_eod {
        Some(eod_id(&tok).ok_or_else(|| {
            anyhow!(
                "--append-eod: tokenizer {} has none of the EOD tokens {EOD_TOKENS:?}",
                opts.tokenizer.display()
            )
        })?)
    } else {
        None
    };
    let dtype = TokenDtype::for_vocab(tok.get_vocab_size(true));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.workers)
        .build()
        .context("starting tokenizer threads")?;
    let mut writer = IndexedWriter::create(&opts.output, dtype)?;
    let mut sum = PrepSummary {
        output: opts.output.clone(),
        dtype,
        documents: 0,
        skipped: 0,
        tokens: 0,
        bytes: 0,
        seconds: 0.0,
    };
    let mut flush = |docs: &mut Vec<String>, sum: &mut PrepSummary| -> Result<()> {
        let encoded: Vec<_> = pool.install(|| {
            docs.par_iter()
                .map(|d| {
                    tok.encode_fast(d.as_str(), true)
                        .map(|e| e.get_ids().to_vec())
                })
                .collect()
        });
        for (ids, text) in encoded.into_iter().zip(docs.iter()) {
            let mut ids = ids.map_err(|e| anyhow!("tokenizing {:?}...: {e}", preview(text)))?;
            ids.extend(eod);
            sum.bytes += text.len() as u64;
            if ids.is_empty() {
                sum.skipped += 1;
                continue;
            }
            writer.add_document(&ids)?;
            sum.documents += 1;
            sum.tokens += ids.len() as u64;
        }
        docs.clear();
        Ok(())
    };
    let mut chunk: Vec<String> = Vec::new();
    let mut chunk_bytes = 0;
    for path in &opts.inputs {
        for_each_document(path, &opts.field, |doc| {
            chunk_bytes += doc.len();
            chunk.push(doc);
            if chunk_bytes >= CHUNK_BYTES {
                flush(&mut chunk, &mut sum)?;
                chunk_bytes = 0;
            }
            Ok(())
        })?;
    }
    flush(&mut chunk, &mut sum)?;
    writer.finish()?;
    sum.seconds = start.elapsed().as_secs_f64();
    Ok(sum)
}

fn preview(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Call `f` with each document of `path` in order (JSONL, or paragraphs of a `.txt` file).
pub fn for_each_document(
    path: &Path,
    field: &str,
    mut f: impl FnMut(String) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // .gz (also multi-member, as pigz writes) and .zst are decompressed on the fly; the kind of
    // text is decided by the extension under the compression suffix.
    let (inner, raw): (PathBuf, Box<dyn std::io::Read>) = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => (path.with_extension(""), Box::new(flate2::read::MultiGzDecoder::new(file))),
        Some("zst") => (
            path.with_extension(""),
            Box::new(zstd::stream::read::Decoder::new(file).with_context(|| format!("{}: not a zstd stream", path.display()))?),
        ),
        _ => (path.to_path_buf(), Box::new(file)),
    };
    let reader = BufReader::with_capacity(1 << 20, raw);
    let is_txt = inner.extension().is_some_and(|e| e == "txt");
    let mut para = String::new();
    for (k, line) in reader.lines().enumerate() {
        let lineno = k + 1;
        let line =
            line.with_context(|| format!("{}:{lineno}: cannot read line", path.display()))?;
        if is_txt {
            if line.trim().is_empty() {
                if !para.is_empty() {
                    f(std::mem::take(&mut para))?;
                }
            } else {
                if !para.is_empty() {
                    para.push('\n');
                }
                para.push_str(&line);
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| anyhow!("{}:{lineno}: not a JSON object: {e}", path.display()))?;
        let obj = v.as_object().ok_or_else(|| {
            anyhow!(
                "{}:{lineno}: expected a JSON object, found {}",
                path.display(),
                kind(&v)
            )
        })?;
        match obj.get(field) {
            Some(serde_json::Value::String(s)) => f(s.clone())?,
            Some(other) => bail!(
                "{}:{lineno}: field {field:?} is {}, expected a string",
                path.display(),
                kind(other)
            ),
            None => {
                let keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
                bail!(
                    "{}:{lineno}: no field {field:?} (keys: {}); choose one with --field",
                    path.display(),
                    keys.join(", ")
                )
            }
        }
    }
    if !para.is_empty() {
        f(para)?;
    }
    Ok(())
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::indexed::IndexedDataset;
    use std::fs;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("swallow-prep-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A tiny word-level tokenizer: whitespace split, fixed vocabulary, `</s>` = 1.
    fn tiny_tokenizer(dir: &Path, with_eod: bool) -> PathBuf {
        let mut vocab = serde_json::Map::new();
        let words = [
            "<unk>", "</s>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "猫", "犬",
        ];
        for (i, w) in words.iter().enumerate() {
            if with_eod || *w != "</s>" {
                vocab.insert(w.to_string(), i.into());
            }
        }
        let added = if with_eod {
            serde_json::json!([{"id": 1, "content": "</s>", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}])
        } else {
            serde_json::json!([])
        };
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let p = dir.join(if with_eod {
            "tok.json"
        } else {
            "tok_noeod.json"
        });
        fs::write(&p, serde_json::to_string(&tok).unwrap()).unwrap();
        p
    }

    fn opts(dir: &Path, tok: PathBuf, inputs: Vec<PathBuf>, workers: usize) -> PrepOptions {
        PrepOptions {
            tokenizer: tok,
            inputs,
            output: dir.join(format!("out_w{workers}")),
            field: "text".into(),
            append_eod: true,
            workers,
        }
    }

    #[test]
    fn gzip_and_zstd_inputs_give_the_same_shard_as_plain_text() {
        use std::io::Write;
        let dir = tmpdir("compressed");
        let tok = tiny_tokenizer(&dir, true);
        let jsonl = "{\"text\": \"the cat sat\"}\n{\"text\": \"a dog ran on the mat\"}\n";
        let txt = "猫 sat\non a mat\n\nthe dog\n";
        fs::write(dir.join("a.jsonl"), jsonl).unwrap();
        fs::write(dir.join("b.txt"), txt).unwrap();
        // gzip in two members (as pigz and concatenated .gz files are), zstd in one frame.
        let mut gz = Vec::new();
        for half in [&jsonl[..20], &jsonl[20..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(half.as_bytes()).unwrap();
            gz.extend(e.finish().unwrap());
        }
        fs::write(dir.join("a.jsonl.gz"), gz).unwrap();
        fs::write(dir.join("b.txt.zst"), zstd::encode_all(txt.as_bytes(), 3).unwrap()).unwrap();
        let plain = opts(&dir, tok.clone(), vec![dir.join("a.jsonl"), dir.join("b.txt")], 1);
        let mut packed = opts(&dir, tok, vec![dir.join("a.jsonl.gz"), dir.join("b.txt.zst")], 1);
        packed.output = dir.join("packed");
        let a = run(&plain).unwrap();
        let b = run(&packed).unwrap();
        assert_eq!((a.documents, a.tokens), (b.documents, b.tokens));
        assert_eq!(a.documents, 4);
        for ext in ["bin", "idx"] {
            let x = fs::read(plain.output.with_extension(ext)).unwrap();
            let y = fs::read(packed.output.with_extension(ext)).unwrap();
            assert_eq!(x, y, ".{ext} differs");
        }
        fs::write(dir.join("bad.jsonl.zst"), b"not zstd at all").unwrap();
        let mut bad = opts(&dir, dir.join("tok.json"), vec![dir.join("bad.jsonl.zst")], 1);
        bad.output = dir.join("bad");
        let e = run(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("bad.jsonl.zst"), "{e:#}");
    }

    #[test]
    fn jsonl_and_txt_in_order_with_eod() {
        let dir = tmpdir("basic");
        let tok = tiny_tokenizer(&dir, true);
        let j = dir.join("a.jsonl");
        fs::write(
            &j,
            "{\"text\": \"the cat sat\", \"id\": 1}\n\n{\"text\": \"a dog ran on the mat\"}\n{\"text\": \"\"}\n",
        )
        .unwrap();
        let t = dir.join("b.txt");
        fs::write(&t, "猫 sat\non a mat\n\n \n\nthe dog\n").unwrap();
        let want: Vec<Vec<u32>> = vec![
            vec![2, 3, 4, 1],
            vec![7, 8, 9, 5, 2, 6, 1],
            vec![1], // empty text: EOD only
            vec![10, 4, 5, 7, 6, 1],
            vec![2, 8, 1],
        ];
        for workers in [1, 3] {
            let o = opts(&dir, tok.clone(), vec![j.clone(), t.clone()], workers);
            let s = run(&o).unwrap();
            assert_eq!((s.documents, s.tokens, s.skipped), (5, 21, 0));
            assert_eq!(s.dtype, TokenDtype::U16);
            assert!(
                s.to_string().contains("5 documents, 21 tokens (u16)"),
                "{s}"
            );
            let ds = IndexedDataset::open(&o.output).unwrap();
            let got: Vec<Vec<u32>> = (0..5).map(|d| ds.document(d).unwrap()).collect();
            assert_eq!(got, want);
        }
        // Without EOD the empty document is skipped.
        let mut o = opts(&dir, tok, vec![j], 2);
        o.append_eod = false;
        let s = run(&o).unwrap();
        assert_eq!((s.documents, s.tokens, s.skipped), (2, 9, 1));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn order_is_independent_of_workers_on_many_documents() {
        let dir = tmpdir("order");
        let tok = tiny_tokenizer(&dir, true);
        let words = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"];
        let lines: Vec<String> = (0..2000)
            .map(|i| {
                let text: Vec<&str> = (0..(i % 13 + 1))
                    .map(|k| words[(i * 7 + k * 3) % 8])
                    .collect();
                serde_json::json!({ "text": text.join(" ") }).to_string()
            })
            .collect();
        let j = dir.join("many.jsonl");
        fs::write(&j, lines.join("\n")).unwrap();
        let read_all = |w: usize| {
            let o = opts(&dir, tok.clone(), vec![j.clone()], w);
            run(&o).unwrap();
            let ds = IndexedDataset::open(&o.output).unwrap();
            (0..ds.num_documents())
                .map(|d| ds.document(d).unwrap())
                .collect::<Vec<_>>()
        };
        let one = read_all(1);
        assert_eq!(one.len(), 2000);
        assert_eq!(one[5], vec![5, 8, 3, 6, 9, 4, 1]);
        assert_eq!(read_all(4), one);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_inputs_have_clear_errors() {
        let dir = tmpdir("bad");
        let tok = tiny_tokenizer(&dir, true);
        let err = |o: &PrepOptions| format!("{:#}", run(o).unwrap_err());

        let missing = dir.join("nope.jsonl");
        let e = err(&opts(&dir, tok.clone(), vec![missing], 1));
        assert!(e.contains("nope.jsonl does not exist"), "{e}");

        let j = dir.join("bad.jsonl");
        fs::write(&j, "{\"text\": \"the cat\"}\nnot json\n").unwrap();
        let o = opts(&dir, tok.clone(), vec![j.clone()], 1);
        let e = err(&o);
        assert!(e.contains("bad.jsonl:2: not a JSON object"), "{e}");
        // Nothing is left at the output prefix after a failure.
        assert!(!with_suffix(&o.output, ".bin").exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);

        fs::write(
            &j,
            "{\"text\": \"the cat\"}\n{\"body\": \"x\", \"id\": 3}\n",
        )
        .unwrap();
        let e = err(&opts(&dir, tok.clone(), vec![j.clone()], 1));
        assert!(
            e.contains("bad.jsonl:2: no field \"text\" (keys: body, id)"),
            "{e}"
        );

        fs::write(&j, "{\"text\": 5}\n").unwrap();
        let e = err(&opts(&dir, tok.clone(), vec![j.clone()], 1));
        assert!(e.contains("bad.jsonl:1: field \"text\" is a number"), "{e}");

        fs::write(&j, "[1, 2]\n").unwrap();
        let e = err(&opts(&dir, tok.clone(), vec![j.clone()], 1));
        assert!(
            e.contains("bad.jsonl:1: expected a JSON object, found an array"),
            "{e}"
        );

        fs::write(&j, "{\"text\": \"the\"}\n").unwrap();
        let noeod = tiny_tokenizer(&dir, false);
        let e = err(&opts(&dir, noeod, vec![j.clone()], 1));
        assert!(e.contains("none of the EOD tokens"), "{e}");

        let e = err(&opts(&dir, dir.join("missing_tok.json"), vec![j], 1));
        assert!(
            e.contains("cannot load tokenizer") && e.contains("missing_tok.json"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The committed sample tokenizer (data/sample/tokenizer.json) and corpus, end to end.
    #[test]
    fn sample_tokenizer_and_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        let tok_path = root.join("tokenizer.json");
        let tok = Tokenizer::from_file(&tok_path).unwrap();
        assert_eq!(tok.get_vocab_size(true), 4096);
        assert_eq!(tok.token_to_id("<unk>"), Some(0));
        assert_eq!(tok.token_to_id("<s>"), Some(1));
        assert_eq!(tok.token_to_id("</s>"), Some(2));
        assert_eq!(eod_id(&tok), Some(2));
        for text in [
            "今日は晴れです。明日は雨が降るでしょう。",
            "The train leaves at 7:45 a.m. 🚄",
        ] {
            let ids = tok.encode(text, true).unwrap().get_ids().to_vec();
            assert!(ids.iter().all(|&i| i > 2 && i < 4096), "{ids:?}");
            assert_eq!(tok.decode(&ids, false).unwrap(), text);
        }
        let dir = tmpdir("sample");
        let o = PrepOptions {
            tokenizer: tok_path,
            inputs: vec![root.join("ja.jsonl"), root.join("en.jsonl")],
            output: dir.join("sample"),
            field: "text".into(),
            append_eod: true,
            workers: 2,
        };
        let s = run(&o).unwrap();
        assert!(s.documents > 300 && s.tokens > 30_000, "{s}");
        let ds = IndexedDataset::open(&o.output).unwrap();
        assert_eq!(ds.dtype(), TokenDtype::U16);
        let last = ds.document(ds.num_documents() - 1).unwrap();
        assert_eq!(*last.last().unwrap(), 2);
        let text = tok.decode(&last[..last.len() - 1], false).unwrap();
        assert!(text.is_ascii() && text.len() > 50, "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
