//! The text of an HTML payload: its charset from a byte order mark, else the HTTP Content-Type
//! header, else the document's own `<meta charset>` / `http-equiv` declaration, else detection
//! (chardetng; UTF-8, Shift_JIS, EUC-JP, ISO-2022-JP and the rest encoding_rs knows), decoded with
//! encoding_rs. A declaration that decodes to garbage gives way to detection.

use chardetng::EncodingDetector;
use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};

/// How far into the document its `<meta>` declaration is looked for.
const META_BYTES: usize = 4096;
/// The detector sees the payload a chunk at a time until it has seen `DETECT_SIGNAL` bytes that
/// tell encodings apart (non-ASCII, or ISO-2022-JP's escapes), or `DETECT_BYTES` in all: chardetng
/// reads some 20 MB/s, and the markup before the text says nothing.
const DETECT_CHUNK: usize = 4096;
const DETECT_SIGNAL: usize = 2048;
const DETECT_BYTES: usize = 64 << 10;
const UNDECODABLE: &str = "charset: undecodable";

/// The decoded text and the name of the encoding used, or a skip reason for report.json
/// ("charset: undecodable" when too much of the payload is not valid in any candidate).
///
/// A byte order mark is trusted before the header (as browsers do); a text is garbage when more
/// than 1% of its characters are U+FFFD or control characters other than whitespace.
pub fn decode(payload: &[u8], http_content_type: Option<&str>) -> Result<(String, &'static str), &'static str> {
    let (bom, body) = match Encoding::for_bom(payload) {
        Some((enc, len)) => (Some(enc), &payload[len..]),
        None => (None, payload),
    };
    let declared = bom
        .or_else(|| http_content_type.and_then(|ct| charset_param(ct.as_bytes())))
        .or_else(|| meta_charset(&body[..body.len().min(META_BYTES)]));
    if let Some(enc) = declared {
        if let Some(text) = decode_clean(enc, body) {
            return Ok((text, enc.name()));
        }
    }
    let detected = detect(body);
    if declared != Some(detected) {
        if let Some(text) = decode_clean(detected, body) {
            return Ok((text, detected.name()));
        }
    }
    Err(UNDECODABLE)
}

/// `body` decoded with `enc`, unless the result is garbage.
fn decode_clean(enc: &'static Encoding, body: &[u8]) -> Option<String> {
    let (text, _) = enc.decode_without_bom_handling(body);
    (!garbled(&text)).then(|| text.into_owned())
}

fn garbled(text: &str) -> bool {
    let (mut all, mut bad) = (0usize, 0usize);
    for c in text.chars() {
        all += 1;
        if c == '\u{FFFD}' || (c.is_control() && !c.is_ascii_whitespace()) {
            bad += 1;
        }
    }
    bad * 100 > all
}

fn detect(body: &[u8]) -> &'static Encoding {
    // Valid UTF-8 is UTF-8 (what chardetng would say, much more slowly), unless it holds the
    // escapes of ISO-2022-JP, which is 7-bit.
    if memchr::memchr(0x1b, body).is_none() && Encoding::utf8_valid_up_to(body) == body.len() {
        return UTF_8;
    }
    let mut detector = EncodingDetector::new();
    let (mut fed, mut signal) = (0, 0);
    for chunk in body[..body.len().min(DETECT_BYTES)].chunks(DETECT_CHUNK) {
        fed += chunk.len();
        signal += chunk.iter().filter(|&&b| b >= 0x80 || b == 0x1b).count();
        detector.feed(chunk, fed == body.len());
        if signal >= DETECT_SIGNAL {
            break;
        }
    }
    detector.guess(None, true)
}

/// The encoding of the first `<meta>` tag that declares one (`charset=` alone or inside
/// `content=`); a document that could be read this far is not UTF-16, which means UTF-8.
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let mut rest = head;
    while let Some(at) = find_ci(rest, b"<meta") {
        let tag = &rest[at + 5..];
        let tag = &tag[..memchr::memchr(b'>', tag).unwrap_or(tag.len())];
        if find_ci(tag, b"charset").is_some() {
            let enc = charset_param(tag)?;
            return Some(if enc == UTF_16LE || enc == UTF_16BE { UTF_8 } else { enc });
        }
        rest = &rest[at + 5..];
    }
    None
}

/// The encoding named by `charset=label` in `text` (quotes optional); `None` when there is none or
/// encoding_rs does not know the label.
fn charset_param(text: &[u8]) -> Option<&'static Encoding> {
    let at = find_ci(text, b"charset")?;
    let value = text[at + 7..].trim_ascii_start().strip_prefix(b"=")?;
    let value = value.trim_ascii_start();
    let value = value.strip_prefix(b"\"").or_else(|| value.strip_prefix(b"'")).unwrap_or(value);
    let end = value.iter().position(|&b| matches!(b, b'"' | b'\'' | b';' | b'>' | b'/') || b.is_ascii_whitespace());
    Encoding::for_label(&value[..end.unwrap_or(value.len())])
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::{EUC_JP, ISO_2022_JP, SHIFT_JIS};

    const TEXT: &str = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\
        何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。\
        今日は東京の天気が良いので、公園を散歩してから図書館で本を読みました。";

    fn html(meta: &str) -> String {
        format!("<!DOCTYPE html><html><head>{meta}<title>日本語のページ</title></head><body><p>{TEXT}</p></body></html>")
    }

    fn encode(enc: &'static Encoding, text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = enc.encode(text);
        assert!(!unmappable);
        bytes.into_owned()
    }

    fn japanese() -> [&'static Encoding; 3] {
        [SHIFT_JIS, EUC_JP, ISO_2022_JP]
    }

    #[test]
    fn declared_in_the_http_header() {
        for enc in japanese() {
            let ct = format!("text/html; charset=\"{}\"", enc.name());
            let (text, name) = decode(&encode(enc, &html("")), Some(&ct)).unwrap();
            assert_eq!((text, name), (html(""), enc.name()));
        }
        for (label, enc) in [("x-sjis", SHIFT_JIS), ("euc-jp", EUC_JP), ("ISO-2022-JP", ISO_2022_JP), ("windows-31j", SHIFT_JIS)] {
            let ct = format!("text/html;charset={label}");
            assert_eq!(decode(&encode(enc, &html("")), Some(&ct)).unwrap().1, enc.name(), "{label}");
        }
    }

    #[test]
    fn declared_in_meta_only() {
        for enc in japanese() {
            for meta in [
                format!("<meta charset=\"{}\">", enc.name()),
                format!("<META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset={}\">", enc.name().to_lowercase()),
                format!("<meta charset={} />", enc.name()),
            ] {
                let page = html(&meta);
                assert_eq!(decode(&encode(enc, &page), Some("text/html")), Ok((page, enc.name())), "{meta}");
            }
        }
    }

    #[test]
    fn undeclared_is_detected() {
        // Short; after 20 KB of script; long enough that the detector stops early.
        let script = format!("<script>{}</script>", "var x = 1;\n".repeat(2000));
        for page in [html(""), html(&script), html(&TEXT.repeat(100))] {
            for enc in japanese().into_iter().chain([UTF_8]) {
                assert_eq!(decode(&encode(enc, &page), None), Ok((page.clone(), enc.name())), "{}", page.len());
            }
        }
    }

    #[test]
    fn utf8_with_and_without_bom() {
        let page = html("");
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(page.as_bytes());
        assert_eq!(decode(&bom, Some("text/html; charset=shift_jis")), Ok((page.clone(), "UTF-8")));
        assert_eq!(decode(page.as_bytes(), Some("text/html; charset=utf8")), Ok((page.clone(), "UTF-8")));
    }

    #[test]
    fn wrong_declaration_falls_back() {
        let page = html("");
        let sjis = encode(SHIFT_JIS, &page);
        // A label encoding_rs does not know, a wrong one, and a wrong meta.
        assert_eq!(decode(&sjis, Some("text/html; charset=x-no-such-charset")), Ok((page.clone(), "Shift_JIS")));
        assert_eq!(decode(&sjis, Some("text/html; charset=utf-8")), Ok((page.clone(), "Shift_JIS")));
        assert_eq!(decode(&encode(EUC_JP, &page), Some("text/html; charset=Shift_JIS")), Ok((page.clone(), "EUC-JP")));
        let meta = html("<meta charset=\"utf-8\">");
        assert_eq!(decode(&encode(SHIFT_JIS, &meta), None), Ok((meta, "Shift_JIS")));
    }

    #[test]
    fn random_bytes_are_undecodable() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let bytes: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(decode(&bytes, None), Err("charset: undecodable"));
        assert_eq!(decode(&bytes, Some("text/html; charset=Shift_JIS")), Err("charset: undecodable"));
        assert_eq!(decode(b"", None).map(|(t, _)| t), Ok(String::new()));
    }
}
