//! `swallow data inspect PREFIX [--vocab-size V]`: open a Megatron indexed dataset (which validates
//! the index against the data), scan every token, and report counts, dtype and the id range; with a
//! vocabulary size, ids outside it are an error. The last line printed is a JSON summary for scripts.

use crate::data::indexed::IndexedDataset;
use crate::data::token_dtype::TokenDtype;
use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataSummary {
    pub prefix: String,
    pub documents: u64,
    pub sequences: u64,
    pub tokens: u64,
    pub dtype: String,
    /// None when the dataset has no tokens.
    pub min_id: Option<u32>,
    pub max_id: Option<u32>,
    /// Only with a vocabulary size: ids >= it, and the first one found as (document, id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_vocab: Option<u64>,
    #[serde(skip)]
    pub first_out_of_vocab: Option<(usize, u32)>,
}

#[derive(Clone, Copy, Default)]
struct Scan {
    min: Option<u32>,
    max: Option<u32>,
    oov: u64,
    first_oov: Option<(usize, u32)>,
}

impl Scan {
    fn merge(a: Scan, b: Scan) -> Scan {
        Scan {
            min: a.min.into_iter().chain(b.min).min(),
            max: a.max.into_iter().chain(b.max).max(),
            oov: a.oov + b.oov,
            first_oov: a.first_oov.or(b.first_oov),
        }
    }
}

/// Scan `prefix` and summarize it; never fails on out-of-vocabulary ids (they are counted).
pub fn summarize(prefix: &Path, vocab_size: Option<usize>) -> Result<DataSummary> {
    let ds = IndexedDataset::open(prefix)?;
    summarize_dataset(&ds, vocab_size)
}

pub fn summarize_dataset(ds: &IndexedDataset, vocab_size: Option<usize>) -> Result<DataSummary> {
    let vocab = vocab_size.unwrap_or(usize::MAX);
    let scan = (0..ds.num_sequences())
        .into_par_iter()
        .with_min_len(64)
        .map_init(Vec::new, |buf: &mut Vec<u32>, s| -> Result<Scan> {
            buf.resize(ds.sequence_len(s), 0);
            ds.read_tokens(s, 0, buf)?;
            let mut sc = Scan {
                min: buf.iter().copied().min(),
                max: buf.iter().copied().max(),
                ..Scan::default()
            };
            if sc.max.is_some_and(|m| m as usize >= vocab) {
                sc.oov = buf.iter().filter(|&&t| t as usize >= vocab).count() as u64;
                let bad = *buf.iter().find(|&&t| t as usize >= vocab).unwrap();
                sc.first_oov = Some((ds.document_of_sequence(s), bad));
            }
            Ok(sc)
        })
        .try_reduce(Scan::default, |a, b| Ok(Scan::merge(a, b)))?;
    Ok(DataSummary {
        prefix: ds.prefix().display().to_string(),
        documents: ds.num_documents() as u64,
        sequences: ds.num_sequences() as u64,
        tokens: ds.num_tokens(),
        dtype: ds.dtype().name().to_string(),
        min_id: scan.min,
        max_id: scan.max,
        vocab_size,
        out_of_vocab: vocab_size.map(|_| scan.oov),
        first_out_of_vocab: scan.first_oov,
    })
}

/// Print the summary (human lines, then the JSON line last); error if ids fall outside the vocabulary.
pub fn run(prefix: &Path, vocab_size: Option<usize>) -> Result<()> {
    let s = summarize(prefix, vocab_size)?;
    let range = match (s.min_id, s.max_id) {
        (Some(lo), Some(hi)) => format!("{lo}..={hi}"),
        _ => "none (no tokens)".to_string(),
    };
    let dtype_size = TokenDtype::ALL
        .iter()
        .find(|d| d.name() == s.dtype)
        .map_or(0, |d| d.size());
    println!("dataset   {}", s.prefix);
    println!("documents {}", s.documents);
    println!("sequences {}", s.sequences);
    println!(
        "tokens    {} ({:.1} per document)",
        s.tokens,
        s.tokens as f64 / s.documents.max(1) as f64
    );
    println!("dtype     {} ({dtype_size} bytes per token)", s.dtype);
    println!("ids       {range}");
    if let (Some(v), Some(n)) = (s.vocab_size, s.out_of_vocab) {
        println!("vocab     {v}: {n} ids outside");
        if n > 0 {
            let (doc, id) = s.first_out_of_vocab.unwrap_or_default();
            bail!(
                "{}: {n} token ids are >= the vocabulary size {v} (first: id {id} in document {doc})",
                s.prefix
            );
        }
    }
    println!("{}", serde_json::to_string(&s)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::indexed_writer::IndexedWriter;
    use std::fs;

    #[test]
    fn summary_counts_and_vocab() {
        let dir = std::env::temp_dir().join(format!("swallow-inspect-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("i");
        let mut w = IndexedWriter::create(&p, TokenDtype::U16).unwrap();
        for d in [&[5u32, 9, 2][..], &[], &[300, 7]] {
            w.add_document(d).unwrap();
        }
        w.finish().unwrap();
        let s = summarize(&p, None).unwrap();
        assert_eq!((s.documents, s.sequences, s.tokens), (3, 3, 5));
        assert_eq!((s.min_id, s.max_id), (Some(2), Some(300)));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["dtype"], "u16");
        assert_eq!(json["tokens"], 5);
        assert!(json.get("out_of_vocab").is_none());

        let s = summarize(&p, Some(301)).unwrap();
        assert_eq!(s.out_of_vocab, Some(0));
        run(&p, Some(301)).unwrap();
        let s = summarize(&p, Some(8)).unwrap();
        assert_eq!(s.out_of_vocab, Some(2));
        assert_eq!(s.first_out_of_vocab, Some((0, 9)));
        let e = format!("{:#}", run(&p, Some(8)).unwrap_err());
        assert!(
            e.contains("2 token ids are >= the vocabulary size 8 (first: id 9 in document 0)"),
            "{e}"
        );
        assert!(run(&dir.join("missing"), None).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
