//! The guard before parsing: how deep a page's tags nest, estimated from the raw HTML in one pass.
//! html5ever takes time quadratic in the depth of unclosed elements (20,000 nested `<div>`s: 2 s,
//! 40,000: 8 s), so a page deeper than [`MAX_NESTING`] is removed before extraction instead of
//! stalling its thread; real pages nest a few dozen levels.
//!
//! The estimate: a start tag opens a level, an end tag closes one. Void elements (`<br>`, `<img>`
//! ...), comments, doctypes, and the elements whose end tag HTML lets a page omit (`<p>`, `<li>`,
//! `<td>` ..., which the parser closes by itself) open nothing; the content of `<script>`,
//! `<style>`, `<textarea>` and `<title>` is text. A trailing slash closes nothing (`<div/>` stays
//! open in HTML, as the parser has it).

/// Deepest estimated nesting a page may have.
pub const MAX_NESTING: usize = 2_000;

/// Elements that never have content.
const VOID: [&str; 14] = ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"];

/// Elements whose end tag may be omitted (the parser closes them when the next one starts).
const OPTIONAL_END: [&str; 17] = [
    "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "rb", "rt", "rp", "thead", "tbody", "tfoot", "html", "body",
];

/// Elements whose content is raw text up to their end tag.
const RAW_TEXT: [&str; 4] = ["script", "style", "textarea", "title"];

/// The deepest nesting of `html`'s tags, estimated (see the module header).
pub fn nesting_depth(html: &str) -> usize {
    let bytes = html.as_bytes();
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, 0usize);
    while let Some(lt) = memchr::memchr(b'<', &bytes[at..]) {
        let start = at + lt + 1;
        if bytes[start..].starts_with(b"!--") {
            at = find(bytes, start + 3, b"-->").map_or(bytes.len(), |i| i + 3);
            continue;
        }
        let closing = bytes.get(start) == Some(&b'/');
        let name_start = start + usize::from(closing);
        let name_len = bytes[name_start..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
        let Some(gt) = memchr::memchr(b'>', &bytes[name_start..]) else { break };
        let end = name_start + gt;
        at = end + 1;
        if name_len == 0 || !bytes[name_start].is_ascii_alphabetic() {
            continue; // a comment, doctype, processing instruction or a stray '<'
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        if closing {
            if !VOID.contains(&name.as_str()) && !OPTIONAL_END.contains(&name.as_str()) {
                depth = depth.saturating_sub(1);
            }
            continue;
        }
        if RAW_TEXT.contains(&name.as_str()) {
            // Skip to the end tag: the text inside is not markup.
            let close = format!("</{name}");
            let mut from = at;
            at = loop {
                let Some(k) = memchr::memchr(b'<', &bytes[from..]) else { break bytes.len() };
                let p = from + k;
                if bytes[p..].len() >= close.len() && bytes[p..p + close.len()].eq_ignore_ascii_case(close.as_bytes()) {
                    break p;
                }
                from = p + 1;
            };
            continue;
        }
        if !VOID.contains(&name.as_str()) && !OPTIONAL_END.contains(&name.as_str()) {
            depth += 1;
            deepest = deepest.max(depth);
        }
    }
    deepest
}

/// The first `needle` in `bytes` from `from` on.
fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(&bytes[from..], needle).map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_what_the_parser_keeps_open() {
        assert_eq!(nesting_depth("<html><body><div><div><span>x</span></div></div></body></html>"), 3);
        // Omitted end tags, void and self-closing elements, comments and raw text open nothing.
        let flat = "<!DOCTYPE html><html><body><p>a<p>b<li>c<li>d<br><img src=x><br/><!-- <div><div> --></body>";
        assert_eq!(nesting_depth(flat), 0);
        assert_eq!(nesting_depth("<div/><div/>"), 2, "HTML keeps <div/> open");
        assert_eq!(nesting_depth("<div><script>if (a<b && c<d) { x = '<div><div><div>'; }</script></div>"), 1);
        assert_eq!(nesting_depth("<DIV><Div></DIV></div>"), 2);
        // Unclosed divs nest; closed ones do not, however many.
        assert_eq!(nesting_depth(&"<div>".repeat(50_000)), 50_000);
        assert_eq!(nesting_depth(&"<div>x</div>".repeat(50_000)), 1);
        // A '<' that starts no tag, and a tag never closed by '>'.
        assert_eq!(nesting_depth("a < b <3 <div"), 0);
        assert_eq!(nesting_depth(""), 0);
    }
}
