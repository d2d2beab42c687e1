//! WARC reading (WARC/1.0 and 1.1): the response records of a file that is gzip per record (Common
//! Crawl's form), gzip as a whole, or plain, each with its HTTP status line and headers split off.
//! Damage is skipped and counted by reason, never a crash: a truncated gzip member ends the file, a
//! malformed record header skips to the next record where the format allows it (the next gzip
//! member when the bad record began one, else the next line starting "WARC/1.").
//!
//! The file is streamed: a record's block is read only as far as the decision about it needs, and a
//! payload is buffered only when it is kept (at most `max_record_bytes`).

use anyhow::{Context, Result};
use flate2::bufread::{DeflateDecoder, GzDecoder, MultiGzDecoder, ZlibDecoder};
use memchr::memchr;
use serde::Deserialize;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Take};
use std::path::Path;

/// `[warc]` of the corpus config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarcConfig {
    /// Records whose payload is larger are skipped ("warc: record too large").
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

fn default_max_record_bytes() -> usize {
    10 << 20
}

impl Default for WarcConfig {
    fn default() -> Self {
        WarcConfig { max_record_bytes: default_max_record_bytes() }
    }
}

/// One HTTP response record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// WARC-Record-ID, without the angle brackets' surroundings changed (as in the file).
    pub record_id: String,
    /// WARC-Target-URI.
    pub target_uri: String,
    /// WARC-Date.
    pub date: String,
    /// The HTTP status code.
    pub http_status: u16,
    /// The HTTP Content-Type header, if any.
    pub content_type: Option<String>,
    /// The HTTP body (after the headers; chunked transfer encoding undone).
    pub payload: Vec<u8>,
}

/// A record (or the rest of a file) skipped: why, and the bytes it held as far as known.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// A stable reason name for report.json, e.g. "warc: truncated gzip".
    pub reason: &'static str,
    /// The record's bytes (WARC header and block, decompressed) as far as they were read.
    pub bytes: u64,
}

/// Buffer size for the file and for the decoded stream.
const BUF: usize = 64 << 10;
/// Most bytes a WARC or HTTP header block may have.
const MAX_HEAD: usize = 64 << 10;

/// The records of one WARC file, in file order. Non-response records (request, metadata,
/// warcinfo) are passed over silently; response records that are not HTTP or not HTML-like are
/// returned as `Skipped` with their reason.
pub struct WarcReader {
    r: BufReader<Source>,
    max_record_bytes: usize,
    /// The current record's WARC header block (reused).
    warc_head: Vec<u8>,
    /// The current response's HTTP header block (reused).
    http_head: Vec<u8>,
    /// `warc_head` already holds the version line of the next record (found by a resync).
    pending_version: bool,
    /// Where the current record began in the decoded stream.
    start: u64,
    done: bool,
}

impl WarcReader {
    /// Opens `path` (an unreadable file is an error naming it; an empty file yields nothing).
    pub fn open(path: &Path, cfg: &WarcConfig) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open WARC file {}", path.display()))?;
        let mut file = BufReader::with_capacity(BUF, file);
        let gzip = file.fill_buf().with_context(|| format!("cannot read WARC file {}", path.display()))?.starts_with(&[0x1f, 0x8b]);
        let input = if gzip { Input::Gzip(Some(GzDecoder::new(file))) } else { Input::Plain(file) };
        Ok(WarcReader {
            r: BufReader::with_capacity(BUF, Source { input, out: 0, member_start: 0 }),
            max_record_bytes: cfg.max_record_bytes,
            warc_head: Vec::new(),
            http_head: Vec::new(),
            pending_version: false,
            start: 0,
            done: false,
        })
    }

    /// Offset of the next unread byte in the decoded stream.
    fn pos(&self) -> u64 {
        self.r.get_ref().out - self.r.buffer().len() as u64
    }

    /// Whether the next unread byte is the first of a gzip member (call after a non-empty `fill_buf`).
    fn at_member_start(&self) -> bool {
        matches!(self.r.get_ref().input, Input::Gzip(_)) && self.pos() == self.r.get_ref().member_start
    }

    fn skipped(&self, reason: &'static str) -> Step {
        Step::Item(Err(Skipped { reason, bytes: self.pos() - self.start }))
    }

    /// Reads the next record; I/O (and gzip) errors end the file.
    fn record(&mut self) -> io::Result<Step> {
        let member_start = if self.pending_version {
            self.pending_version = false;
            false
        } else {
            self.start = self.pos();
            // Records end with CRLF CRLF; tolerate any run of line ends between them.
            loop {
                let buf = self.r.fill_buf()?;
                if buf.is_empty() {
                    return Ok(Step::End);
                }
                let n = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                let rest = buf.len() - n;
                self.r.consume(n);
                if rest > 0 {
                    break;
                }
            }
            self.start = self.pos();
            self.warc_head.clear();
            let at_member_start = self.at_member_start();
            read_line(&mut self.r, &mut self.warc_head, MAX_HEAD)?;
            at_member_start
        };
        match read_head(&mut self.r, &mut self.warc_head, b"WARC/1.")? {
            Head::Done => {}
            Head::Eof => return Ok(self.skipped("warc: truncated record")),
            Head::NoMagic | Head::TooLong => return self.resync(member_start),
        }
        let Some(len) = field(&self.warc_head, "Content-Length").and_then(parse_len) else {
            return self.resync(member_start);
        };
        let response = field(&self.warc_head, "WARC-Type").is_some_and(|t| t.eq_ignore_ascii_case(b"response"));
        let mut block = (&mut self.r).take(len);
        let http = if response { Some(http_response(&mut block, &mut self.http_head, self.max_record_bytes)?) } else { None };
        io::copy(&mut block, &mut io::sink())?;
        if block.limit() > 0 {
            return Ok(self.skipped("warc: truncated record"));
        }
        let Some(http) = http else { return Ok(Step::Pass) };
        let (content_type, payload) = match http {
            Ok(kept) => kept,
            Err(reason) => return Ok(self.skipped(reason)),
        };
        let text = |name: &str| field(&self.warc_head, name).map(lossy).unwrap_or_default();
        Ok(Step::Item(Ok(Record {
            record_id: text("WARC-Record-ID"),
            target_uri: text("WARC-Target-URI"),
            date: text("WARC-Date"),
            http_status: 200,
            content_type,
            payload,
        })))
    }

    /// After a malformed header: moves to the next gzip member if the bad record began one, else to
    /// the next line starting "WARC/1." (kept in `warc_head` for the next call), and reports the skip.
    fn resync(&mut self, member_start: bool) -> io::Result<Step> {
        if member_start {
            let n = self.r.buffer().len();
            self.r.consume(n);
            self.r.get_mut().finish_member()?;
            return Ok(self.skipped("warc: malformed header"));
        }
        loop {
            let line_start = self.pos();
            self.warc_head.clear();
            if read_line(&mut self.r, &mut self.warc_head, MAX_HEAD)? == 0 {
                return Ok(self.skipped("warc: malformed header"));
            }
            if self.warc_head.starts_with(b"WARC/1.") {
                self.pending_version = true;
                let bytes = line_start - self.start;
                self.start = line_start;
                return Ok(Step::Item(Err(Skipped { reason: "warc: malformed header", bytes })));
            }
        }
    }
}

impl Iterator for WarcReader {
    type Item = std::result::Result<Record, Skipped>;
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.record() {
                Ok(Step::Item(item)) => return Some(item),
                Ok(Step::Pass) => {}
                Ok(Step::End) => self.done = true,
                Err(e) => {
                    self.done = true;
                    let reason = match e.kind() {
                        io::ErrorKind::UnexpectedEof => "warc: truncated gzip",
                        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => "warc: corrupt gzip",
                        _ => "warc: read error",
                    };
                    return Some(Err(Skipped { reason, bytes: self.pos() - self.start }));
                }
            }
        }
        None
    }
}

/// What one step of reading gave.
enum Step {
    Item(std::result::Result<Record, Skipped>),
    /// A non-response record, passed over.
    Pass,
    End,
}

/// The decoded bytes of a WARC file. Each `read` returns bytes of one gzip member only, so the
/// reader above can tell where members begin.
struct Source {
    input: Input,
    /// Bytes handed out so far.
    out: u64,
    /// `out` when the current gzip member began.
    member_start: u64,
}

enum Input {
    Plain(BufReader<File>),
    /// `None` only once the file has ended.
    Gzip(Option<GzDecoder<BufReader<File>>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.input {
            Input::Plain(file) => file.read(buf)?,
            Input::Gzip(slot) => loop {
                let Some(gz) = slot else { break 0 };
                let n = gz.read(buf)?;
                if n > 0 || buf.is_empty() {
                    break n;
                }
                if gz.get_mut().fill_buf()?.is_empty() {
                    *slot = None;
                    break 0;
                }
                let file = slot.take().map(GzDecoder::into_inner);
                *slot = file.map(GzDecoder::new);
                self.member_start = self.out;
            },
        };
        self.out += n as u64;
        Ok(n)
    }
}

impl Source {
    /// Reads and discards the rest of the current gzip member.
    fn finish_member(&mut self) -> io::Result<()> {
        if let Input::Gzip(Some(gz)) = &mut self.input {
            self.out += io::copy(gz, &mut io::sink())?;
        }
        Ok(())
    }
}

/// How reading a header block ended.
enum Head {
    /// At the blank line that ends it.
    Done,
    /// The input ended first.
    Eof,
    /// The first line does not start as it must.
    NoMagic,
    /// Longer than `MAX_HEAD`.
    TooLong,
}

/// Reads a header block, through the blank line that ends it, appending to `head` (which may
/// already hold its first line); the first line must start with `magic`.
fn read_head(r: &mut impl BufRead, head: &mut Vec<u8>, magic: &[u8]) -> io::Result<Head> {
    if head.is_empty() && read_line(r, head, MAX_HEAD)? == 0 {
        return Ok(Head::Eof);
    }
    if !head.starts_with(magic) {
        return Ok(Head::NoMagic);
    }
    loop {
        let start = head.len();
        let n = read_line(r, head, MAX_HEAD)?;
        if n == 0 {
            return Ok(Head::Eof);
        }
        if head.len() - start < n {
            return Ok(Head::TooLong);
        }
        if head[start..].iter().all(|&b| b == b'\r' || b == b'\n') {
            head.truncate(start);
            return Ok(Head::Done);
        }
    }
}

/// Consumes one line (through its '\n', or to the end of input) and appends as much of it to `out`
/// as keeps `out` within `cap` bytes; returns the line's length (0 at the end of input).
fn read_line(r: &mut impl BufRead, out: &mut Vec<u8>, cap: usize) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (n, eol) = match memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        out.extend_from_slice(&buf[..n.min(cap.saturating_sub(out.len()))]);
        r.consume(n);
        total += n;
        if eol {
            return Ok(total);
        }
    }
}

/// The trimmed value of header `name` (case-insensitive) in a header block whose first line is
/// the version or status line.
fn field<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = memchr(b':', line)?;
        line[..colon].trim_ascii().eq_ignore_ascii_case(name.as_bytes()).then(|| line[colon + 1..].trim_ascii())
    })
}

fn parse_len(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// A kept response's Content-Type and payload, or why it is skipped.
type Response = std::result::Result<(Option<String>, Vec<u8>), &'static str>;

/// Reads a response block's HTTP header and, when the record is kept, its body. The caller
/// discards what is left of the block.
fn http_response<R: BufRead>(block: &mut Take<R>, head: &mut Vec<u8>, max: usize) -> io::Result<Response> {
    head.clear();
    match read_head(block, head, b"HTTP/")? {
        Head::Done => {}
        // A header that fills the whole block: a response without a body.
        Head::Eof if block.limit() == 0 => {}
        Head::Eof => return Ok(Err("warc: truncated record")),
        Head::NoMagic | Head::TooLong => return Ok(Err("warc: not http")),
    }
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    match status(status_line) {
        None => return Ok(Err("warc: not http")),
        Some(200) => {}
        Some(_) => return Ok(Err("warc: http status")),
    }
    let content_type = field(head, "Content-Type");
    if !html_like(content_type) {
        return Ok(Err("warc: not html"));
    }
    if block.limit() > max as u64 {
        return Ok(Err("warc: record too large"));
    }
    let mut payload = Vec::with_capacity(block.limit() as usize);
    block.read_to_end(&mut payload)?;
    if block.limit() > 0 {
        return Ok(Err("warc: truncated record"));
    }
    if field(head, "Transfer-Encoding").is_some_and(|te| contains_ci(te, b"chunked")) {
        // Some archives store the body already de-chunked under the original header: keep those.
        if let Some(n) = dechunk(&mut payload) {
            payload.truncate(n);
        }
    }
    let payload = match content_decode(payload, field(head, "Content-Encoding"), max) {
        Ok(p) => p,
        Err(reason) => return Ok(Err(reason)),
    };
    Ok(Ok((content_type.map(lossy), payload)))
}

/// The status code of an HTTP status line ("HTTP/1.1 200 OK").
fn status(line: &[u8]) -> Option<u16> {
    let mut parts = line.trim_ascii().split(|&b| b == b' ').filter(|p| !p.is_empty());
    parts.next()?;
    let code = parts.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(code.iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0')))
}

/// text/html, application/xhtml+xml, or no type at all.
fn html_like(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else { return true };
    let mime = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    mime.is_empty() || mime.eq_ignore_ascii_case(b"text/html") || mime.eq_ignore_ascii_case(b"application/xhtml+xml")
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Undoes chunked transfer coding in place and returns the body's new length; `None` when `body`
/// is not chunked. A body that ends at a chunk boundary without the last (empty) chunk is accepted.
fn dechunk(body: &mut [u8]) -> Option<usize> {
    let (mut read, mut write) = (0, 0);
    while read < body.len() {
        let eol = read + memchr(b'\n', &body[read..])?;
        let size = body[read..eol].split(|&b| b == b';').next()?.trim_ascii();
        if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()?;
        read = eol + 1;
        if size == 0 {
            break;
        }
        let end = read.checked_add(size).filter(|&end| end <= body.len())?;
        body.copy_within(read..end, write);
        write += size;
        read = end;
        if body[read..].starts_with(b"\r\n") {
            read += 2;
        } else if body[read..].starts_with(b"\n") {
            read += 1;
        } else if read < body.len() {
            return None;
        }
    }
    Some(write)
}

/// Undoes a Content-Encoding. Common Crawl stores payloads decoded, so a "gzip" payload without the
/// gzip magic is taken as it is.
fn content_decode(payload: Vec<u8>, encoding: Option<&[u8]>, max: usize) -> std::result::Result<Vec<u8>, &'static str> {
    let encoding = encoding.unwrap_or_default();
    let is = |name: &[u8]| encoding.eq_ignore_ascii_case(name);
    if encoding.is_empty() || is(b"identity") || ((is(b"gzip") || is(b"x-gzip")) && !payload.starts_with(&[0x1f, 0x8b])) {
        Ok(payload)
    } else if is(b"gzip") || is(b"x-gzip") {
        inflate(MultiGzDecoder::new(&payload[..]), max)
    } else if is(b"deflate") {
        // Zlib-wrapped as the RFC says, or raw deflate as some servers send it.
        inflate(ZlibDecoder::new(&payload[..]), max).or_else(|_| inflate(DeflateDecoder::new(&payload[..]), max))
    } else {
        Err("warc: content encoding")
    }
}

/// Reads a decoder to its end, keeping no more than `max` bytes.
fn inflate(decoder: impl Read, max: usize) -> std::result::Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    decoder.take(max as u64 + 1).read_to_end(&mut out).map_err(|_| "warc: content encoding")?;
    if out.len() > max {
        return Err("warc: record too large");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;
    use std::path::PathBuf;

    /// One WARC record with CRLF line ends and the two CRLFs after its block.
    fn warc(version: &str, kind: &str, id: u32, block: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "{version}\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:{id}>\r\nWARC-Target-URI: http://example.jp/{id}\r\n\
             WARC-Date: 2024-05-0{id}T00:00:00Z\r\nContent-Type: application/http; msgtype={kind}\r\nContent-Length: {}\r\n\r\n",
            block.len()
        )
        .into_bytes();
        r.extend_from_slice(block);
        r.extend_from_slice(b"\r\n\r\n");
        r
    }

    fn http(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut b = format!("HTTP/1.1 {status}\r\n{headers}Server: test\r\n\r\n").into_bytes();
        b.extend_from_slice(body);
        b
    }

    fn page(id: u32) -> Vec<u8> {
        let body = format!("<html><body>page {id}</body></html>");
        warc("WARC/1.0", "response", id, &http("200 OK", "Content-Type: text/html; charset=UTF-8\r\n", body.as_bytes()))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Each record its own gzip member, as Common Crawl writes them.
    fn gzip_each(records: &[Vec<u8>]) -> Vec<u8> {
        records.iter().flat_map(|r| gzip(r)).collect()
    }

    fn read_with(name: &str, bytes: &[u8], cfg: &WarcConfig) -> Vec<std::result::Result<Record, Skipped>> {
        let path = std::env::temp_dir().join(format!("swallow-warc-test-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let items = WarcReader::open(&path, cfg).unwrap().collect();
        std::fs::remove_file(&path).unwrap();
        items
    }

    fn read(name: &str, bytes: &[u8]) -> Vec<std::result::Result<Record, Skipped>> {
        read_with(name, bytes, &WarcConfig::default())
    }

    fn reasons(items: &[std::result::Result<Record, Skipped>]) -> Vec<&'static str> {
        items.iter().map(|i| i.as_ref().map_or_else(|s| s.reason, |_| "ok")).collect()
    }

    fn payload(item: &std::result::Result<Record, Skipped>) -> &[u8] {
        &item.as_ref().unwrap().payload
    }

    #[test]
    fn only_responses_are_returned_with_their_fields_in_every_container() {
        let body = "<html><body>こんにちは</body></html>".as_bytes();
        let records = vec![
            warc("WARC/1.0", "warcinfo", 1, b"software: test\r\n"),
            warc("WARC/1.0", "request", 2, b"GET / HTTP/1.1\r\nHost: example.jp\r\n\r\n"),
            warc("WARC/1.0", "response", 3, &http("200 OK", "Content-Type: text/html; charset=UTF-8\r\n", body)),
            warc("WARC/1.0", "metadata", 4, b"fetchTimeMs: 12\r\n"),
        ];
        let plain = records.concat();
        for (name, bytes) in [("plain", plain.clone()), ("per-record", gzip_each(&records)), ("whole", gzip(&plain))] {
            let items = read(name, &bytes);
            assert_eq!(
                items,
                vec![Ok(Record {
                    record_id: "<urn:uuid:3>".into(),
                    target_uri: "http://example.jp/3".into(),
                    date: "2024-05-03T00:00:00Z".into(),
                    http_status: 200,
                    content_type: Some("text/html; charset=UTF-8".into()),
                    payload: body.to_vec(),
                })],
                "{name}"
            );
        }
    }

    #[test]
    fn warc_1_1_lf_line_ends_and_lowercase_names() {
        let v11 = warc("WARC/1.1", "response", 1, &http("200 OK", "", b"<p>one</p>"));
        let lf = b"WARC/1.0\nwarc-type: Response\ncontent-length: 27\nwarc-target-uri: http://lf.jp/\n\nHTTP/1.0 200 OK\n\n<p>two</p>\n\n";
        let items = read("v11", &[v11, lf.to_vec()].concat());
        assert_eq!(reasons(&items), ["ok", "ok"]);
        assert_eq!(payload(&items[0]), b"<p>one</p>");
        assert_eq!(payload(&items[1]), b"<p>two</p>");
        let second = items[1].as_ref().unwrap();
        assert_eq!((second.target_uri.as_str(), second.content_type.as_deref()), ("http://lf.jp/", None));
    }

    #[test]
    fn chunked_body_is_undone() {
        let body = b"5\r\n<p>he\r\n8;ext=1\r\nllo</p>\n\r\n0\r\nExpires: never\r\n\r\n";
        let rec = warc("WARC/1.0", "response", 1, &http("200 OK", "Transfer-Encoding: Chunked\r\n", body));
        let items = read("chunked", &rec);
        assert_eq!(payload(&items[0]), b"<p>hello</p>\n");
        // Stored already de-chunked under the original header: kept as it is.
        let rec = warc("WARC/1.0", "response", 1, &http("200 OK", "Transfer-Encoding: chunked\r\n", b"<p>plain</p>"));
        assert_eq!(payload(&read("dechunked", &rec)[0]), b"<p>plain</p>");
    }

    #[test]
    fn http_level_skips_count_the_whole_record() {
        let records = vec![
            warc("WARC/1.0", "response", 1, &http("404 Not Found", "Content-Type: text/html\r\n", b"<p>gone</p>")),
            warc("WARC/1.0", "response", 2, &http("200 OK", "Content-Type: image/png\r\n", b"\x89PNG....")),
            warc("WARC/1.0", "response", 3, b"this is not an HTTP response"),
            warc("WARC/1.0", "response", 4, &http("200 OK", "Content-Encoding: br\r\n", b"\x0b\x02\x80")),
            warc("WARC/1.0", "response", 5, &http("200 OK", "Content-Type: application/xhtml+xml\r\n", b"<p>x</p>")),
            page(6),
        ];
        let items = read("http", &records.concat());
        assert_eq!(
            reasons(&items),
            ["warc: http status", "warc: not html", "warc: not http", "warc: content encoding", "ok", "ok"]
        );
        for (item, rec) in items.iter().zip(&records).take(4) {
            // The record without the two CRLFs that end it.
            assert_eq!(item.as_ref().unwrap_err().bytes, rec.len() as u64 - 4);
        }
    }

    #[test]
    fn gzip_content_encoding_is_undone() {
        let rec = warc("WARC/1.0", "response", 1, &http("200 OK", "Content-Encoding: gzip\r\n", &gzip(b"<p>zipped</p>")));
        assert_eq!(payload(&read("content-gzip", &rec)[0]), b"<p>zipped</p>");
        // Decoded by the crawler but the header kept: taken as it is.
        let rec = warc("WARC/1.0", "response", 1, &http("200 OK", "Content-Encoding: gzip\r\n", b"<p>plain</p>"));
        assert_eq!(payload(&read("content-plain", &rec)[0]), b"<p>plain</p>");
    }

    #[test]
    fn too_large_payload_is_skipped_and_the_next_record_read() {
        let cfg = WarcConfig { max_record_bytes: 100 };
        let big = warc("WARC/1.0", "response", 1, &http("200 OK", "", &[b'a'; 101]));
        let exact = warc("WARC/1.0", "response", 2, &http("200 OK", "", &[b'b'; 100]));
        let items = read_with("large", &[big.clone(), exact, page(3)].concat(), &cfg);
        assert_eq!(reasons(&items), ["warc: record too large", "ok", "ok"]);
        assert_eq!(items[0].as_ref().unwrap_err().bytes, big.len() as u64 - 4);
        assert_eq!(payload(&items[1]), [b'b'; 100]);
        assert_eq!(payload(&items[2]), b"<html><body>page 3</body></html>");
    }

    #[test]
    fn truncated_gzip_member_ends_the_file_after_the_complete_records() {
        let records: Vec<_> = (1..=4).map(page).collect();
        let members: Vec<_> = records.iter().map(|r| gzip(r)).collect();
        let cut = [members[0].clone(), members[1].clone(), members[2][..members[2].len() / 2].to_vec()].concat();
        let items = read("trunc-member", &cut);
        assert_eq!(reasons(&items), ["ok", "ok", "warc: truncated gzip"]);
        assert_eq!(payload(&items[1]), b"<html><body>page 2</body></html>");

        let whole = gzip(&records.concat());
        let items = read("trunc-whole", &whole[..whole.len() - 20]);
        assert_eq!(reasons(&items).last(), Some(&"warc: truncated gzip"));
        assert!(items.len() >= 2 && items[..items.len() - 1].iter().all(Result::is_ok), "{:?}", reasons(&items));
    }

    #[test]
    fn malformed_header_in_a_plain_file_resyncs_at_the_next_version_line() {
        let bad_length = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 12x\r\n\r\nHTTP/1.1 200 OK\r\n\r\n<p>bad</p>\r\n\r\n";
        let no_version = b"garbage line\r\nmore garbage\r\n\r\n";
        let items = read("malformed", &[page(1), bad_length.to_vec(), page(2), no_version.to_vec(), page(3)].concat());
        assert_eq!(reasons(&items), ["ok", "warc: malformed header", "ok", "warc: malformed header", "ok"]);
        assert_eq!(items[1].as_ref().unwrap_err().bytes, bad_length.len() as u64);
        assert_eq!(payload(&items[4]), b"<html><body>page 3</body></html>");
    }

    #[test]
    fn malformed_header_in_a_gzip_member_skips_the_member() {
        // The bad record's block holds a WARC record of its own: only member boundaries are trusted.
        let mut bad = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: -1\r\n\r\n".to_vec();
        bad.extend_from_slice(&page(9));
        let items = read("malformed-gz", &gzip_each(&[page(1), bad, page(2)]));
        assert_eq!(reasons(&items), ["ok", "warc: malformed header", "ok"]);
        assert_eq!(payload(&items[2]), b"<html><body>page 2</body></html>");
    }

    #[test]
    fn truncated_plain_record_is_skipped() {
        let rec = page(2);
        let items = read("trunc-plain", &[page(1), rec[..rec.len() - 10].to_vec()].concat());
        assert_eq!(reasons(&items), ["ok", "warc: truncated record"]);
    }

    #[test]
    fn empty_file_yields_nothing_and_unreadable_path_is_named() {
        assert!(read("empty", b"").is_empty());
        assert!(read("blank", b"\r\n\r\n").is_empty());
        let missing = PathBuf::from("/nonexistent/dir/CC-MAIN-x.warc.gz");
        let err = WarcReader::open(&missing, &WarcConfig::default()).err().unwrap();
        assert!(format!("{err:#}").contains("/nonexistent/dir/CC-MAIN-x.warc.gz"), "{err:#}");
    }

    #[test]
    fn dechunk_rejects_what_is_not_chunked() {
        assert_eq!(dechunk(&mut b"<html>".to_vec()), None);
        assert_eq!(dechunk(&mut b"ff\r\nshort".to_vec()), None);
        let mut ok = b"3\r\nabc\r\n".to_vec();
        assert_eq!(dechunk(&mut ok), Some(3));
        assert_eq!(&ok[..3], b"abc");
    }
}
