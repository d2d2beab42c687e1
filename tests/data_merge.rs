//! `data merge`: merged shards read back as the concatenation of the inputs (documents, multi-
//! sequence documents and bytes intact), dtype mismatches and missing inputs are clear errors that
//! leave an existing output untouched.

use std::path::{Path, PathBuf};
use swallow::data::indexed::{with_suffix, IndexedDataset};
use swallow::data::indexed_writer::{index_bytes_with_documents, IndexedWriter};
use swallow::data::token_dtype::TokenDtype;
use swallow::data::merge::merge;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swallow-merge-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(p: &Path, dtype: TokenDtype, docs: &[Vec<u32>]) {
    let mut w = IndexedWriter::create(p, dtype).unwrap();
    for d in docs {
        w.add_document(d).unwrap();
    }
    w.finish().unwrap();
}

fn docs_of(p: &Path) -> Vec<Vec<u32>> {
    let ds = IndexedDataset::open(p).unwrap();
    (0..ds.num_documents())
        .map(|d| ds.document(d).unwrap())
        .collect()
}

#[test]
fn merge_reads_back_as_the_concatenation() {
    let dir = tmpdir("concat");
    let a: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![], vec![60_000, 5]];
    let b: Vec<Vec<u32>> = vec![vec![7], vec![8, 9, 10, 11]];
    write(&dir.join("a"), TokenDtype::U16, &a);
    write(&dir.join("b"), TokenDtype::U16, &b);
    // A Megatron shard with split sentences: 3 sequences, documents [0, 2) and [2, 3).
    let c = dir.join("c");
    std::fs::write(
        with_suffix(&c, ".bin"),
        [20u16, 21, 22, 23].map(u16::to_le_bytes).concat(),
    )
    .unwrap();
    std::fs::write(
        with_suffix(&c, ".idx"),
        index_bytes_with_documents(TokenDtype::U16, &[1, 2, 1], &[0, 2, 3]),
    )
    .unwrap();
    let out = dir.join("out/merged");
    let s = merge(&[dir.join("a"), dir.join("b"), c.clone()], &out).unwrap();
    assert_eq!((s.documents, s.sequences, s.tokens), (7, 8, 14));
    let mut want = a.clone();
    want.extend(b.clone());
    want.extend([vec![20, 21, 22], vec![23]]);
    assert_eq!(docs_of(&out), want);
    let m = IndexedDataset::open(&out).unwrap();
    assert_eq!(m.document_sequences(5), 5..7);
    // Shards of one-sequence documents merge byte-identically to writing them in one go.
    write(&dir.join("ab"), TokenDtype::U16, &[a, b].concat());
    merge(&[dir.join("a"), dir.join("b")], &dir.join("m2")).unwrap();
    for ext in [".bin", ".idx"] {
        let x = std::fs::read(with_suffix(&dir.join("ab"), ext)).unwrap();
        let y = std::fs::read(with_suffix(&dir.join("m2"), ext)).unwrap();
        assert_eq!(x, y, "{ext}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_named_and_the_output_kept() {
    let dir = tmpdir("bad");
    write(&dir.join("u16"), TokenDtype::U16, &[vec![1, 2]]);
    write(&dir.join("i32"), TokenDtype::I32, &[vec![100_000]]);
    let out = dir.join("out");
    write(&out, TokenDtype::U16, &[vec![42]]);
    let before = std::fs::read(with_suffix(&out, ".bin")).unwrap();
    let e = format!(
        "{:#}",
        merge(&[dir.join("u16"), dir.join("i32")], &out).unwrap_err()
    );
    assert!(
        e.contains("i32") && e.contains("u16") && e.contains("different dtypes"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        merge(&[dir.join("u16"), dir.join("nope")], &out).unwrap_err()
    );
    assert!(e.contains("nope.idx: no such file"), "{e}");
    let e = format!(
        "{:#}",
        merge(&[dir.join("u16"), out.clone()], &out).unwrap_err()
    );
    assert!(e.contains("is also an input"), "{e}");
    assert!(format!("{:#}", merge(&[], &out).unwrap_err()).contains("no input"));
    assert_eq!(std::fs::read(with_suffix(&out, ".bin")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
