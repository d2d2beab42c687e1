//! `swallow prep`: tokenize raw text into a Megatron indexed dataset, as Megatron-LM's
//! `preprocess_data.py` does (one sequence per document, ids of the text as the tokenizer encodes it
//! including any special tokens its post-processor adds, plus EOD with `--append-eod`; u16 data when
//! the vocabulary has < 65,500 entries, else i32). Input formats and bad-line handling:
//! [`crate::data::prep_input`].
//!
//! Parallelism: documents are read in chunks, tokenized on `workers` threads and written in input
//! order; under mpirun the inputs are divided into contiguous pieces between the ranks
//! ([`pieces_for_rank`]), each rank writes its documents as a part (temp name, then renamed), the
//! ranks agree that all parts are complete, and rank 0 concatenates them into the output (temp
//! names, renamed when complete) and removes them. The output is byte-identical for any number of
//! workers and ranks. Documents that produce no tokens are skipped (and counted). A progress bar is
//! drawn on rank 0 when stderr is a terminal; the summary line is always printed.

use crate::data::indexed::{with_suffix, IndexedDataset};
use crate::data::indexed_writer::IndexedWriter;
use crate::data::token_dtype::TokenDtype;
use crate::data::prep_input::{check_inputs, expand_inputs, for_each_document, pieces_for_rank, BadLines, Piece};
use crate::progress::ProgressMeter;
use crate::parallel::Collectives;
use crate::tokenize::{eod::eod_id, Encoder};
use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
    /// The EOD token's text (default: tokenizer_config.json's eos_token, else a known name).
    pub eod_token: Option<String>,
    /// Tokenizer threads per rank; 0 = one per core.
    pub workers: usize,
    pub bad_lines: BadLines,
}

/// What this rank (or, after [`run`], the whole job) read and wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Documents written.
    pub documents: u64,
    /// Documents skipped because they produced no tokens.
    pub skipped: u64,
    /// Lines skipped as bad records (with [`BadLines::Skip`]).
    pub bad_lines: u64,
    pub tokens: u64,
    /// UTF-8 bytes of input text tokenized.
    pub bytes: u64,
}

impl Counts {
    fn to_f64(self) -> [f64; 5] {
        [self.documents, self.skipped, self.bad_lines, self.tokens, self.bytes].map(|x| x as f64)
    }

    fn from_f64(v: &[f64]) -> Self {
        let u = |i: usize| v[i].round() as u64;
        Counts { documents: u(0), skipped: u(1), bad_lines: u(2), tokens: u(3), bytes: u(4) }
    }
}

#[derive(Clone, Debug)]
pub struct PrepSummary {
    pub output: PathBuf,
    pub dtype: TokenDtype,
    pub counts: Counts,
    /// Bytes written (.bin + .idx).
    pub output_bytes: u64,
    pub ranks: usize,
    pub seconds: f64,
    /// The encoder that ran ([`Encoder::name`]).
    pub encoder: String,
    /// The EOD id and where it came from, with `--append-eod`.
    pub eod: Option<(u32, String)>,
    /// Documents that went through `tokenizers` because they hold an added token's text.
    pub slow_documents: u64,
}

impl fmt::Display for PrepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "prep: {} documents, {} tokens ({}) from {:.2} MB of text in {:.2} s ({:.0} tokens/s{}) -> {} ({} bytes)",
            c.documents,
            c.tokens,
            self.dtype,
            c.bytes as f64 / 1e6,
            self.seconds,
            c.tokens as f64 / self.seconds.max(1e-9),
            if self.ranks > 1 { format!(", {} ranks", self.ranks) } else { String::new() },
            with_suffix(&self.output, ".{bin,idx}").display(),
            self.output_bytes
        )?;
        if c.skipped > 0 {
            write!(f, "; {} empty documents skipped", c.skipped)?;
        }
        if c.bad_lines > 0 {
            write!(f, "; {} bad lines skipped", c.bad_lines)?;
        }
        write!(f, "; encoder {}", self.encoder)?;
        if self.slow_documents > 0 {
            write!(f, " ({} documents with added-token text through tokenizers)", self.slow_documents)?;
        }
        if let Some((id, from)) = &self.eod {
            write!(f, "; EOD {id} ({from})")?;
        }
        Ok(())
    }
}

/// The prefix of rank `rank`'s part of the output.
fn part_prefix(output: &Path, rank: usize, ranks: usize) -> PathBuf {
    with_suffix(output, &format!(".part-{rank}-of-{ranks}"))
}

fn remove_part(prefix: &Path) {
    for ext in [".bin", ".idx"] {
        let _ = std::fs::remove_file(with_suffix(prefix, ext));
    }
}

/// Run prep on every rank of `comm` (a group of one without mpirun). Returns the summary of the
/// whole job on rank 0, `None` on the other ranks.
pub fn run(opts: &PrepOptions, comm: &dyn Collectives) -> Result<Option<PrepSummary>> {
    let start = Instant::now();
    let inputs = expand_inputs(&opts.inputs)?;
    check_inputs(&inputs)?;
    let encoder = Encoder::from_file(&opts.tokenizer)?;
    let eod = match opts.append_eod {
        true => Some(eod_id(encoder.tokenizer(), &opts.tokenizer, opts.eod_token.as_deref())?),
        false => None,
    };
    let dtype = TokenDtype::for_vocab(encoder.tokenizer().get_vocab_size(true));
    let (rank, ranks) = (comm.rank(), comm.size());
    let pieces = pieces_for_rank(&inputs, rank, ranks)?;
    let target = if ranks == 1 { opts.output.clone() } else { part_prefix(&opts.output, rank, ranks) };
    let local = tokenize_pieces(opts, &encoder, eod.as_ref().map(|e| e.0), dtype, &pieces, &target, rank == 0, ranks == 1);
    let mut all = [0.0f64; 7];
    all[0] = local.is_err() as u8 as f64;
    if let Ok(c) = &local {
        all[1..6].copy_from_slice(&c.to_f64());
    }
    all[6] = encoder.slow_documents() as f64;
    comm.all_reduce_sum_f64(&mut all);
    if all[0] > 0.0 {
        if ranks > 1 {
            remove_part(&target);
        }
        return Err(match local {
            Err(e) => e,
            Ok(_) => anyhow!("prep failed on {} other rank(s); no output written", all[0]),
        });
    }
    let counts = Counts::from_f64(&all[1..6]);
    if counts.documents == 0 {
        remove_part(&target);
        return Err(no_documents(opts));
    }
    if rank != 0 {
        return Ok(None);
    }
    if ranks > 1 {
        let merged = merge_parts(&opts.output, ranks, dtype);
        for r in 0..ranks {
            remove_part(&part_prefix(&opts.output, r, ranks));
        }
        merged?;
    }
    let output_bytes = ["bin", "idx"]
        .iter()
        .map(|e| std::fs::metadata(with_suffix(&opts.output, &format!(".{e}"))).map_or(0, |m| m.len()))
        .sum();
    Ok(Some(PrepSummary {
        output: opts.output.clone(),
        dtype,
        counts,
        output_bytes,
        ranks,
        seconds: start.elapsed().as_secs_f64(),
        encoder: encoder.name().to_string(),
        eod,
        slow_documents: all[6].round() as u64,
    }))
}

/// Concatenate the ranks' parts, in rank order, into `output` (temp names, then renamed).
fn merge_parts(output: &Path, ranks: usize, dtype: TokenDtype) -> Result<()> {
    let mut w = IndexedWriter::create(output, dtype)?;
    for r in 0..ranks {
        let part = IndexedDataset::open(&part_prefix(output, r, ranks))
            .with_context(|| format!("reading the part of rank {r}"))?;
        w.append_dataset(&part)?;
    }
    w.finish()?;
    Ok(())
}

/// The error of an input without a single document: nothing is written (an existing output
/// stays as it was).
fn no_documents(opts: &PrepOptions) -> anyhow::Error {
    let names: Vec<String> = opts.inputs.iter().map(|p| p.display().to_string()).collect();
    anyhow!(
        "prep: no documents in {}: the input is empty, or its records have no non-empty {:?} field (--field); nothing written to {}",
        names.join(", "), opts.field, with_suffix(&opts.output, ".{bin,idx}").display()
    )
}

/// Tokenize the documents of `pieces` into the dataset `target` (temp names, renamed when done);
/// with `refuse_empty`, no document at all is an error and `target` is left alone.
#[allow(clippy::too_many_arguments)]
fn tokenize_pieces(
    opts: &PrepOptions,
    enc: &Encoder,
    eod: Option<u32>,
    dtype: TokenDtype,
    pieces: &[Piece],
    target: &Path,
    show_progress: bool,
    refuse_empty: bool,
) -> Result<Counts> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.workers)
        .build()
        .context("starting tokenizer threads")?;
    let total_bytes = pieces.iter().map(|p| p.bytes()).sum::<Result<u64>>()?;
    let mut progress = ProgressMeter::new("prep", total_bytes, show_progress);
    let detail = |p: &ProgressMeter, c: &Counts| format!(" | {} docs | {:.2}M tokens/s", c.documents, c.tokens as f64 / p.elapsed_s().max(1e-9) / 1e6);
    let read = AtomicU64::new(0);
    let mut writer = IndexedWriter::create(target, dtype)?;
    let mut c = Counts::default();
    let mut flush = |docs: &mut Vec<String>, c: &mut Counts| -> Result<()> {
        let encoded: Vec<_> = pool.install(|| {
            docs.par_iter()
                .map(|d| enc.encode(d))
                .collect()
        });
        for (ids, text) in encoded.into_iter().zip(docs.iter()) {
            let mut ids = ids.map_err(|e| anyhow!("tokenizing {:?}...: {e}", preview(text)))?;
            ids.extend(eod);
            c.bytes += text.len() as u64;
            if ids.is_empty() {
                c.skipped += 1;
                continue;
            }
            writer.add_document(&ids)?;
            c.documents += 1;
            c.tokens += ids.len() as u64;
        }
        docs.clear();
        Ok(())
    };
    let mut chunk: Vec<String> = Vec::new();
    let mut chunk_bytes = 0;
    for piece in pieces {
        let bad = for_each_document(piece, &opts.field, opts.bad_lines, &read, |doc| {
            chunk_bytes += doc.len();
            chunk.push(doc);
            if chunk_bytes >= CHUNK_BYTES {
                flush(&mut chunk, &mut c)?;
                chunk_bytes = 0;
                progress.update(read.load(Ordering::Relaxed), &detail(&progress, &c));
            }
            Ok(())
        })?;
        c.bad_lines += bad;
    }
    flush(&mut chunk, &mut c)?;
    progress.update(read.load(Ordering::Relaxed), &detail(&progress, &c));
    drop(progress);
    if refuse_empty && c.documents == 0 {
        return Err(no_documents(opts));
    }
    writer.finish()?;
    Ok(c)
}

fn preview(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::indexed::IndexedDataset;
    use crate::parallel::LocalGroup;
    use tokenizers::Tokenizer;
    use std::fs;

    /// Prep as one process.
    fn run(o: &PrepOptions) -> Result<PrepSummary> {
        super::run(o, &LocalGroup).map(|s| s.expect("rank 0 has the summary"))
    }

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
            eod_token: None,
            workers,
            bad_lines: BadLines::Fail,
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
        assert_eq!((a.counts.documents, a.counts.tokens), (b.counts.documents, b.counts.tokens));
        assert_eq!(a.counts.documents, 4);
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
            assert_eq!((s.counts.documents, s.counts.tokens, s.counts.skipped), (5, 21, 0));
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
        assert_eq!((s.counts.documents, s.counts.tokens, s.counts.skipped), (2, 9, 1));
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
        let e = err(&opts(&dir, tok.clone(), vec![dir.clone()], 1));
        assert!(e.contains("is not a regular file"), "{e}");

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
        assert!(e.contains("no end-of-document token") && e.contains("--eod-token"), "{e}");

        let e = err(&opts(&dir, dir.join("missing_tok.json"), vec![j], 1));
        assert!(
            e.contains("cannot load tokenizer") && e.contains("missing_tok.json"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn skipped_bad_lines_are_counted_in_the_summary() {
        let dir = tmpdir("skip");
        let tok = tiny_tokenizer(&dir, true);
        let j = dir.join("mixed.jsonl");
        fs::write(&j, b"{\"text\": \"the cat\"}\nnot json\n{\"text\": \"\xc3\x28\"}\n{\"text\": \"a dog\"}\n").unwrap();
        let mut o = opts(&dir, tok, vec![j], 1);
        let e = format!("{:#}", run(&o).unwrap_err());
        assert!(e.contains("mixed.jsonl:2: not a JSON object"), "{e}");
        o.bad_lines = BadLines::Skip;
        let s = run(&o).unwrap();
        assert_eq!((s.counts.documents, s.counts.bad_lines, s.counts.tokens), (2, 2, 6));
        let line = s.to_string();
        assert!(line.contains("; 2 bad lines skipped"), "{line}");
        assert!(line.contains("tokens/s") && line.contains(&format!("({} bytes)", s.output_bytes)), "{line}");
        let on_disk = fs::metadata(o.output.with_extension("bin")).unwrap().len()
            + fs::metadata(o.output.with_extension("idx")).unwrap().len();
        assert_eq!(s.output_bytes, on_disk);
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
        assert_eq!(eod_id(&tok, &tok_path, None).unwrap().0, 2);
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
            eod_token: None,
            workers: 2,
            bad_lines: BadLines::Fail,
        };
        let s = run(&o).unwrap();
        assert!(s.counts.documents > 300 && s.counts.tokens > 30_000, "{s}");
        let ds = IndexedDataset::open(&o.output).unwrap();
        assert_eq!(ds.dtype(), TokenDtype::U16);
        let last = ds.document(ds.num_documents() - 1).unwrap();
        assert_eq!(*last.last().unwrap(), 2);
        let text = tok.decode(&last[..last.len() - 1], false).unwrap();
        assert!(text.is_ascii() && text.len() > 50, "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
