//! The raw documents `swallow prep` reads, and how they are divided between ranks.
//! Inputs may be glob patterns, expanded in sorted order ([`expand_inputs`]).
//!
//! Formats (each optionally compressed as `.gz` — multi-member too — or `.zst`, decompressed on the
//! fly; the kind is decided by the extension under the compression suffix): JSON Lines (any name not
//! ending in `.txt`): one JSON object per line, the document text under `field`; blank lines are
//! skipped. Plain text (`*.txt`): one document per paragraph block, blocks separated by one or more
//! blank (or whitespace-only) lines; the lines of a block are kept with their newlines.
//!
//! A bad line (invalid UTF-8, not JSON, not an object, no `field`, `field` not a string) is an error
//! naming `file:line`, or with [`BadLines::Skip`] is skipped and counted.
//!
//! [`Piece`]s: the inputs cut into contiguous parts at line starts, so that ranks can read them
//! independently and the concatenation of their documents, in piece order, is exactly the
//! documents of the inputs in order. Uncompressed JSONL files are split by bytes; compressed and
//! `.txt` files (whose paragraphs span lines) are read whole by one rank.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What to do with a line that is not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLines {
    /// Stop with an error naming the file and line (the default).
    Fail,
    /// Skip it and count it.
    Skip,
}

impl BadLines {
    /// From the `--skip-bad-lines` flag.
    pub fn skip_if(skip: bool) -> Self {
        if skip { BadLines::Skip } else { BadLines::Fail }
    }
}

/// A byte range of one input file: `start..end` of an uncompressed JSONL file (both line starts),
/// or the whole file (`range` = None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub path: PathBuf,
    pub range: Option<(u64, u64)>,
}

impl Piece {
    /// Bytes of the file this piece reads (compressed bytes for compressed files).
    pub fn bytes(&self) -> Result<u64> {
        match self.range {
            Some((s, e)) => Ok(e - s),
            None => Ok(file_len(&self.path)?),
        }
    }
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .len())
}

fn compression(p: &Path) -> Option<&'static str> {
    match p.extension().and_then(|e| e.to_str()) {
        Some("gz") => Some("gz"),
        Some("zst") => Some("zst"),
        _ => None,
    }
}

/// The file name under the compression suffix (`a.txt.gz` -> `a.txt`).
fn inner_name(p: &Path) -> PathBuf {
    match compression(p) {
        Some(_) => p.with_extension(""),
        None => p.to_path_buf(),
    }
}

fn is_txt(p: &Path) -> bool {
    inner_name(p).extension().is_some_and(|e| e == "txt")
}

/// The inputs with glob patterns (`*`, `?`, `[..]`, e.g. quoted for mpirun job scripts) expanded
/// in sorted order; a name that exists as given is taken literally; a pattern that matches nothing
/// is an error.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        let s = p.to_string_lossy();
        if p.exists() || !s.contains(['*', '?', '[']) {
            out.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = glob::glob(&s)
            .map_err(|e| anyhow!("--input {s:?} is not a valid glob pattern: {e}"))?
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("expanding --input {s:?}"))?;
        if found.is_empty() {
            bail!("--input {s:?} matches no files");
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Check that every input exists and is in a format prep reads.
pub fn check_inputs(inputs: &[PathBuf]) -> Result<()> {
    if inputs.is_empty() {
        bail!("no input files given");
    }
    for p in inputs {
        if !p.exists() {
            bail!("input file {} does not exist", p.display());
        }
        if !p.is_file() {
            bail!("input {} is not a regular file; pass the files (a shell glob such as DIR/*.jsonl)", p.display());
        }
        if p.extension().is_some_and(|e| e == "bz2" || e == "xz") {
            bail!(
                "input file {} is compressed with a format prep does not read (.gz and .zst are read directly); decompress it first",
                p.display()
            );
        }
        File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    }
    Ok(())
}

/// The pieces rank `rank` of `ranks` reads, in input order. The inputs' bytes are laid end to end
/// and cut into `ranks` equal byte ranges; a splittable file contributes the lines that start in a
/// rank's range, any other file goes whole to the rank whose range holds its first byte.
pub fn pieces_for_rank(inputs: &[PathBuf], rank: usize, ranks: usize) -> Result<Vec<Piece>> {
    let sizes = inputs.iter().map(|p| file_len(p)).collect::<Result<Vec<_>>>()?;
    let total: u64 = sizes.iter().sum();
    let cut = |r: usize| (total as u128 * r as u128 / ranks as u128) as u64;
    let (lo, hi) = (cut(rank), cut(rank + 1));
    let mut out = Vec::new();
    let mut base = 0u64;
    for (p, &size) in inputs.iter().zip(&sizes) {
        let (fs, fe) = (base, base + size);
        base = fe;
        if compression(p).is_some() || is_txt(p) {
            // Whole file to the rank whose range holds its first byte (the last rank for empty
            // files at the very end).
            let owner = if fs >= total { rank + 1 == ranks } else { fs >= lo && fs < hi };
            if owner {
                out.push(Piece { path: p.clone(), range: None });
            }
            continue;
        }
        if fe <= lo || fs >= hi {
            continue;
        }
        let s = line_start_at_or_after(p, lo.max(fs) - fs, size)?;
        let e = line_start_at_or_after(p, hi.min(fe) - fs, size)?;
        if s < e {
            out.push(Piece { path: p.clone(), range: Some((s, e)) });
        }
    }
    Ok(out)
}

/// The first line start at or after byte `at` of an uncompressed file of `size` bytes.
fn line_start_at_or_after(p: &Path, at: u64, size: u64) -> Result<u64> {
    if at == 0 || at >= size {
        return Ok(at.min(size));
    }
    let mut f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    f.seek(SeekFrom::Start(at - 1))?;
    let mut r = BufReader::new(f);
    let mut skipped = Vec::new();
    let n = r
        .read_until(b'\n', &mut skipped)
        .with_context(|| format!("cannot read {}", p.display()))?;
    Ok((at - 1 + n as u64).min(size))
}

/// Counts the bytes read through it (for the progress line).
struct Counting<'a, R> {
    inner: R,
    read: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Documents of one piece, in order. Returns the number of bad lines skipped (always 0 with
/// [`BadLines::Fail`]); `progress` grows by the file bytes read.
pub fn for_each_document(
    piece: &Piece,
    field: &str,
    bad: BadLines,
    progress: &AtomicU64,
    mut f: impl FnMut(String) -> Result<()>,
) -> Result<u64> {
    let path = &piece.path;
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let raw: Box<dyn Read> = match piece.range {
        Some((s, e)) => {
            file.seek(SeekFrom::Start(s))
                .with_context(|| format!("cannot read {}", path.display()))?;
            Box::new(Counting { inner: file.take(e - s), read: progress })
        }
        None => {
            let counted = Counting { inner: file, read: progress };
            match compression(path) {
                Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(counted)),
                Some(_) => Box::new(
                    zstd::stream::read::Decoder::new(counted)
                        .with_context(|| format!("{}: not a zstd stream", path.display()))?,
                ),
                None => Box::new(counted),
            }
        }
    };
    let mut reader = BufReader::with_capacity(1 << 20, raw);
    let txt = is_txt(path);
    let mut reading = Reading { piece, bad, skipped: 0 };
    let mut para = String::new();
    let mut buf = Vec::new();
    let mut k = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| anyhow!("{}: cannot read: {e}", reading.place(k + 1)))?;
        if n == 0 {
            break;
        }
        k += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l,
            Err(e) => {
                reading.bad_line(k, &format!("invalid UTF-8 ({e})"))?;
                continue;
            }
        };
        if txt {
            if line.trim().is_empty() {
                if !para.is_empty() {
                    f(std::mem::take(&mut para))?;
                }
            } else {
                if !para.is_empty() {
                    para.push('\n');
                }
                para.push_str(line);
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        match record_text(line, field) {
            Ok(text) => f(text)?,
            Err(why) => reading.bad_line(k, &why)?,
        }
    }
    if !para.is_empty() {
        f(para)?;
    }
    Ok(reading.skipped)
}

/// Where a piece is being read, for messages.
struct Reading<'a> {
    piece: &'a Piece,
    bad: BadLines,
    skipped: u64,
}

impl Reading<'_> {
    /// `file:line` of the piece's `k`-th line (1-based), counting the lines before the piece.
    fn place(&self, k: u64) -> String {
        let before = match self.piece.range {
            Some((s, _)) if s > 0 => count_lines(&self.piece.path, s).unwrap_or(0),
            _ => 0,
        };
        format!("{}:{}", self.piece.path.display(), before + k)
    }

    fn bad_line(&mut self, k: u64, why: &str) -> Result<()> {
        match self.bad {
            BadLines::Fail => Err(anyhow!(
                "{}: {why} (pass --skip-bad-lines to skip and count such lines)",
                self.place(k)
            )),
            BadLines::Skip => {
                if self.skipped == 0 {
                    log::warn!("skipping bad line {}: {why}; further ones are counted", self.place(k));
                }
                self.skipped += 1;
                Ok(())
            }
        }
    }
}

fn count_lines(p: &Path, upto: u64) -> Result<u64> {
    let mut r = BufReader::new(File::open(p)?.take(upto));
    let mut n = 0u64;
    loop {
        let b = r.fill_buf()?;
        if b.is_empty() {
            return Ok(n);
        }
        n += b.iter().filter(|&&c| c == b'\n').count() as u64;
        let len = b.len();
        r.consume(len);
    }
}

/// The text of one JSONL record, or why the line is not one.
fn record_text(line: &str, field: &str) -> std::result::Result<String, String> {
    match field_only(line, field) {
        Some(text) => Ok(text),
        None => record_text_or_why(line, field),
    }
}

/// The string under `field` of a JSON object, reading past the other values without building them
/// (most of a record's parse time otherwise); `None` for anything else, which
/// [`record_text_or_why`] then explains.
fn field_only(line: &str, field: &str) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::borrow::Cow;
    struct Field<'f>(&'f str);
    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
            let mut text = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == self.0 {
                    match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => text = Some(s),
                        _ => return Ok(None), // not a string: explained by the full parse
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(text)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let text = de.deserialize_map(Field(field)).ok()??;
    de.end().ok()?;
    Some(text)
}

fn record_text_or_why(line: &str, field: &str) -> std::result::Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let serde_json::Value::Object(mut obj) = v else {
        return Err(format!("expected a JSON object, found {}", kind(&v)));
    };
    match obj.remove(field) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(format!("field {field:?} is {}, expected a string", kind(&other))),
        None => {
            let keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
            Err(format!(
                "no field {field:?} (keys: {}); choose one with --field",
                keys.join(", ")
            ))
        }
    }
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
    use std::fs;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("swallow-prep-input-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn docs_of(pieces: &[Piece]) -> Vec<String> {
        let mut out = Vec::new();
        let n = AtomicU64::new(0);
        for p in pieces {
            for_each_document(p, "text", BadLines::Fail, &n, |d| {
                out.push(d);
                Ok(())
            })
            .unwrap();
        }
        out
    }

    /// For every rank count, the ranks' pieces together read every document once, in order.
    #[test]
    fn pieces_of_all_ranks_read_the_inputs_in_order() {
        let dir = tmpdir("pieces");
        let a = dir.join("a.jsonl");
        let lines: Vec<String> = (0..50)
            .map(|i| serde_json::json!({ "text": format!("doc {i} {}", "x".repeat(i * 7 % 23)) }).to_string())
            .collect();
        fs::write(&a, lines.join("\n") + "\n\n").unwrap();
        let t = dir.join("b.txt");
        fs::write(&t, "p1 l1\np1 l2\n\np2\n").unwrap();
        let e = dir.join("empty.jsonl");
        fs::write(&e, "").unwrap();
        let c = dir.join("c.jsonl");
        fs::write(&c, "{\"text\": \"last\"}").unwrap(); // no final newline
        let inputs = vec![a, e, t, c];
        let whole = docs_of(&inputs.iter().map(|p| Piece { path: p.clone(), range: None }).collect::<Vec<_>>());
        assert_eq!(whole.len(), 53);
        for ranks in 1..=7 {
            let mut all = Vec::new();
            let mut total = 0;
            for r in 0..ranks {
                let ps = pieces_for_rank(&inputs, r, ranks).unwrap();
                total += ps.iter().map(|p| p.bytes().unwrap()).sum::<u64>();
                all.extend(docs_of(&ps));
            }
            assert_eq!(all, whole, "{ranks} ranks");
            let sizes: u64 = inputs.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
            assert_eq!(total, sizes, "{ranks} ranks: pieces must cover every byte once");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn globs_expand_sorted_and_empty_ones_are_errors() {
        let dir = tmpdir("glob");
        for n in ["b.jsonl", "a.jsonl", "c.txt", "x[1].jsonl"] {
            fs::write(dir.join(n), "").unwrap();
        }
        let got = expand_inputs(&[dir.join("*.jsonl"), dir.join("c.txt"), dir.join("x[1].jsonl")]).unwrap();
        let want: Vec<PathBuf> =
            ["a.jsonl", "b.jsonl", "x[1].jsonl", "c.txt", "x[1].jsonl"].iter().map(|n| dir.join(n)).collect();
        assert_eq!(got, want);
        let e = format!("{:#}", expand_inputs(&[dir.join("*.zst")]).unwrap_err());
        assert!(e.contains("*.zst\" matches no files"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_lines_fail_with_their_line_or_are_counted() {
        let dir = tmpdir("bad");
        let p = dir.join("bad.jsonl");
        let mut bytes = b"{\"text\": \"ok\"}\n{\"text\": \"\xff\xfe\"}\nnot json\n[1]\n{\"body\": 1}\n{\"text\": 5}\n{\"text\": \"fine\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"text\": \"end\"}\n");
        fs::write(&p, &bytes).unwrap();
        let n = AtomicU64::new(0);
        let whole = Piece { path: p.clone(), range: None };
        let e = for_each_document(&whole, "text", BadLines::Fail, &n, |_| Ok(())).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("bad.jsonl:2: invalid UTF-8"), "{e}");
        assert!(e.contains("--skip-bad-lines"), "{e}");
        let mut docs = Vec::new();
        let skipped = for_each_document(&whole, "text", BadLines::Skip, &n, |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(skipped, 5);
        assert_eq!(docs, ["ok", "fine", "end"]);
        assert_eq!(n.load(Ordering::Relaxed), 2 * bytes.len() as u64);
        // In a piece that starts mid-file, the line number still counts from the file's start.
        let size = bytes.len() as u64;
        let start = line_start_at_or_after(&p, 20, size).unwrap();
        let piece = Piece { path: p.clone(), range: Some((start, size)) };
        let e = format!("{:#}", for_each_document(&piece, "text", BadLines::Fail, &n, |_| Ok(())).unwrap_err());
        assert!(e.contains("bad.jsonl:3: not a JSON object"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
