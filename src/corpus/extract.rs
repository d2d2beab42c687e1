//! From HTML to main text: the cheap Japanese pre-check that runs before any parsing (a `lang="ja"`
//! on the document, or kana in the `<title>`), and the extraction itself (scripts, styles,
//! navigation and boilerplate dropped; block elements become line breaks).
//!
//! Extraction rules, in the order they apply:
//! - Dropped with everything inside: non-text elements (script, style, svg, iframe, form controls,
//!   ruby readings `<rt>`/`<rp>` ...), page furniture (nav, header, footer, aside), elements with
//!   `hidden` or `aria-hidden="true"`, ARIA roles navigation, banner, contentinfo, complementary,
//!   search and menu, and, less surely, `<form>`s and elements whose class or id has a boilerplate
//!   part ([`BOILERPLATE_PARTS`]: a class token split at `-`, `_` and camelCase humps, so "site-footer"
//!   and "globalNav" match but "shadow" does not; tokens like "has-sidebar" or "no-ads" are states,
//!   not parts of the page). The less sure drops spare an element that holds half or more of the
//!   visible text of the subtree being read: that is a layout wrapper (ASP.NET's page-wide form,
//!   `<div class="l-main has-side">`), not boilerplate.
//! - The root: the largest (by visible text) `<main>`, `<article>` or `role="main"` element, when it
//!   holds at least a quarter of the body's visible text; else `<body>`.
//! - Block elements end lines, `<br>` too, table cells are separated by a space; inside a line runs of
//!   whitespace become one space, except that a run with a line break between two CJK characters
//!   becomes nothing (Japanese sources wrap lines anywhere: "日本語の\n文章" is "日本語の文章"); in
//!   `<pre>` each source line is a line.
//! - Lists of links: a line with letters inside `<a href>` and none outside is link text; two or more
//!   such lines in a row (menus, tag lists, "related articles", pagers) are dropped, a single one is
//!   kept. (`<a>` without href is an anchor: XHTML-style `<a id="x"/>` stays open in HTML over all
//!   that follows.)

use scraper::node::Element;
use scraper::{ElementRef, Html};
use std::collections::HashMap;

/// Bytes of the raw HTML searched for the `<html>` tag and the `<title>`: a constant cost per page.
const HTML_TAG_WINDOW: usize = 8 * 1024;
const TITLE_WINDOW: usize = 64 * 1024;

/// Whether the raw HTML is worth parsing as a Japanese page: `lang` or `xml:lang` of the `<html>` tag
/// is `ja` (or `ja-*`), or the `<title>` holds at least two kana (U+3040–U+30FF, as UTF-8 or as
/// numeric character references).
pub fn looks_japanese(html: &str) -> bool {
    let bytes = html.as_bytes();
    let head = &bytes[..bytes.len().min(HTML_TAG_WINDOW)];
    if let Some(start) = find_tag(head, b"html", 0) {
        let end = memchr::memchr(b'>', &head[start..]).map_or(head.len(), |i| start + i);
        if lang_is_ja(&head[start..end]) {
            return true;
        }
    }
    let window = &bytes[..bytes.len().min(TITLE_WINDOW)];
    let Some(open) = find_tag(window, b"title", 0) else { return false };
    let Some(gt) = memchr::memchr(b'>', &window[open..]) else { return false };
    let start = open + gt + 1;
    let end = find_tag(window, b"/title", start).map_or(window.len(), |i| i - b"</title".len());
    kana_count(&window[start..end.max(start)]) >= 2
}

/// The index just past `<name` (ASCII case-insensitive) at or after `from`, where `name` is followed
/// by whitespace, `>`, `/` or the end of `hay`.
fn find_tag(hay: &[u8], name: &[u8], from: usize) -> Option<usize> {
    let hay_from = hay.get(from..)?;
    memchr::memchr_iter(b'<', hay_from).map(|i| from + i + 1).find_map(|at| {
        let end = at + name.len();
        let matches = hay.get(at..end)?.eq_ignore_ascii_case(name);
        let delimited = hay.get(end).is_none_or(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/');
        (matches && delimited).then_some(end)
    })
}

/// Whether the attributes of a tag (the bytes between its name and its `>`) hold `lang` or `xml:lang`
/// with a Japanese value; quotes optional.
fn lang_is_ja(attrs: &[u8]) -> bool {
    let mut i = 0;
    let skip = |i: &mut usize, pred: fn(u8) -> bool| {
        while *i < attrs.len() && pred(attrs[*i]) {
            *i += 1;
        }
    };
    while i < attrs.len() {
        skip(&mut i, |b| b.is_ascii_whitespace() || b == b'/');
        let name_start = i;
        skip(&mut i, |b| !b.is_ascii_whitespace() && b != b'=' && b != b'/');
        let name = &attrs[name_start..i];
        skip(&mut i, |b| b.is_ascii_whitespace());
        if attrs.get(i) != Some(&b'=') {
            if i == name_start {
                i += 1; // a stray byte; never loop in place
            }
            continue;
        }
        i += 1;
        skip(&mut i, |b| b.is_ascii_whitespace());
        let value = match attrs.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let start = i + 1;
                let len = memchr::memchr(q, &attrs[start..]).unwrap_or(attrs.len() - start);
                i = start + len + 1;
                &attrs[start..start + len]
            }
            _ => {
                let start = i;
                skip(&mut i, |b| !b.is_ascii_whitespace());
                &attrs[start..i]
            }
        };
        if name.eq_ignore_ascii_case(b"lang") || name.eq_ignore_ascii_case(b"xml:lang") {
            let value = value.trim_ascii();
            if value.len() >= 2
                && value[..2].eq_ignore_ascii_case(b"ja")
                && matches!(value.get(2), None | Some(b'-' | b'_'))
            {
                return true;
            }
        }
    }
    false
}

/// Kana (U+3040–U+30FF) in raw HTML text: UTF-8 `E3 81..83 xx`, plus `&#NNNNN;` / `&#xHHHH;`.
fn kana_count(text: &[u8]) -> usize {
    let utf8 = text.windows(2).filter(|w| w[0] == 0xE3 && (0x81..=0x83).contains(&w[1])).count();
    let refs = memchr::memmem::find_iter(text, b"&#")
        .filter(|&at| {
            let rest = &text[at + 2..];
            let (digits, radix) = match rest.first() {
                Some(b'x' | b'X') => (&rest[1..], 16),
                _ => (rest, 10),
            };
            let len = digits.iter().take(8).take_while(|b| b.is_ascii_hexdigit()).count();
            std::str::from_utf8(&digits[..len])
                .ok()
                .and_then(|d| u32::from_str_radix(d, radix).ok())
                .is_some_and(|c| (0x3040..=0x30FF).contains(&c))
        })
        .count();
    utf8 + refs
}

/// A page's main text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extracted {
    pub title: String,
    /// Paragraphs and other blocks, one per line.
    pub text: String,
}

/// The page's title and main text (see the module header for the rules).
pub fn main_text(html: &str) -> Extracted {
    let doc = Html::parse_document(html);
    let mut elements = doc.tree.root().descendants().filter_map(ElementRef::wrap);
    let title = elements
        .clone()
        .find(|e| e.value().name() == "title")
        .map(|t| collapse_whitespace(t.text()))
        .unwrap_or_default();
    let body = elements.find(|e| e.value().name() == "body");
    let Some(body) = body.or_else(|| doc.tree.root().children().find_map(ElementRef::wrap)) else {
        return Extracted { title, text: String::new() };
    };
    let sizes = Sizes::of(body);
    let mut best: Option<ElementRef> = None;
    walk_kept(body, &sizes, |step| {
        if let Step::Open(e) = step {
            if is_main_candidate(e.value()) && best.is_none_or(|b| sizes.get(e) > sizes.get(b)) {
                best = Some(e);
            }
        }
    });
    let root = best.filter(|b| sizes.get(*b) * 4 >= sizes.get(body)).unwrap_or(body);
    Extracted { title, text: LineWriter::read(root, &sizes) }
}

fn collapse_whitespace<'a>(pieces: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for word in pieces.flat_map(str::split_whitespace) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn is_main_candidate(el: &Element) -> bool {
    matches!(el.name(), "main" | "article") || has_token(el.attr("role"), &["main"])
}

/// Elements never read, with all they hold.
fn always_dropped(el: &Element) -> bool {
    const TAGS: &[&str] = &[
        "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas",
        "video", "audio", "head", "title", "nav", "header", "footer", "aside", "button", "select",
        "option", "textarea", "datalist", "dialog", "rt", "rp",
    ];
    const ROLES: &[&str] = &["navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"];
    TAGS.contains(&el.name())
        || el.attr("hidden").is_some()
        || el.attr("aria-hidden").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || has_token(el.attr("role"), ROLES)
}

fn has_token(attr: Option<&str>, tokens: &[&str]) -> bool {
    attr.is_some_and(|a| a.split_ascii_whitespace().any(|t| tokens.iter().any(|k| t.eq_ignore_ascii_case(k))))
}

/// Parts of a class or id that mark page furniture rather than content (Japanese sites' own words
/// among them: navi, pankuzu for breadcrumbs, bnr for banner, side).
const BOILERPLATE_PARTS: &[&str] = &[
    "nav", "navi", "navbar", "navigation", "navheader", "navfooter", "gnav", "gnavi", "menu", "toc", "header",
    "footer", "sidebar", "side", "sidenav", "breadcrumb", "breadcrumbs", "pankuzu", "comment", "comments",
    "share", "sharing", "social", "sns", "ad", "ads", "advert", "advertisement", "sponsor", "sponsored",
    "banner", "bnr", "cookie", "cookies", "consent", "pagination", "pager", "paging", "pagetop", "related",
    "recommend", "ranking", "widget", "toolbar", "popup", "modal", "copyright",
];

/// First parts that make a class token a state ("has-sidebar", "is-menu-open"), not a part name.
const STATE_PREFIXES: &[&str] = &["has", "is", "no", "with", "show", "hide", "js"];

/// `<form>`, or a class/id token with a boilerplate part.
fn looks_boilerplate(el: &Element) -> bool {
    el.name() == "form"
        || [el.attr("class"), el.attr("id")]
            .into_iter()
            .flatten()
            .flat_map(str::split_ascii_whitespace)
            .any(token_is_boilerplate)
}

fn token_is_boilerplate(token: &str) -> bool {
    let mut parts = token.split(['-', '_']).flat_map(camel_humps).filter(|p| !p.is_empty()).peekable();
    let is_state =
        parts.peek().is_some_and(|first| STATE_PREFIXES.iter().any(|s| first.eq_ignore_ascii_case(s)));
    !is_state && parts.any(|p| BOILERPLATE_PARTS.iter().any(|b| p.eq_ignore_ascii_case(b)))
}

/// "globalNavMenu" as "global", "Nav", "Menu".
fn camel_humps(word: &str) -> impl Iterator<Item = &str> {
    let bytes = word.as_bytes();
    let cuts = (1..bytes.len())
        .filter(move |&i| bytes[i - 1].is_ascii_lowercase() && bytes[i].is_ascii_uppercase());
    let mut start = 0;
    cuts.chain(std::iter::once(bytes.len())).map(move |cut| {
        let part = &word[start..cut];
        start = cut;
        part
    })
}

/// One step of a walk: an element opening, a text, an element closing.
enum Step<'a> {
    Open(ElementRef<'a>),
    Text(&'a str),
    Close(ElementRef<'a>),
}

/// Walks the elements and texts under `root` in document order, `root` included, with an explicit
/// stack (deep markup cannot overflow the thread's). `visit` returns, for an `Open`, whether to go
/// into the element; one it refuses gets no `Close`. Other nodes (comments, ...) are not visited.
fn walk<'a>(root: ElementRef<'a>, mut visit: impl FnMut(Step<'a>) -> bool) {
    if !visit(Step::Open(root)) {
        return;
    }
    let mut stack = vec![(root, root.children())];
    while let Some((el, children)) = stack.last_mut() {
        let el = *el;
        match children.next() {
            None => {
                stack.pop();
                visit(Step::Close(el));
            }
            Some(child) => {
                if let Some(text) = child.value().as_text() {
                    visit(Step::Text(text));
                } else if let Some(child) = ElementRef::wrap(child) {
                    if visit(Step::Open(child)) {
                        stack.push((child, child.children()));
                    }
                }
            }
        }
    }
}

/// Visible text size (non-whitespace characters outside [`always_dropped`] elements) of every element
/// under a root, the root included; elements are keyed by their address in the parsed tree, which
/// stays put for the whole extraction.
struct Sizes(HashMap<*const Element, usize>);

impl Sizes {
    fn of(root: ElementRef) -> Sizes {
        let mut sizes = HashMap::new();
        let mut open: Vec<usize> = Vec::new();
        walk(root, |step| {
            match step {
                Step::Open(e) => {
                    if e != root && always_dropped(e.value()) {
                        return false;
                    }
                    open.push(0);
                }
                Step::Text(t) => {
                    if let Some(top) = open.last_mut() {
                        *top += t.chars().filter(|c| !c.is_whitespace()).count();
                    }
                }
                Step::Close(e) => {
                    let size = open.pop().unwrap_or(0);
                    if let Some(parent) = open.last_mut() {
                        *parent += size;
                    }
                    sizes.insert(e.value() as *const Element, size);
                }
            }
            true
        });
        Sizes(sizes)
    }

    fn get(&self, e: ElementRef) -> usize {
        self.0.get(&(e.value() as *const Element)).copied().unwrap_or(0)
    }
}

/// [`walk`] under `root` (itself never dropped), leaving out what the drop rules of the module
/// header drop.
fn walk_kept<'a>(root: ElementRef<'a>, sizes: &Sizes, mut visit: impl FnMut(Step<'a>)) {
    let whole = sizes.get(root);
    walk(root, |step| {
        if let Step::Open(e) = step {
            let el = e.value();
            let boilerplate = looks_boilerplate(el) && sizes.get(e) * 2 < whole;
            if e != root && (always_dropped(el) || boilerplate) {
                return false;
            }
        }
        visit(step);
        true
    });
}

/// Elements that end a line (and start a new one).
fn is_block(name: &str) -> bool {
    const BLOCKS: &[&str] = &[
        "address", "article", "blockquote", "body", "br", "caption", "center", "dd", "details", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "form", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "html",
        "hgroup", "legend", "li", "main", "menu", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot",
        "thead", "tr", "ul",
    ];
    BLOCKS.contains(&name)
}

/// Whitespace seen since the last character written, strongest last.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    None,
    Space,
    /// A run with a line break: nothing between two CJK characters, else a space.
    Wrap,
    /// Between table cells: always a space.
    Cell,
}

/// Builds the text line by line from a walk of the kept edges.
struct LineWriter {
    /// Each line with whether it is link text.
    lines: Vec<(String, bool)>,
    line: String,
    last: char,
    gap: Gap,
    link_depth: usize,
    pre_depth: usize,
    /// Whether the line has letters (or digits) inside an `<a href>`, and outside every one.
    link_letters: bool,
    plain_letters: bool,
}

impl LineWriter {
    fn read(root: ElementRef, sizes: &Sizes) -> String {
        let mut w = LineWriter {
            lines: Vec::new(),
            line: String::new(),
            last: ' ',
            gap: Gap::None,
            link_depth: 0,
            pre_depth: 0,
            link_letters: false,
            plain_letters: false,
        };
        walk_kept(root, sizes, |step| match step {
            Step::Open(e) => w.element(e.value(), 1),
            Step::Text(t) => w.push_text(t),
            Step::Close(e) => w.element(e.value(), -1),
        });
        w.end_line();
        w.finish()
    }

    /// An element opening (`step` 1) or closing (-1).
    fn element(&mut self, el: &Element, step: isize) {
        let depth = |d: usize| d.saturating_add_signed(step);
        let name = el.name();
        match name {
            "a" if el.attr("href").is_some() => self.link_depth = depth(self.link_depth),
            "pre" => self.pre_depth = depth(self.pre_depth),
            "td" | "th" => self.gap = self.gap.max(Gap::Cell),
            _ => {}
        }
        if is_block(name) {
            self.end_line();
        }
    }

    fn push_text(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_whitespace() {
                if c == '\n' && self.pre_depth > 0 {
                    self.end_line();
                } else {
                    let gap = if matches!(c, '\n' | '\r') { Gap::Wrap } else { Gap::Space };
                    self.gap = self.gap.max(gap);
                }
                continue;
            }
            if !self.line.is_empty() {
                let join = self.gap == Gap::Wrap && is_cjk(self.last) && is_cjk(c);
                if self.gap != Gap::None && !join {
                    self.line.push(' ');
                }
            }
            self.gap = Gap::None;
            self.line.push(c);
            self.last = c;
            if c.is_alphanumeric() {
                *(if self.link_depth > 0 { &mut self.link_letters } else { &mut self.plain_letters }) = true;
            }
        }
    }

    fn end_line(&mut self) {
        if !self.line.is_empty() {
            let link_only = self.link_letters && !self.plain_letters;
            self.lines.push((std::mem::take(&mut self.line), link_only));
        }
        self.gap = Gap::None;
        self.link_letters = false;
        self.plain_letters = false;
    }

    /// The lines joined, runs of two or more link-only lines left out.
    fn finish(self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.lines.len() {
            let run = self.lines[i..].iter().take_while(|(_, link_only)| *link_only).count();
            if run >= 2 {
                i += run;
                continue;
            }
            let (line, _) = &self.lines[i];
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
            i += 1;
        }
        out
    }
}

/// CJK ideographs, kana, CJK punctuation and full-width forms: characters Japanese writes without
/// spaces between them.
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(body: &str) -> String {
        main_text(&format!("<!doctype html><html><head><title>t</title></head><body>{body}</body></html>")).text
    }

    #[test]
    fn precheck_lang_attribute() {
        assert!(looks_japanese("<!DOCTYPE html>\n<html lang=\"ja\"><head><title>Home</title></head></html>"));
        assert!(looks_japanese("<HTML LANG='ja-JP'>"));
        assert!(looks_japanese("<html class=x lang=ja><body>"));
        assert!(looks_japanese("<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"JA\">"));
        assert!(looks_japanese("<html lang = \" ja_JP \" >"));
        assert!(!looks_japanese("<html lang=\"jav\"><title>Home</title>"));
        assert!(!looks_japanese("<html data-lang=\"ja\"><title>Home</title>"));
        assert!(!looks_japanese("<htmlx lang=\"ja\">"));
        // Only the <html> tag counts, not a lang= anywhere else.
        assert!(!looks_japanese("<html><body><p lang=\"ja\">Hello</p>"));
    }

    #[test]
    fn precheck_kana_title() {
        assert!(looks_japanese("<html><head><TITLE>ニュース速報 | Example</TITLE></head>"));
        assert!(looks_japanese("<html><head><title lang=x>東京のニュース</title>"));
        // One kana is not enough; kanji alone is not Japanese.
        assert!(!looks_japanese("<html><head><title>東京 ニ</title>"));
        // Entities: noise does not count, numeric references to kana do.
        assert!(!looks_japanese("<title>News &amp; Views &#8212; &nbsp;&copy; 2024 &#12354</title>"));
        assert!(looks_japanese("<title>&#12491;&#x30e5;&#X30FC;&#x30B9; &amp; more</title>"));
        // Kana after </title> are not in the title.
        assert!(!looks_japanese("<title>Home</title><p>ひらがな</p>"));
    }

    #[test]
    fn precheck_rejects_other_languages() {
        assert!(!looks_japanese("<!doctype html><html lang=\"en\"><head><title>Hello world</title></head><body>Hi</body></html>"));
        assert!(!looks_japanese("<html lang=\"zh-CN\"><head><title>北京新闻网 - 中国新闻</title></head></html>"));
        assert!(!looks_japanese(""));
        assert!(!looks_japanese("<title>ひ"));
        assert!(!looks_japanese("<<<<&#&#x&#99999999999;<title"));
    }

    #[test]
    fn precheck_is_cheap_on_huge_pages() {
        let mut page = String::from("<html lang=\"en\"><head><title>Big</title></head><body>");
        while page.len() < 50_000_000 {
            page.push_str("<p>Lorem ipsum dolor sit amet, <b>consectetur</b> adipiscing elit.</p>\n");
        }
        // And kana far beyond the windows do not count.
        page.push_str("<title>ひらがなカタカナ</title>");
        let start = std::time::Instant::now();
        assert!(!looks_japanese(&page));
        assert!(start.elapsed() < std::time::Duration::from_millis(20), "{:?}", start.elapsed());
    }

    const PAGE: &str = r##"<!DOCTYPE html>
<html lang="ja">
<head>
  <meta charset="utf-8">
  <title>  今日の天気 &amp; ニュース | サンプル新聞 </title>
  <style>body { color: red; }</style>
  <script>var x = "スクリプトの中身";</script>
</head>
<body class="home has-sidebar">
  <header><h1>サンプル新聞</h1></header>
  <nav><ul><li><a href="/">ホーム</a></li><li><a href="/news">ニュース</a></li></ul></nav>
  <div id="breadcrumb">ホーム &gt; 天気</div>
  <div class="l-wrapper">
    <article>
      <h2>東京は晴れ</h2>
      <p>今日の東京は朝から
         よく晴れました。気温は&nbsp;20&#x5EA6;です。</p>
      <p>The weather
         was fine in Tokyo.</p>
      <p>明日は<a href="/tomorrow">雨の予報</a>です。<br>傘を持って出かけましょう。</p>
      <div class="share-buttons"><a href="#">シェアする</a></div>
      <div class="shadow">影の中の文章も本文です。</div>
      <noscript>JavaScriptを有効にしてください</noscript>
    </article>
    <aside><p>人気の記事</p></aside>
    <div class="c-sidebar"><p>サイドバーの長い文章はここにあります。</p></div>
  </div>
  <footer><p>Copyright サンプル新聞</p></footer>
</body>
</html>"##;

    #[test]
    fn extracts_the_article() {
        let got = main_text(PAGE);
        assert_eq!(got.title, "今日の天気 & ニュース | サンプル新聞");
        assert_eq!(
            got.text,
            "東京は晴れ\n今日の東京は朝からよく晴れました。気温は 20度です。\nThe weather was fine in Tokyo.\n\
             明日は雨の予報です。\n傘を持って出かけましょう。\n影の中の文章も本文です。"
        );
    }

    #[test]
    fn without_article_reads_the_body_without_boilerplate() {
        let page = PAGE.replace("<article>", "<div>").replace("</article>", "</div>");
        let got = main_text(&page).text;
        assert!(got.starts_with("東京は晴れ\n今日の東京は朝からよく晴れました。"), "{got}");
        for gone in ["サンプル新聞", "ホーム", "ニュース", "スクリプト", "color", "シェア", "JavaScript", "人気", "サイドバー", "Copyright"] {
            assert!(!got.contains(gone), "{gone} in {got}");
        }
        assert!(got.contains("影の中の文章も本文です。"));
    }

    #[test]
    fn largest_candidate_wins_and_tiny_ones_are_ignored() {
        let two = text_of("<article><p>短い。</p></article><article><p>こちらの記事のほうが長いです。</p></article>");
        assert_eq!(two, "こちらの記事のほうが長いです。");
        let role = text_of("<div>前置き</div><div role=\"main\"><p>本文はここにあります。</p></div>");
        assert_eq!(role, "本文はここにあります。");
        let tiny = text_of("<article>広告</article><div><p>本当の本文はこの長い段落にあって、記事要素の外にあります。</p></div>");
        assert_eq!(tiny, "広告\n本当の本文はこの長い段落にあって、記事要素の外にあります。");
    }

    #[test]
    fn line_breaks_and_spaces() {
        assert_eq!(text_of("<p>日本語の\n文章</p>"), "日本語の文章");
        assert_eq!(text_of("<p>日本語の\n   「文章」\n。</p>"), "日本語の「文章」。");
        assert_eq!(text_of("<p>東京 大阪</p>"), "東京 大阪");
        assert_eq!(text_of("<p>hello\nworld</p>"), "hello world");
        assert_eq!(text_of("<p>日本\nJapan</p>"), "日本 Japan");
        assert_eq!(text_of("<p>一行目<br>二行目<br/><br>三行目</p>"), "一行目\n二行目\n三行目");
        assert_eq!(text_of("<p><b>太</b><i>字</i>と<span>\n</span>普通</p>"), "太字と普通");
        assert_eq!(text_of("<div>外<p>中</p>後</div>"), "外\n中\n後");
        assert_eq!(text_of("<table><tr><td>名前</td>\n<td>価格</td></tr><tr><td>りんご</td><td>100円</td></tr></table>"), "名前 価格\nりんご 100円");
        assert_eq!(text_of("<pre>一行目\n  二行目\n\n三行目</pre>"), "一行目\n二行目\n三行目");
        assert_eq!(text_of("<p><ruby>漢字<rp>(</rp><rt>かんじ</rt><rp>)</rp></ruby>を読む</p>"), "漢字を読む");
        assert_eq!(text_of("<p>&lt;タグ&gt; &amp; &quot;引用&quot; &#12354;&#x3044;</p>"), "<タグ> & \"引用\" あい");
    }

    #[test]
    fn link_lists_are_dropped() {
        let got = text_of(
            "<p>本文の段落です。</p>\
             <ul><li><a href=1>関連記事その一</a></li><li>・<a href=2>関連記事その二</a></li></ul>\
             <ul><li><a href=3>用語</a>の説明です。</li><li><a href=4>もう一つ</a>の説明。</li></ul>\
             <p><a href=5>ひとつだけのリンク</a></p><p>★ ★ ★</p><p><a href=6>もう一つのリンク</a></p>",
        );
        assert_eq!(got, "本文の段落です。\n用語の説明です。\nもう一つの説明。\nひとつだけのリンク\n★ ★ ★\nもう一つのリンク");
        // An XHTML-style anchor stays open over the paragraphs that follow; they are not links.
        let got = text_of("<h2><a id=\"s1\"/>見出し</h2><p>一段落目。</p><ul><li>項目。</li></ul><p>三段落目。</p>");
        assert_eq!(got, "見出し\n一段落目。\n項目。\n三段落目。");
    }

    #[test]
    fn class_and_id_rules() {
        assert!(token_is_boilerplate("site-footer"));
        assert!(token_is_boilerplate("globalNav"));
        assert!(token_is_boilerplate("comment_list"));
        assert!(token_is_boilerplate("ADS"));
        assert!(token_is_boilerplate("pankuzu"));
        assert!(!token_is_boilerplate("shadow"));
        assert!(!token_is_boilerplate("header2"));
        assert!(!token_is_boilerplate("loaded"));
        assert!(!token_is_boilerplate("has-sidebar"));
        assert!(!token_is_boilerplate("is-menu-open"));
        assert!(!token_is_boilerplate(""));
        assert_eq!(camel_humps("globalNavMenu").collect::<Vec<_>>(), ["global", "Nav", "Menu"]);
        // A wrapper that holds most of the text is not dropped for its name; a small one is.
        let got = text_of("<form id=form1><div id=side>サイド</div><p>ASP.NETのページ全体を包むフォームの中の本文です。</p></form>");
        assert_eq!(got, "ASP.NETのページ全体を包むフォームの中の本文です。");
        let got = text_of("<p>本文です。</p><div role=navigation>移動</div><div hidden>隠し</div><span aria-hidden=true>★</span>");
        assert_eq!(got, "本文です。");
    }

    #[test]
    fn broken_and_empty_markup() {
        let got = main_text("<title>壊れた<p>最初の段落<p>二番目の<b>太字<div>ブロック");
        assert_eq!(got.title, "壊れた<p>最初の段落<p>二番目の<b>太字<div>ブロック");
        let got = main_text("<html><body><p>最初の段落<p>二番目の<b>太字<div>ブロック</i></span>");
        assert_eq!(got.text, "最初の段落\n二番目の太字\nブロック");
        assert_eq!(main_text(""), Extracted::default());
        assert_eq!(main_text("<html><head><title></title></head><body> \n </body></html>"), Extracted::default());
        assert_eq!(main_text("<frameset><frame src=a></frameset>"), Extracted::default());
        assert_eq!(main_text("\u{0}<<>>&&#;</").text, "<<>>&&#;</");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        // html5ever parses nested <span>s in linear time (nested <div>s in quadratic time).
        let page = format!("<body><p>{}深い</p><p>次", "<span>".repeat(500_000));
        assert_eq!(main_text(&page).text, "深い\n次");
    }
}
