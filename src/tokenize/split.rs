//! Where the pieces of a byte-level tokenizer's text begin and end: its split regex, as the
//! `tokenizers` crate runs it (a backtracking engine: alternatives in order, leftmost first).
//!
//! GPT-2's and Llama 3's patterns are scanned by hand, character class by character class, which
//! costs a few instructions a byte where a regex search per piece costs hundreds (each piece is a
//! separate anchored search). The classes are the `regex` crate's own Unicode tables (\p{L},
//! \p{N}, \s, and `(?i)` case folding), read from `regex-syntax`, so both agree on every
//! character; `tests` compares the scanners with the regexes on real text and random strings.
//!
//! Any other pattern that ends in the same look-ahead tail `\s+(?!\S)|\s+` is run with the regex
//! crate without that alternative (`A|\s+`) and the look-ahead emulated: where the match is a
//! whitespace run that `A` does not match there, a run of two or more characters before a
//! non-space gives back its last character.

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::{Class, HirKind};

/// GPT-2's ByteLevel regex (`use_regex: true`).
pub const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's Split regex.
pub const LLAMA3: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The look-ahead tail every handled pattern ends with.
const LOOKAHEAD_TAIL: &str = r"|\s+(?!\S)|\s+";

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;

/// \p{L}, \p{N} and \s of every character, from the regex crate's tables.
struct Classes {
    bmp: Vec<u8>,
    /// (first, last, class bits) above U+FFFF, sorted.
    astral: Vec<(u32, u32, u8)>,
}

/// The ranges of a regex character class, as regex-syntax parses it.
fn ranges(class: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::parse(class).expect("a valid class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect(),
        k => panic!("{class} parsed as {k:?}"),
    }
}

impl Classes {
    fn new() -> Self {
        let mut bmp = vec![0u8; 0x10000];
        let mut astral: Vec<(u32, u32, u8)> = Vec::new();
        for (class, bit) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            for (a, b) in ranges(class) {
                for c in a..=b.min(0xFFFF) {
                    bmp[c as usize] |= bit;
                }
                if b > 0xFFFF {
                    astral.push((a.max(0x10000), b, bit));
                }
            }
        }
        astral.sort();
        Classes { bmp, astral }
    }

    fn of(&self, c: char) -> u8 {
        let c = c as u32;
        if c < 0x10000 {
            return self.bmp[c as usize];
        }
        let i = self.astral.partition_point(|r| r.0 <= c);
        // Ranges of different classes do not overlap (a character has one general category; no
        // astral character is white space), so the last range starting at or before c decides.
        match i.checked_sub(1).map(|i| self.astral[i]) {
            Some((_, last, bit)) if c <= last => bit,
            _ => 0,
        }
    }
}

enum Kind {
    Gpt2,
    /// Llama 3's pattern; `fold[i]`: the characters `(?i)` matches for the i-th of "strvemld".
    Llama3 { fold: Vec<Vec<char>> },
    /// Any other pattern with the look-ahead tail: `A|\s+` and `A` alone.
    Regex { pieces: Regex, head: Regex },
}

pub struct Splitter {
    kind: Kind,
    classes: Classes,
}

impl Splitter {
    /// The splitter for `pattern`, or why it is not handled.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let kind = match pattern {
            GPT2 => Kind::Gpt2,
            LLAMA3 => Kind::Llama3 { fold: "strvemld".chars().map(case_fold).collect() },
            _ => {
                let head = pattern
                    .strip_suffix(LOOKAHEAD_TAIL)
                    .ok_or_else(|| format!("split pattern {pattern:?} (handled: patterns ending in {LOOKAHEAD_TAIL:?})"))?;
                let compile = |p: &str| Regex::new(p).map_err(|e| format!("split pattern {pattern:?}: {e}"));
                Kind::Regex { pieces: compile(&format!("{head}|\\s+"))?, head: compile(head)? }
            }
        };
        Ok(Splitter { kind, classes: Classes::new() })
    }

    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Gpt2 => "ByteLevel regex",
            Kind::Llama3 { .. } => "Llama 3 split regex",
            Kind::Regex { .. } => "custom split regex",
        }
    }

    /// The end of the piece that starts at `at` (< text.len()).
    pub fn piece_end(&self, text: &str, at: usize) -> usize {
        match &self.kind {
            Kind::Gpt2 => self.gpt2(text, at),
            Kind::Llama3 { fold } => self.llama3(text, at, fold),
            Kind::Regex { pieces, head } => regex_piece_end(pieces, head, text, at),
        }
    }

    /// The end of the run of characters from `at` whose class satisfies `keep`.
    fn run(&self, text: &str, at: usize, keep: impl Fn(char, u8) -> bool) -> usize {
        text[at..].char_indices().find(|&(_, c)| !keep(c, self.classes.of(c))).map_or(text.len(), |(i, _)| at + i)
    }

    /// The end of a whitespace run [at, end): `\s+(?!\S)|\s+` — before a non-space a run of two
    /// or more characters leaves its last one.
    fn space_run(&self, text: &str, at: usize) -> usize {
        let end = self.run(text, at, |_, k| k & SPACE != 0);
        let last = text[at..end].chars().next_back().map_or(0, char::len_utf8);
        if end < text.len() && end - at > last { end - last } else { end }
    }

    fn gpt2(&self, text: &str, at: usize) -> usize {
        let rest = &text[at..];
        for c in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
            if rest.starts_with(c) {
                return at + c.len();
            }
        }
        let q = if rest.starts_with(' ') { at + 1 } else { at };
        if let Some(c) = text[q..].chars().next() {
            let k = self.classes.of(c);
            if k & LETTER != 0 {
                return self.run(text, q, |_, k| k & LETTER != 0);
            }
            if k & NUMBER != 0 {
                return self.run(text, q, |_, k| k & NUMBER != 0);
            }
            if k == 0 {
                return self.run(text, q, |_, k| k == 0);
            }
        }
        self.space_run(text, at)
    }

    fn llama3(&self, text: &str, at: usize, fold: &[Vec<char>]) -> usize {
        let rest = &text[at..];
        let mut chars = rest.chars();
        let c0 = chars.next().expect("at < text.len()");
        // (?i:'s|'t|'re|'ve|'m|'ll|'d); `fold` is for s t r v e m l d.
        if c0 == '\'' {
            let is = |c: Option<char>, letter: usize| c.is_some_and(|c| fold[letter].contains(&c));
            let (c1, c2) = (chars.next(), chars.clone().next());
            let len = |n: usize| at + 1 + rest[1..].chars().take(n).map(char::len_utf8).sum::<usize>();
            if is(c1, 0) || is(c1, 1) || is(c1, 5) || is(c1, 7) {
                return len(1);
            }
            if (is(c1, 2) || is(c1, 3)) && is(c2, 4) || is(c1, 6) && is(c2, 6) {
                return len(2);
            }
        }
        let k0 = self.classes.of(c0);
        let letters = |from: usize| self.run(text, from, |_, k| k & LETTER != 0);
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if k0 & LETTER != 0 {
            return letters(at);
        }
        let second = at + c0.len_utf8();
        if k0 & NUMBER == 0 && c0 != '\r' && c0 != '\n' {
            if let Some(c1) = text[second..].chars().next() {
                if self.classes.of(c1) & LETTER != 0 {
                    return letters(second);
                }
            }
        }
        // \p{N}{1,3}
        if k0 & NUMBER != 0 {
            return text[at..].char_indices().take(3).take_while(|&(_, c)| self.classes.of(c) & NUMBER != 0).last().map(|(i, c)| at + i + c.len_utf8()).unwrap();
        }
        // ' '?[^\s\p{L}\p{N}]+[\r\n]*
        let q = if c0 == ' ' { second } else { at };
        if text[q..].chars().next().is_some_and(|c| self.classes.of(c) == 0) {
            let end = self.run(text, q, |_, k| k == 0);
            return self.run(text, end, |c, _| c == '\r' || c == '\n');
        }
        // \s*[\r\n]+: up to the last line break of the whitespace run.
        let end = self.run(text, at, |_, k| k & SPACE != 0);
        if let Some(i) = text[at..end].rfind(['\r', '\n']) {
            return at + i + 1;
        }
        self.space_run(text, at)
    }
}

/// The characters `(?i)c` matches (simple case folding, as the regex crate does it).
fn case_fold(c: char) -> Vec<char> {
    ranges(&format!("(?i:[{c}])")).into_iter().flat_map(|(a, b)| (a..=b).filter_map(char::from_u32)).collect()
}

/// The generic path: `pieces` = `A|\s+`, `head` = `A`, searched anchored at `at`.
fn regex_piece_end(pieces: &Regex, head: &Regex, text: &str, at: usize) -> usize {
    let from_here = |re: &Regex| re.search_half(&Input::new(text).range(at..).anchored(Anchored::Yes));
    let end = from_here(pieces).expect("`\\s+` and the pattern match every character").offset();
    let piece = &text[at..end];
    if end < text.len() && piece.chars().all(char::is_whitespace) && from_here(head).is_none() {
        let last = piece.chars().next_back().unwrap().len_utf8();
        if piece.len() > last {
            return end - last;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces of `text` by `s`.
    fn pieces<'t>(s: &Splitter, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let end = s.piece_end(text, at);
            assert!(end > at, "{text:?} at {at}");
            out.push(&text[at..end]);
            at = end;
        }
        out
    }

    /// The hand scanners give the pieces the regex path gives (the same pattern through
    /// `regex_piece_end`) on real text, the edge cases and random strings of awkward characters.
    #[test]
    fn scanners_equal_the_regexes() {
        let mut texts = crate::tokenize::tests::corpus();
        let alphabet: Vec<char> = "  \t\r\n\u{3000}\u{85}\u{a0}'sStTrReEvVmMlLdDſKa日本語です。、12٣½Ⅻ.,!?-_\"😀\u{301}\u{200d}\u{10400}\u{1d7ce}\u{e000}x"
            .chars()
            .collect();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let n = (seed % 12) as usize + 1;
            let mut t = String::new();
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                t.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            texts.push(t);
        }
        for pattern in [GPT2, LLAMA3] {
            let fast = Splitter::new(pattern).unwrap();
            assert!(!matches!(fast.kind, Kind::Regex { .. }));
            let head = pattern.strip_suffix(LOOKAHEAD_TAIL).unwrap();
            let slow = Splitter {
                kind: Kind::Regex { pieces: Regex::new(&format!("{head}|\\s+")).unwrap(), head: Regex::new(head).unwrap() },
                classes: Classes::new(),
            };
            for t in &texts {
                assert_eq!(pieces(&fast, t), pieces(&slow, t), "{pattern}: {t:?}");
            }
        }
    }

    #[test]
    fn classes_are_the_regex_crates() {
        let c = Classes::new();
        for (ch, want) in [('a', LETTER), ('日', LETTER), ('٣', NUMBER), ('Ⅻ', NUMBER), ('\u{3000}', SPACE), ('\u{85}', SPACE), ('😀', 0), ('\u{10400}', LETTER), ('\u{1d7ce}', NUMBER), ('\u{301}', 0)] {
            assert_eq!(c.of(ch), want, "{ch:?}");
        }
        assert_eq!(case_fold('s'), vec!['S', 's', 'ſ']);
        assert_eq!(case_fold('t'), vec!['T', 't']);
    }
}
