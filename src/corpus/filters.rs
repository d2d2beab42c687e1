//! The document filters, with Swallow's thresholds as defaults (../shared/REFERENCE.md, "Swallow
//! corpus"): the host block list, the NG-word ratio, the quality rules and the Gopher-style
//! repetition rules. Each rule has a stable name for report.json.
//!
//! Definitions used by every rule:
//! - Japanese characters: hiragana (U+3041–3096, ゝゞゟ), katakana (U+30A1–30FA, ヽヾヿ, U+31F0–31FF,
//!   half-width ｦ–ﾟ except ｰ), CJK ideographs (U+3400–4DBF, U+4E00–9FFF, U+F900–FAFF, U+20000–3FFFF,
//!   and 々〆〇〻) and the prolonged sound mark ー (also half-width ｰ). ー counts as Japanese but as
//!   neither hiragana nor katakana. Punctuation (、。 …) is not Japanese here (the released
//!   quality.py counted 、，。．！？ as Japanese letters; the project's recipe does not).
//! - Characters ("min_chars"): every character of the text except line breaks (`\n`, `\r`).
//! - Lines (Gopher's "paragraphs"): the text split at `\n`, each trimmed of surrounding whitespace;
//!   blank lines are left out.
//! - Sentences: in each line, a run of characters other than 。．！？!? followed by at most one of
//!   them (so a sentence also ends at the line end); further terminators right after one (！！) are
//!   dropped, as the released regex `[^。．！？!?]+[。．！？!?]?` does. Each sentence is trimmed of
//!   surrounding whitespace; blank ones are left out. A sentence's length is its character count,
//!   terminator included.
//! - Character n-grams: every window of n characters of the whole text as given (line breaks
//!   included), as quality.py's `ngram(text, n)`.
//!
//! Rules, in the order [`Filters::check_text`] applies them ([`TEXT_RULES`]); a page is dropped by
//! the first it fails:
//! 1. "ng_words": NG-word characters / Japanese characters >= `ng_word_ratio` (0.05). Occurrences
//!    are counted non-overlapping, leftmost-longest, ASCII case-insensitive.
//! 2. "min_chars": characters < `min_chars` (400).
//! 3. "min_japanese_chars": Japanese characters < `min_japanese_chars` (400).
//! 4. "hiragana_ratio": hiragana / Japanese < `min_hiragana_ratio` (0.2).
//! 5. "katakana_ratio": katakana / Japanese > `max_katakana_ratio` (0.5).
//! 6. "japanese_ratio": Japanese / non-whitespace characters < `min_japanese_ratio` (0.5).
//! 7. "sentence_length": average sentence length outside
//!    [`min_avg_sentence_length`, `max_avg_sentence_length`] (20, 90); 0 when there is no sentence.
//! 8. "longest_sentence": longest sentence > `max_sentence_length` (200).
//! 9. "ellipsis_endings": sentences ending in ・ or … / sentences > `max_ellipsis_ratio` (0.2).
//! 10. "duplicate_lines": (lines - distinct lines) / lines > `max_duplicate_line_ratio` (0.30).
//! 11. "duplicate_line_chars": characters of the repeated copies of lines (each distinct line's
//!     length x (count - 1)) / characters of all lines > `max_duplicate_line_char_ratio` (0.20).
//! 12. "duplicate_sentences": the same as 10 over sentences (`max_duplicate_sentence_ratio` 0.30).
//! 13. "duplicate_sentence_chars": the same as 11 over sentences
//!     (`max_duplicate_sentence_char_ratio` 0.20). Rules 12 and 13 are in quality.py's apply_v1.
//! 14. "top_2gram", 15. "top_3gram", 16. "top_4gram": count of the most frequent character n-gram
//!     / count of all n-grams > `max_top_ngram_ratio` ([0.20, 0.18, 0.16]).
//! 17. "duplicate_5gram" .. 22. "duplicate_10gram": distinct n-grams occurring more than once /
//!     distinct n-grams > `max_duplicate_ngram_ratio` ([0.15, 0.14, 0.13, 0.12, 0.11, 0.10]).
//!
//! Ratios with a zero denominator are 0 (as in quality.py), except "ng_words", which drops a page
//! with NG-word characters and no Japanese character.
//!
//! The URL rule, [`Filters::check_url`], is "host_blocklist": the host (lowercase, without
//! userinfo, port or a trailing dot) is blocked when an entry names it exactly, or when an entry
//! `.domain` names it or a domain it is under. `*.domain` (and `*domain`) read as `.domain`; an
//! entry written as a URL stands for its host. An unparsable URL is not blocked.

use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::{bail, Context, Result};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use super::script::{script, Script};

/// The bundled host block list (data/corpus/blocked_hosts.txt).
pub const DEFAULT_BLOCKED_HOSTS: &str = include_str!("../../data/corpus/blocked_hosts.txt");
/// The bundled NG-word list (data/corpus/ng_words.txt).
pub const DEFAULT_NG_WORDS: &str = include_str!("../../data/corpus/ng_words.txt");

/// The name of the URL rule.
pub const HOST_RULE: &str = "host_blocklist";

/// The names of the text rules, in the order [`Filters::check_text`] applies them.
pub const TEXT_RULES: [&str; 22] = [
    "ng_words",
    "min_chars",
    "min_japanese_chars",
    "hiragana_ratio",
    "katakana_ratio",
    "japanese_ratio",
    "sentence_length",
    "longest_sentence",
    "ellipsis_endings",
    "duplicate_lines",
    "duplicate_line_chars",
    "duplicate_sentences",
    "duplicate_sentence_chars",
    "top_2gram",
    "top_3gram",
    "top_4gram",
    "duplicate_5gram",
    "duplicate_6gram",
    "duplicate_7gram",
    "duplicate_8gram",
    "duplicate_9gram",
    "duplicate_10gram",
];

const TOP_NGRAM_RULES: [&str; 3] = ["top_2gram", "top_3gram", "top_4gram"];
const DUPLICATE_NGRAM_RULES: [&str; 6] =
    ["duplicate_5gram", "duplicate_6gram", "duplicate_7gram", "duplicate_8gram", "duplicate_9gram", "duplicate_10gram"];

/// `[filters]` of the corpus config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A host block list, one entry a line (`host` exact, `.domain` the domain and its
    /// subdomains, `#` comments), added to the bundled defaults.
    #[serde(default)]
    pub blocked_hosts_file: Option<PathBuf>,
    /// Whether the bundled host list (data/corpus/blocked_hosts.txt) is used.
    #[serde(default = "yes")]
    pub blocked_hosts_defaults: bool,
    /// An NG-word list, one word a line (`#` comment lines), added to the bundled defaults.
    #[serde(default)]
    pub ng_words_file: Option<PathBuf>,
    /// Whether the bundled NG-word list (data/corpus/ng_words.txt) is used.
    #[serde(default = "yes")]
    pub ng_words_defaults: bool,
    /// Dropped when NG-word characters / Japanese characters >= this.
    #[serde(default = "d_ng_word_ratio")]
    pub ng_word_ratio: f64,
    /// Dropped below this many characters (line breaks not counted).
    #[serde(default = "d_400")]
    pub min_chars: usize,
    /// Dropped below this many Japanese characters.
    #[serde(default = "d_400")]
    pub min_japanese_chars: usize,
    /// Dropped when hiragana / Japanese characters < this.
    #[serde(default = "d_min_hiragana_ratio")]
    pub min_hiragana_ratio: f64,
    /// Dropped when katakana / Japanese characters > this.
    #[serde(default = "d_max_katakana_ratio")]
    pub max_katakana_ratio: f64,
    /// Dropped when Japanese characters / non-whitespace characters < this.
    #[serde(default = "d_min_japanese_ratio")]
    pub min_japanese_ratio: f64,
    /// Dropped when the average sentence length (characters) is below this ...
    #[serde(default = "d_min_avg_sentence_length")]
    pub min_avg_sentence_length: f64,
    /// ... or above this.
    #[serde(default = "d_max_avg_sentence_length")]
    pub max_avg_sentence_length: f64,
    /// Dropped when a sentence is longer than this (characters).
    #[serde(default = "d_max_sentence_length")]
    pub max_sentence_length: usize,
    /// Dropped when sentences ending in ・ or … / sentences > this.
    #[serde(default = "d_max_ellipsis_ratio")]
    pub max_ellipsis_ratio: f64,
    /// Dropped when repeated lines / lines > this.
    #[serde(default = "d_max_duplicate_ratio")]
    pub max_duplicate_line_ratio: f64,
    /// Dropped when characters of repeated lines / characters of lines > this.
    #[serde(default = "d_max_duplicate_char_ratio")]
    pub max_duplicate_line_char_ratio: f64,
    /// Dropped when repeated sentences / sentences > this.
    #[serde(default = "d_max_duplicate_ratio")]
    pub max_duplicate_sentence_ratio: f64,
    /// Dropped when characters of repeated sentences / characters of sentences > this.
    #[serde(default = "d_max_duplicate_char_ratio")]
    pub max_duplicate_sentence_char_ratio: f64,
    /// For n = 2, 3, 4: dropped when the most frequent n-gram's count / all n-grams > this.
    #[serde(default = "d_max_top_ngram_ratio")]
    pub max_top_ngram_ratio: [f64; 3],
    /// For n = 5..=10: dropped when distinct n-grams occurring more than once / distinct n-grams
    /// > this.
    #[serde(default = "d_max_duplicate_ngram_ratio")]
    pub max_duplicate_ngram_ratio: [f64; 6],
}

fn yes() -> bool {
    true
}
fn d_ng_word_ratio() -> f64 {
    0.05
}
fn d_400() -> usize {
    400
}
fn d_min_hiragana_ratio() -> f64 {
    0.2
}
fn d_max_katakana_ratio() -> f64 {
    0.5
}
fn d_min_japanese_ratio() -> f64 {
    0.5
}
fn d_min_avg_sentence_length() -> f64 {
    20.0
}
fn d_max_avg_sentence_length() -> f64 {
    90.0
}
fn d_max_sentence_length() -> usize {
    200
}
fn d_max_ellipsis_ratio() -> f64 {
    0.2
}
fn d_max_duplicate_ratio() -> f64 {
    0.30
}
fn d_max_duplicate_char_ratio() -> f64 {
    0.20
}
fn d_max_top_ngram_ratio() -> [f64; 3] {
    [0.20, 0.18, 0.16]
}
fn d_max_duplicate_ngram_ratio() -> [f64; 6] {
    [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]
}

impl Default for FilterConfig {
    fn default() -> Self {
        toml::from_str("").expect("filter defaults")
    }
}

impl FilterConfig {
    /// Every ratio and length threshold must be a number (not NaN) and not negative.
    fn validate(&self) -> Result<()> {
        let mut values: Vec<(String, f64)> = vec![
            ("ng_word_ratio".into(), self.ng_word_ratio),
            ("min_hiragana_ratio".into(), self.min_hiragana_ratio),
            ("max_katakana_ratio".into(), self.max_katakana_ratio),
            ("min_japanese_ratio".into(), self.min_japanese_ratio),
            ("min_avg_sentence_length".into(), self.min_avg_sentence_length),
            ("max_avg_sentence_length".into(), self.max_avg_sentence_length),
            ("max_ellipsis_ratio".into(), self.max_ellipsis_ratio),
            ("max_duplicate_line_ratio".into(), self.max_duplicate_line_ratio),
            ("max_duplicate_line_char_ratio".into(), self.max_duplicate_line_char_ratio),
            ("max_duplicate_sentence_ratio".into(), self.max_duplicate_sentence_ratio),
            ("max_duplicate_sentence_char_ratio".into(), self.max_duplicate_sentence_char_ratio),
        ];
        for (i, v) in self.max_top_ngram_ratio.iter().enumerate() {
            values.push((format!("max_top_ngram_ratio[{i}]"), *v));
        }
        for (i, v) in self.max_duplicate_ngram_ratio.iter().enumerate() {
            values.push((format!("max_duplicate_ngram_ratio[{i}]"), *v));
        }
        for (key, v) in values {
            if v.is_nan() || v < 0.0 {
                bail!("filters.{key} = {v}: must be a number >= 0");
            }
        }
        Ok(())
    }
}

/// The filters, lists loaded.
pub struct Filters {
    cfg: FilterConfig,
    /// Hosts blocked exactly.
    exact_hosts: FxHashSet<String>,
    /// Domains blocked with every subdomain (stored without the leading dot).
    domain_hosts: FxHashSet<String>,
    /// The NG words, None when the list is empty.
    ng_words: Option<AhoCorasick>,
}

impl Filters {
    /// Loads the lists the config names (an unreadable list is an error naming the file and key).
    pub fn new(cfg: &FilterConfig) -> Result<Self> {
        cfg.validate()?;
        let mut filters =
            Filters { cfg: cfg.clone(), exact_hosts: FxHashSet::default(), domain_hosts: FxHashSet::default(), ng_words: None };
        if cfg.blocked_hosts_defaults {
            filters.add_host_list(DEFAULT_BLOCKED_HOSTS);
        }
        if let Some(path) = &cfg.blocked_hosts_file {
            filters.add_host_list(&read_list(path, "blocked_hosts_file", "host block list")?);
        }
        let mut words: Vec<String> = Vec::new();
        if cfg.ng_words_defaults {
            words.extend(parse_word_list(DEFAULT_NG_WORDS));
        }
        if let Some(path) = &cfg.ng_words_file {
            words.extend(parse_word_list(&read_list(path, "ng_words_file", "NG-word list")?));
        }
        words.sort();
        words.dedup();
        if !words.is_empty() {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .ascii_case_insensitive(true)
                .build(&words)
                .context("building the NG-word matcher (filters.ng_words_file)")?;
            filters.ng_words = Some(ac);
        }
        Ok(filters)
    }

    /// Whether the URL's host is blocked (the rule name, e.g. "host_blocklist").
    pub fn check_url(&self, url: &str) -> std::result::Result<(), &'static str> {
        match url_host(url) {
            Some(host) if self.host_blocked(&host) => Err(HOST_RULE),
            _ => Ok(()),
        }
    }

    /// The first rule `text` fails, by name (e.g. "ng_words", "min_chars", "hiragana_ratio",
    /// "duplicate_lines", "top_2gram", "duplicate_5gram", ...), or Ok.
    pub fn check_text(&self, text: &str) -> std::result::Result<(), &'static str> {
        let cfg = &self.cfg;
        let counts = CharCounts::of(text);
        let japanese = counts.japanese();

        let ng = self.ng_chars(text);
        if ng > 0 && (japanese == 0 || ratio(ng, japanese) >= cfg.ng_word_ratio) {
            return Err("ng_words");
        }
        if counts.chars < cfg.min_chars {
            return Err("min_chars");
        }
        if japanese < cfg.min_japanese_chars {
            return Err("min_japanese_chars");
        }
        if ratio(counts.hiragana, japanese) < cfg.min_hiragana_ratio {
            return Err("hiragana_ratio");
        }
        if ratio(counts.katakana, japanese) > cfg.max_katakana_ratio {
            return Err("katakana_ratio");
        }
        if ratio(japanese, counts.non_whitespace) < cfg.min_japanese_ratio {
            return Err("japanese_ratio");
        }

        let sentences = sentences(text);
        let lengths: Vec<usize> = sentences.iter().map(|s| s.chars().count()).collect();
        let average = if lengths.is_empty() { 0.0 } else { lengths.iter().sum::<usize>() as f64 / lengths.len() as f64 };
        if average < cfg.min_avg_sentence_length || average > cfg.max_avg_sentence_length {
            return Err("sentence_length");
        }
        if lengths.iter().copied().max().unwrap_or(0) > cfg.max_sentence_length {
            return Err("longest_sentence");
        }
        let ellipses = sentences.iter().filter(|s| s.ends_with('・') || s.ends_with('…')).count();
        if ratio(ellipses, sentences.len()) > cfg.max_ellipsis_ratio {
            return Err("ellipsis_endings");
        }

        let lines = Duplicates::of(text.split('\n').map(str::trim).filter(|l| !l.is_empty()));
        if ratio(lines.duplicate_items, lines.items) > cfg.max_duplicate_line_ratio {
            return Err("duplicate_lines");
        }
        if ratio(lines.duplicate_chars, lines.chars) > cfg.max_duplicate_line_char_ratio {
            return Err("duplicate_line_chars");
        }
        let sents = Duplicates::of(sentences.iter().copied());
        if ratio(sents.duplicate_items, sents.items) > cfg.max_duplicate_sentence_ratio {
            return Err("duplicate_sentences");
        }
        if ratio(sents.duplicate_chars, sents.chars) > cfg.max_duplicate_sentence_char_ratio {
            return Err("duplicate_sentence_chars");
        }

        let chars: Vec<char> = text.chars().collect();
        let mut counter = NgramCounter::new(chars.len());
        for (i, rule) in TOP_NGRAM_RULES.iter().enumerate() {
            let stats = counter.count(&chars, i + 2);
            if ratio(stats.top, stats.total) > cfg.max_top_ngram_ratio[i] {
                return Err(rule);
            }
        }
        for (i, rule) in DUPLICATE_NGRAM_RULES.iter().enumerate() {
            let stats = counter.count(&chars, i + 5);
            if ratio(stats.repeated, stats.distinct) > cfg.max_duplicate_ngram_ratio[i] {
                return Err(rule);
            }
        }
        Ok(())
    }

    /// Characters covered by NG-word occurrences (non-overlapping, leftmost-longest).
    fn ng_chars(&self, text: &str) -> usize {
        match &self.ng_words {
            Some(ac) => ac.find_iter(text).map(|m| text[m.range()].chars().count()).sum(),
            None => 0,
        }
    }

    fn add_host_list(&mut self, list: &str) {
        for line in list.lines() {
            let entry = line.split('#').next().unwrap_or("").trim().to_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry.contains("://") {
                if let Some(host) = url_host(&entry) {
                    self.exact_hosts.insert(host);
                }
                continue;
            }
            let (domain, entry) = match entry.strip_prefix("*.").or_else(|| entry.strip_prefix('*')).or_else(|| entry.strip_prefix('.')) {
                Some(rest) => (true, rest),
                None => (false, entry.as_str()),
            };
            let entry = entry.trim_end_matches('.');
            if entry.is_empty() {
                continue;
            }
            if domain {
                self.domain_hosts.insert(entry.to_string());
            } else {
                self.exact_hosts.insert(entry.to_string());
            }
        }
    }

    fn host_blocked(&self, host: &str) -> bool {
        if self.exact_hosts.contains(host) || self.domain_hosts.contains(host) {
            return true;
        }
        let mut rest = host;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if self.domain_hosts.contains(rest) {
                return true;
            }
        }
        false
    }
}

fn read_list(path: &Path, key: &str, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading the {what} {} (filters.{key})", path.display()))
}

/// Words of a list: one a line, trimmed; blank lines and lines starting with `#` left out.
fn parse_word_list(list: &str) -> impl Iterator<Item = String> + '_ {
    list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string)
}

/// The host of a URL `scheme://[userinfo@]host[:port][/...]` (or `//host...`), lowercase, without
/// a trailing dot; None when there is none. IPv6 literals keep their brackets.
pub fn url_host(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = if let Some(i) = url.find("://") {
        let scheme = &url[..i];
        let mut bytes = scheme.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
        if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
            return None;
        }
        &url[i + 3..]
    } else {
        url.strip_prefix("//")?
    };
    let authority = &rest[..rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())];
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if host_port.starts_with('[') {
        &host_port[..=host_port.find(']')?]
    } else {
        &host_port[..host_port.find(':').unwrap_or(host_port.len())]
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '^' | '`')) {
        return None;
    }
    Some(host.to_lowercase())
}

/// `num / den`, 0 when `den` is 0.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Character counts of a text (see the module docs for the classes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CharCounts {
    /// All characters but `\n` and `\r`.
    chars: usize,
    non_whitespace: usize,
    hiragana: usize,
    katakana: usize,
    kanji: usize,
    prolonged: usize,
}

impl CharCounts {
    fn of(text: &str) -> Self {
        let mut n = CharCounts::default();
        for c in text.chars() {
            if c != '\n' && c != '\r' {
                n.chars += 1;
            }
            if !c.is_whitespace() {
                n.non_whitespace += 1;
            }
            match script(c) {
                Script::Hiragana => n.hiragana += 1,
                Script::Katakana => n.katakana += 1,
                Script::Kanji => n.kanji += 1,
                Script::Prolonged => n.prolonged += 1,
                Script::Other => {}
            }
        }
        n
    }

    fn japanese(&self) -> usize {
        self.hiragana + self.katakana + self.kanji + self.prolonged
    }
}

fn is_terminator(c: char) -> bool {
    matches!(c, '。' | '．' | '！' | '？' | '!' | '?')
}

/// The sentences of a text (module docs), trimmed, blank ones left out.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let mut start: Option<usize> = None;
        for (i, c) in line.char_indices() {
            if is_terminator(c) {
                if let Some(s) = start.take() {
                    out.push(line[s..i + c.len_utf8()].trim());
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            out.push(line[s..].trim());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Gopher's duplicate counts over items (lines or sentences).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Duplicates {
    items: usize,
    /// Items that repeat an earlier one: sum over distinct items of (count - 1).
    duplicate_items: usize,
    /// Characters of all items.
    chars: usize,
    /// Sum over distinct items of length x (count - 1).
    duplicate_chars: usize,
}

impl Duplicates {
    fn of<'a>(items: impl Iterator<Item = &'a str>) -> Self {
        let mut seen: FxHashMap<&str, usize> = FxHashMap::default();
        let mut d = Duplicates::default();
        for item in items {
            let len = item.chars().count();
            d.items += 1;
            d.chars += len;
            let count = seen.entry(item).or_insert(0);
            if *count > 0 {
                d.duplicate_items += 1;
                d.duplicate_chars += len;
            }
            *count += 1;
        }
        d
    }
}

/// Counts of the character n-grams of a text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct NgramStats {
    /// All n-grams (windows): len - n + 1.
    total: usize,
    /// The count of the most frequent n-gram.
    top: usize,
    /// Distinct n-grams.
    distinct: usize,
    /// Distinct n-grams occurring more than once.
    repeated: usize,
}

/// A reusable table of n-gram counts keyed by slices of the text's characters (no allocation per
/// n-gram).
struct NgramCounter<'a> {
    table: FxHashMap<&'a [char], u32>,
}

impl<'a> NgramCounter<'a> {
    fn new(capacity: usize) -> Self {
        NgramCounter { table: FxHashMap::with_capacity_and_hasher(capacity, Default::default()) }
    }

    fn count(&mut self, chars: &'a [char], n: usize) -> NgramStats {
        self.table.clear();
        if n == 0 || chars.len() < n {
            return NgramStats::default();
        }
        let mut stats = NgramStats { total: chars.len() - n + 1, ..NgramStats::default() };
        for window in chars.windows(n) {
            let count = self.table.entry(window).or_insert(0);
            *count += 1;
            if *count == 2 {
                stats.repeated += 1;
            }
            stats.top = stats.top.max(*count as usize);
        }
        stats.distinct = self.table.len();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with every text rule off, the NG words and host lists empty.
    fn permissive() -> FilterConfig {
        FilterConfig {
            blocked_hosts_file: None,
            blocked_hosts_defaults: false,
            ng_words_file: None,
            ng_words_defaults: false,
            ng_word_ratio: 2.0,
            min_chars: 0,
            min_japanese_chars: 0,
            min_hiragana_ratio: 0.0,
            max_katakana_ratio: 1.0,
            min_japanese_ratio: 0.0,
            min_avg_sentence_length: 0.0,
            max_avg_sentence_length: f64::MAX,
            max_sentence_length: usize::MAX,
            max_ellipsis_ratio: 1.0,
            max_duplicate_line_ratio: 1.0,
            max_duplicate_line_char_ratio: 1.0,
            max_duplicate_sentence_ratio: 1.0,
            max_duplicate_sentence_char_ratio: 1.0,
            max_top_ngram_ratio: [1.0; 3],
            max_duplicate_ngram_ratio: [1.0; 6],
        }
    }

    fn check(cfg: &FilterConfig, text: &str) -> std::result::Result<(), &'static str> {
        Filters::new(cfg).unwrap().check_text(text)
    }

    /// `n` distinct CJK ideographs starting at the `from`-th.
    fn kanji(from: usize, n: usize) -> String {
        (from..from + n).map(|i| char::from_u32(0x4E00 + i as u32).unwrap()).collect()
    }

    fn rep(s: &str, n: usize) -> String {
        s.repeat(n)
    }

    const NATURAL: &str = "日本の四季は、それぞれに異なる魅力を持っている。春になると各地で桜が咲き、多くの人々が公園や川沿いに集まって花見を楽しむ。満開の桜の下で弁当を広げ、家族や友人と語り合う時間は、長い冬を越えた喜びを感じさせてくれる。
夏は気温が高く湿度も上がるため、体調管理に気をつける必要がある。一方で、夏祭りや花火大会など、この季節ならではの行事も数多く開かれる。浴衣を着て夜店を歩き、夜空に広がる大きな花火を見上げるのは、子どもから大人まで楽しめる思い出となるだろう。
秋は実りの季節であり、新米や果物がおいしくなる時期でもある。山々の木々が赤や黄色に色づくと、紅葉を見るために遠くから足を運ぶ旅行者も少なくない。読書やスポーツに取り組むのにも適した、過ごしやすい気候が続く。
冬になると北日本や日本海側では雪が多く降り、一面の銀世界が広がる。寒さは厳しいが、温泉に入って体を温めたり、鍋料理を囲んだりする楽しみもある。年末には大掃除をして新しい年を迎える準備を整え、正月には初詣に出かけて一年の無事を祈る人が多い。
このように、季節の移り変わりは人々の暮らしや文化と深く結びついている。近年は気候の変化によって、桜の開花時期や紅葉の見頃が少しずつずれてきているとも言われる。昔から受け継がれてきた季節の楽しみ方を大切にしながら、変化する自然とどのように向き合っていくかを考えることが、これからの私たちに求められているのではないだろうか。";

    #[test]
    fn defaults() {
        let cfg = FilterConfig::default();
        assert_eq!(cfg.ng_word_ratio, 0.05);
        assert_eq!((cfg.min_chars, cfg.min_japanese_chars), (400, 400));
        assert_eq!((cfg.min_hiragana_ratio, cfg.max_katakana_ratio, cfg.min_japanese_ratio), (0.2, 0.5, 0.5));
        assert_eq!((cfg.min_avg_sentence_length, cfg.max_avg_sentence_length, cfg.max_sentence_length), (20.0, 90.0, 200));
        assert_eq!(cfg.max_ellipsis_ratio, 0.2);
        assert_eq!((cfg.max_duplicate_line_ratio, cfg.max_duplicate_line_char_ratio), (0.3, 0.2));
        assert_eq!((cfg.max_duplicate_sentence_ratio, cfg.max_duplicate_sentence_char_ratio), (0.3, 0.2));
        assert_eq!(cfg.max_top_ngram_ratio, [0.20, 0.18, 0.16]);
        assert_eq!(cfg.max_duplicate_ngram_ratio, [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]);
        assert!(cfg.blocked_hosts_defaults && cfg.ng_words_defaults);
        assert_eq!((cfg.blocked_hosts_file.clone(), cfg.ng_words_file.clone()), (None, None));
        let parsed: FilterConfig = toml::from_str("min_chars = 10\nmax_top_ngram_ratio = [0.3, 0.2, 0.1]").unwrap();
        assert_eq!((parsed.min_chars, parsed.max_top_ngram_ratio), (10, [0.3, 0.2, 0.1]));
        assert!(toml::from_str::<FilterConfig>("no_such_key = 1").is_err());
        assert_eq!(TEXT_RULES.len(), 22);
    }

    #[test]
    fn natural_japanese_passes_every_rule() {
        let counts = CharCounts::of(NATURAL);
        assert!(counts.chars >= 600, "{counts:?}");
        assert!(counts.japanese() >= 500, "{counts:?}");
        let f = Filters::new(&FilterConfig::default()).unwrap();
        assert_eq!(f.check_text(NATURAL), Ok(()));
        assert_eq!(f.ng_chars(NATURAL), 0);
    }

    #[test]
    fn repetitive_texts_fail_the_right_rule() {
        let f = Filters::new(&FilterConfig::default()).unwrap();
        // A boilerplate line five times over the natural text: 4 of 10 lines repeat.
        let boiler = "この記事を読んだ人はこんな記事も読んでいますので、ぜひ合わせてご覧ください。";
        let text = format!("{NATURAL}\n{}", [boiler; 5].join("\n"));
        assert_eq!(f.check_text(&text), Err("duplicate_lines"));
        // The text twice, each line numbered: no line repeats, but most sentences do.
        let numbered: Vec<String> =
            NATURAL.lines().chain(NATURAL.lines()).enumerate().map(|(i, l)| format!("{i}. {l}")).collect();
        assert_eq!(f.check_text(&numbered.join("\n")), Err("duplicate_sentences"));
        // The text twice with every sentence of the copy changed: only the n-grams repeat.
        let changed = NATURAL.replace('。', "と書かれている。");
        assert_eq!(f.check_text(&format!("{NATURAL}\n{changed}")), Err("duplicate_5gram"));
        // One character pair over and over (the other rules off).
        let ha = rep(&format!("{}。\n", rep("はは", 15)), 30);
        let mut cfg = permissive();
        cfg.max_top_ngram_ratio = FilterConfig::default().max_top_ngram_ratio;
        assert_eq!(check(&cfg, &ha), Err("top_2gram"));
    }

    #[test]
    fn ng_words_ratio() {
        let mut cfg = permissive();
        cfg.ng_words_defaults = true;
        cfg.ng_word_ratio = 0.05;
        // 400 Japanese characters, of which `k` belong to occurrences of 無修正 (3 characters each).
        let text = |occurrences: usize| format!("{}{}", rep("無修正", occurrences), kanji(100, 400 - 3 * occurrences));
        let f = Filters::new(&cfg).unwrap();
        assert_eq!(f.ng_chars(&text(5)), 15);
        // 4% passes, 5% and 6% fail (>=).
        assert_eq!(f.check_text(&format!("{}{}", rep("人妻", 8), kanji(100, 384))), Ok(()));
        assert_eq!(f.check_text(&format!("{}{}", rep("人妻", 10), kanji(100, 380))), Err("ng_words"));
        assert_eq!(f.check_text(&format!("{}{}", rep("人妻", 12), kanji(100, 376))), Err("ng_words"));
        assert_eq!(f.check_text(&text(6)), Ok(())); // 18 / 400 = 4.5%
        assert_eq!(f.check_text(&text(7)), Err("ng_words")); // 21 / 400 = 5.25%
        // Leftmost-longest: エロ動画 counts 4 characters, not エロ's 2; ASCII case-insensitive.
        assert_eq!(f.ng_chars("エロ動画"), 4);
        assert_eq!(f.ng_chars("av女優とAV女優"), 8);
        // No NG word list at all: nothing is dropped for NG words.
        assert_eq!(check(&permissive(), &rep("人妻", 100)), Ok(()));
        // NG words over few Japanese characters.
        assert_eq!(f.check_text("av女優"), Err("ng_words"));
    }

    #[test]
    fn min_chars() {
        let mut cfg = permissive();
        cfg.min_chars = 400;
        assert_eq!(check(&cfg, &rep("a", 400)), Ok(()));
        assert_eq!(check(&cfg, &rep("a", 399)), Err("min_chars"));
        // Line breaks are not counted, spaces are.
        assert_eq!(check(&cfg, &format!("{}\r\n{}", rep("a", 200), rep(" ", 199))), Err("min_chars"));
        assert_eq!(check(&cfg, &format!("{}\n{}", rep("a", 200), rep(" ", 200))), Ok(()));
    }

    #[test]
    fn min_japanese_chars() {
        let mut cfg = permissive();
        cfg.min_japanese_chars = 400;
        assert_eq!(check(&cfg, &format!("{}{}ー", rep("あ", 100), kanji(0, 299))), Ok(()));
        assert_eq!(check(&cfg, &format!("{}{}。、abc", rep("あ", 100), kanji(0, 299))), Err("min_japanese_chars"));
    }

    #[test]
    fn hiragana_ratio() {
        let mut cfg = permissive();
        cfg.min_hiragana_ratio = 0.2;
        assert_eq!(check(&cfg, &format!("{}{}", rep("の", 20), kanji(0, 80))), Ok(()));
        assert_eq!(check(&cfg, &format!("{}{}", rep("の", 19), kanji(0, 81))), Err("hiragana_ratio"));
        // Punctuation and Latin letters are not in the denominator; ー is.
        assert_eq!(check(&cfg, &format!("{}{}。。abc", rep("の", 20), kanji(0, 80))), Ok(()));
        assert_eq!(check(&cfg, &format!("{}{}ー", rep("の", 20), kanji(0, 80))), Err("hiragana_ratio"));
    }

    #[test]
    fn katakana_ratio() {
        let mut cfg = permissive();
        cfg.max_katakana_ratio = 0.5;
        assert_eq!(check(&cfg, &format!("{}{}", rep("カ", 50), kanji(0, 50))), Ok(()));
        assert_eq!(check(&cfg, &format!("{}{}", rep("カ", 51), kanji(0, 49))), Err("katakana_ratio"));
        // ー is Japanese but not katakana; half-width katakana is katakana.
        assert_eq!(check(&cfg, &format!("{}{}", rep("カー", 50), kanji(0, 1))), Ok(()));
        assert_eq!(check(&cfg, &format!("{}{}", rep("ｶ", 51), kanji(0, 49))), Err("katakana_ratio"));
    }

    #[test]
    fn japanese_ratio() {
        let mut cfg = permissive();
        cfg.min_japanese_ratio = 0.5;
        // Whitespace is not in the denominator.
        assert_eq!(check(&cfg, &format!("{} {}\n\u{3000}{}", kanji(0, 25), rep("の", 25), rep("x", 50))), Ok(()));
        assert_eq!(check(&cfg, &format!("{} {}\n\u{3000}{}", kanji(0, 25), rep("の", 24), rep("x", 51))), Err("japanese_ratio"));
    }

    #[test]
    fn sentence_length() {
        let mut cfg = permissive();
        cfg.min_avg_sentence_length = 20.0;
        cfg.max_avg_sentence_length = 90.0;
        let sentence = |n: usize| format!("{}。", rep("あ", n - 1));
        // Average exactly 20, and just below.
        assert_eq!(check(&cfg, &format!("{}{}", sentence(10), sentence(30))), Ok(()));
        assert_eq!(check(&cfg, &format!("{}{}", sentence(10), sentence(29))), Err("sentence_length"));
        // Average exactly 90, and just above; line ends end sentences too.
        assert_eq!(check(&cfg, &format!("{}\n{}", rep("い", 80), rep("い", 100))), Ok(()));
        assert_eq!(check(&cfg, &format!("{}\n{}", rep("い", 80), rep("い", 101))), Err("sentence_length"));
        // Every terminator ends a sentence; repeated terminators stay with the sentence before.
        assert_eq!(sentences("あ。い．う！え？お!か?き！！\n く \n\n"), vec!["あ。", "い．", "う！", "え？", "お!", "か?", "き！", "く"]);
        assert_eq!(check(&cfg, ""), Err("sentence_length"));
    }

    #[test]
    fn longest_sentence() {
        let mut cfg = permissive();
        cfg.max_sentence_length = 200;
        let text = |n: usize| format!("{}。{}？", rep("あ", 20), rep("え", n - 1));
        assert_eq!(check(&cfg, &text(200)), Ok(()));
        assert_eq!(check(&cfg, &text(201)), Err("longest_sentence"));
    }

    #[test]
    fn ellipsis_endings() {
        let mut cfg = permissive();
        cfg.max_ellipsis_ratio = 0.2;
        // 10 sentences, `k` of which end in ・ or … (at a line end: neither ends a sentence).
        let text = |k: usize| {
            let mut lines: Vec<String> = (0..10).map(|i| format!("{}{}。", kanji(i * 10, 10), rep("の", 5))).collect();
            for (i, line) in lines.iter_mut().take(k).enumerate() {
                *line = format!("{}{}", kanji(i * 10, 10), if i % 2 == 0 { "…" } else { "・・・" });
            }
            lines.join("\n")
        };
        assert_eq!(check(&cfg, &text(2)), Ok(()));
        assert_eq!(check(&cfg, &text(3)), Err("ellipsis_endings"));
        // …。 ends in 。.
        assert_eq!(check(&cfg, &rep("あ…。", 10)), Ok(()));
    }

    #[test]
    fn duplicate_lines() {
        let mut cfg = permissive();
        cfg.max_duplicate_line_ratio = 0.3;
        // 100 lines, `k` of them repeating the first line (blank lines do not count).
        let text = |k: usize| {
            let mut lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
            for line in lines.iter_mut().skip(1).take(k) {
                *line = "  line 0".to_string();
            }
            lines.join("\n\n")
        };
        assert_eq!(check(&cfg, &text(30)), Ok(()));
        assert_eq!(check(&cfg, &text(31)), Err("duplicate_lines"));
    }

    #[test]
    fn duplicate_line_chars() {
        let mut cfg = permissive();
        cfg.max_duplicate_line_char_ratio = 0.2;
        // A 10-character line 3 times (20 repeated characters) and unique lines: 100 vs 99 in all.
        let text = |unique: usize| format!("{0}\n{0}\n{0}\n{1}\n{2}", rep("a", 10), rep("b", 35), rep("c", unique - 35));
        assert_eq!(check(&cfg, &text(70)), Ok(()));
        assert_eq!(check(&cfg, &text(69)), Err("duplicate_line_chars"));
    }

    #[test]
    fn duplicate_sentences() {
        let mut cfg = permissive();
        cfg.max_duplicate_sentence_ratio = 0.3;
        // 10 sentences on one line, `k` repeating the first.
        let text = |k: usize| (0..10).map(|i| format!("{}。", kanji(if i <= k { 0 } else { i * 5 }, 5))).collect::<String>();
        assert_eq!(check(&cfg, &text(3)), Ok(()));
        assert_eq!(check(&cfg, &text(4)), Err("duplicate_sentences"));

        let mut cfg = permissive();
        cfg.max_duplicate_sentence_char_ratio = 0.2;
        // あああああ。 (6 characters) 3 times, unique sentences making 60 or 59 in all.
        let text = |total: usize| format!("{0}{0}{0}{1}！{2}？", "あああああ。", rep("い", 20), rep("う", total - 18 - 21 - 1));
        assert_eq!(check(&cfg, &text(60)), Ok(())); // 12 / 60
        assert_eq!(check(&cfg, &text(59)), Err("duplicate_sentence_chars")); // 12 / 59
    }

    /// `k` copies of an `n`-character block, each followed by a unique character, then unique
    /// characters up to `len` in all: the block is the most frequent n-gram, `k` times.
    fn top_ngram_text(n: usize, k: usize, len: usize) -> String {
        let block: String = "あいうえお".chars().take(n).collect();
        let mut s = String::new();
        for i in 0..k {
            s.push_str(&block);
            s.push_str(&kanji(i, 1));
        }
        let used = s.chars().count();
        s + &kanji(k, len - used)
    }

    #[test]
    fn top_ngrams() {
        for (i, (&t, rule)) in FilterConfig::default().max_top_ngram_ratio.iter().zip(TOP_NGRAM_RULES).enumerate() {
            let n = i + 2;
            let mut cfg = permissive();
            cfg.max_top_ngram_ratio[i] = t;
            let k = (t * 100.0).round() as usize;
            // k / 100 n-grams exactly at the threshold passes, k / 99 fails.
            let pass = top_ngram_text(n, k, 100 + n - 1);
            let chars: Vec<char> = pass.chars().collect();
            let stats = NgramCounter::new(0).count(&chars, n);
            assert_eq!((stats.top, stats.total), (k, 100));
            assert_eq!(check(&cfg, &pass), Ok(()), "{rule}");
            assert_eq!(check(&cfg, &top_ngram_text(n, k, 99 + n - 1)), Err(rule));
        }
    }

    /// A segment of `r + n - 1` distinct characters twice (so `r` distinct n-grams repeat), then
    /// unique characters, `distinct` distinct n-grams in all.
    fn duplicate_ngram_text(n: usize, r: usize, distinct: usize) -> String {
        let s = r + n - 1;
        let segment: String = (0..s).map(|i| char::from_u32(0x3041 + i as u32).unwrap()).collect();
        let len = distinct + s;
        let mut text = format!("{segment}{}{segment}{}", kanji(0, 1), kanji(1, 1));
        let used = text.chars().count();
        text += &kanji(2, len - used);
        text
    }

    #[test]
    fn duplicate_ngrams() {
        for (i, (&t, rule)) in FilterConfig::default().max_duplicate_ngram_ratio.iter().zip(DUPLICATE_NGRAM_RULES).enumerate() {
            let n = i + 5;
            let mut cfg = permissive();
            cfg.max_duplicate_ngram_ratio[i] = t;
            let r = (t * 100.0).round() as usize;
            let pass = duplicate_ngram_text(n, r, 100);
            let chars: Vec<char> = pass.chars().collect();
            let stats = NgramCounter::new(0).count(&chars, n);
            assert_eq!((stats.repeated, stats.distinct), (r, 100), "{rule}");
            assert_eq!(check(&cfg, &pass), Ok(()), "{rule}");
            assert_eq!(check(&cfg, &duplicate_ngram_text(n, r, 99)), Err(rule));
        }
        // The thresholds fall linearly from 0.15 to 0.10.
        for (i, t) in FilterConfig::default().max_duplicate_ngram_ratio.iter().enumerate() {
            assert!((t - (0.15 - 0.01 * i as f64)).abs() < 1e-12);
        }
    }

    #[test]
    fn ngram_counts() {
        let chars: Vec<char> = "abcabca".chars().collect();
        let mut counter = NgramCounter::new(0);
        assert_eq!(counter.count(&chars, 2), NgramStats { total: 6, top: 2, distinct: 3, repeated: 3 });
        assert_eq!(counter.count(&chars, 3), NgramStats { total: 5, top: 2, distinct: 3, repeated: 2 });
        assert_eq!(counter.count(&chars, 8), NgramStats::default());
        // A ~100 KB text is quick.
        let big: String = (0..33_000).map(|i| char::from_u32(0x4E00 + (i * 7919 % 5000) as u32).unwrap()).collect();
        let start = std::time::Instant::now();
        let _ = Filters::new(&permissive()).unwrap().check_text(&big);
        assert!(start.elapsed().as_secs_f64() < 2.0);
    }

    #[test]
    fn hosts() {
        let dir = std::env::temp_dir().join(format!("swallow-filters-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("hosts.txt");
        std::fs::write(&list, "# comment\nExample.com\n.blocked.org  # and subdomains\n*.star.net\n\n").unwrap();
        let mut cfg = FilterConfig { blocked_hosts_file: Some(list), ..FilterConfig::default() };
        let f = Filters::new(&cfg).unwrap();
        let blocked = |url: &str| f.check_url(url) == Err("host_blocklist");
        // Exact entries: the host only.
        assert!(blocked("http://example.com/page"));
        assert!(!blocked("http://www.example.com/page"));
        assert!(!blocked("http://example.com.evil.net/"));
        // Dot entries: the domain and every subdomain, but not a longer name.
        assert!(blocked("https://blocked.org"));
        assert!(blocked("https://a.b.blocked.org/x?y#z"));
        assert!(!blocked("https://notblocked.org/"));
        assert!(blocked("https://x.star.net/"));
        // Port, userinfo, uppercase, trailing dot.
        assert!(blocked("http://EXAMPLE.COM:8080/"));
        assert!(blocked("http://user:pw@Example.Com:80/a"));
        assert!(blocked("HTTP://example.com./"));
        assert!(blocked("//www.blocked.org/"));
        // The bundled defaults.
        assert!(blocked("https://egg.5ch.net/test/read.cgi/x"));
        assert!(blocked("https://5ch.net/"));
        assert!(blocked("https://ja.wikipedia.org/wiki/日本"));
        assert!(!blocked("https://www.example.jp/"));
        // Unparsable URLs are not blocked.
        for url in ["", "example.com", "://example.com", "http://", "http://:80/", "1http://example.com", "http://exa mple.com/"] {
            assert_eq!(f.check_url(url), Ok(()), "{url:?}");
        }
        assert_eq!(url_host("http://[::1]:8080/"), Some("[::1]".into()));
        assert_eq!(url_host("https://a@b@Host.JP?q"), Some("host.jp".into()));
        // Without the defaults, only the user's list.
        cfg.blocked_hosts_defaults = false;
        let f = Filters::new(&cfg).unwrap();
        assert_eq!(f.check_url("https://ja.wikipedia.org/"), Ok(()));
        assert_eq!(f.check_url("https://example.com/"), Err("host_blocklist"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn user_ng_words_are_added() {
        let dir = std::env::temp_dir().join(format!("swallow-filters-ng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("ng.txt");
        std::fs::write(&list, "# comment\n禁止語\n  casino \n\n").unwrap();
        let mut cfg = permissive();
        cfg.ng_words_file = Some(list);
        cfg.ng_word_ratio = 0.05;
        let f = Filters::new(&cfg).unwrap();
        assert_eq!(f.ng_chars("禁止語と人妻"), 3);
        // NG words and no Japanese character at all.
        assert_eq!(f.check_text("Casino"), Err("ng_words"));
        assert_eq!(f.check_text("casin"), Ok(()));
        cfg.ng_words_defaults = true;
        let f = Filters::new(&cfg).unwrap();
        assert_eq!(f.ng_chars("禁止語と人妻"), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_errors_name_the_file_and_key() {
        let missing = std::env::temp_dir().join("swallow-no-such-dir/hosts-list.txt");
        let cfg = FilterConfig { blocked_hosts_file: Some(missing.clone()), ..FilterConfig::default() };
        let e = format!("{:#}", Filters::new(&cfg).err().unwrap());
        assert!(e.contains("hosts-list.txt") && e.contains("filters.blocked_hosts_file"), "{e}");
        let cfg = FilterConfig { ng_words_file: Some(missing.with_file_name("ng-list.txt")), ..FilterConfig::default() };
        let e = format!("{:#}", Filters::new(&cfg).err().unwrap());
        assert!(e.contains("ng-list.txt") && e.contains("filters.ng_words_file"), "{e}");
        let mut cfg = FilterConfig::default();
        cfg.max_duplicate_ngram_ratio[2] = f64::NAN;
        let e = format!("{:#}", Filters::new(&cfg).err().unwrap());
        assert!(e.contains("filters.max_duplicate_ngram_ratio[2]"), "{e}");
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let f = Filters::new(&FilterConfig::default()).unwrap();
        for text in ["", "\n", "。", "！！！", "\r\n\r\n", "a", "…", "\u{0}\u{FFFF}", "𠮷野家。"] {
            assert!(f.check_text(text).is_err());
        }
        for url in ["http://[", "http://[::1", "http://@", "http://:@:/", "ftp://ü.example/", "http://例え.テスト/"] {
            let _ = f.check_url(url);
        }
    }
}
