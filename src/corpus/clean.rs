//! Cleaning a kept document: full-width ，． replaced by 、。 where they dominate, and footer lines
//! (copyright and the like) cut from the end.
//!
//! [`clean`] applies, in this order:
//! 1. Footer trimming (`footer_lines` = 5, `footer_keyword_ratio` = 0.3, `footer_keywords`): the
//!    last `footer_lines` non-blank lines of the text are examined (all of them when the text has
//!    fewer). A line is a keyword line when, lowercased, it contains a keyword, lowercased. When
//!    keyword lines / lines examined > `footer_keyword_ratio` (with the defaults: at least 2 of
//!    the last 5), the text is cut at the start of the earliest keyword line among those examined:
//!    that line and everything after it (keyword or not, blank lines included) is removed, and
//!    then trailing whitespace of what is left. When that line is the text's first non-blank line,
//!    nothing is cut (a footer is never the whole document).
//! 2. Full-width punctuation (`fullwidth_punctuation` = true): ，and ．are "dominant" when the
//!    text has more of them (together) than of 、and 。(together), strictly; then every ，becomes
//!    、and every ．becomes 。. A ，or ．between two digits (ASCII or full-width, as in ３．１４
//!    or １，０００) is a number separator: it is neither counted nor replaced.
//!
//! A text no rule applies to comes back unchanged; no input panics.

use serde::Deserialize;

/// `[clean]` of the corpus config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CleanConfig {
    /// Replace ，．by 、。 where they dominate.
    #[serde(default = "yes")]
    pub fullwidth_punctuation: bool,
    /// How many of the last non-blank lines are examined for a footer (0: no footer trimming).
    #[serde(default = "d_footer_lines")]
    pub footer_lines: usize,
    /// The footer is cut when keyword lines / lines examined exceed this.
    #[serde(default = "d_footer_keyword_ratio")]
    pub footer_keyword_ratio: f64,
    /// Footer keywords, matched case-insensitively anywhere in a line.
    #[serde(default = "d_footer_keywords")]
    pub footer_keywords: Vec<String>,
}

fn yes() -> bool {
    true
}
fn d_footer_lines() -> usize {
    5
}
fn d_footer_keyword_ratio() -> f64 {
    0.3
}
fn d_footer_keywords() -> Vec<String> {
    [
        "copyright",
        "©",
        "(c)",
        "（c）",
        "（ｃ）",
        "all rights reserved",
        "無断転載",
        "無断複製",
        "著作権",
        "プライバシーポリシー",
        "利用規約",
        "会社概要",
        "お問い合わせ",
        "サイトマップ",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Default for CleanConfig {
    fn default() -> Self {
        toml::from_str("").expect("clean defaults")
    }
}

pub fn clean(text: &str, cfg: &CleanConfig) -> String {
    let text = match footer_cut(text, cfg) {
        Some(at) => text[..at].trim_end(),
        None => text,
    };
    if cfg.fullwidth_punctuation {
        if let Some(replaced) = replace_fullwidth(text) {
            return replaced;
        }
    }
    text.to_string()
}

/// The byte offset where the footer starts, when there is one to cut.
fn footer_cut(text: &str, cfg: &CleanConfig) -> Option<usize> {
    let keywords: Vec<String> = cfg.footer_keywords.iter().map(|k| k.to_lowercase()).filter(|k| !k.is_empty()).collect();
    if cfg.footer_lines == 0 || keywords.is_empty() {
        return None;
    }
    // (start offset, line) of the non-blank lines.
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut offset = 0;
    for line in text.split('\n') {
        if !line.trim().is_empty() {
            lines.push((offset, line));
        }
        offset += line.len() + 1;
    }
    let first_start = lines.first()?.0;
    let tail = &lines[lines.len().saturating_sub(cfg.footer_lines)..];
    let hits: Vec<usize> = tail
        .iter()
        .filter(|(_, line)| {
            let lower = line.to_lowercase();
            keywords.iter().any(|k| lower.contains(k.as_str()))
        })
        .map(|(start, _)| *start)
        .collect();
    let ratio = hits.len() as f64 / tail.len() as f64;
    match hits.first() {
        Some(&cut) if ratio > cfg.footer_keyword_ratio && cut > first_start => Some(cut),
        _ => None,
    }
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || ('０'..='９').contains(&c)
}

/// The text with ，．replaced by 、。 when they dominate (module docs), None when they do not.
fn replace_fullwidth(text: &str) -> Option<String> {
    if !text.contains(['，', '．']) {
        return None;
    }
    let chars: Vec<char> = text.chars().collect();
    let separator = |i: usize| i > 0 && i + 1 < chars.len() && is_digit(chars[i - 1]) && is_digit(chars[i + 1]);
    let (mut fullwidth, mut japanese) = (0usize, 0usize);
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '，' | '．' if !separator(i) => fullwidth += 1,
            '、' | '。' => japanese += 1,
            _ => {}
        }
    }
    if fullwidth <= japanese {
        return None;
    }
    let out = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '，' if !separator(i) => '、',
            '．' if !separator(i) => '。',
            _ => c,
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "日本の四季は、それぞれに異なる魅力を持っている。春になると各地で桜が咲き、多くの人々が花見を楽しむ。
夏は気温が高く湿度も上がるため、体調管理に気をつける必要がある。
秋は実りの季節であり、新米や果物がおいしくなる時期でもある。
冬になると北日本では雪が多く降り、一面の銀世界が広がる。";

    #[test]
    fn defaults() {
        let cfg = CleanConfig::default();
        assert!(cfg.fullwidth_punctuation);
        assert_eq!((cfg.footer_lines, cfg.footer_keyword_ratio), (5, 0.3));
        assert!(cfg.footer_keywords.iter().any(|k| k == "all rights reserved"));
        assert_eq!(cfg.footer_keywords.len(), 14);
        let parsed: CleanConfig = toml::from_str("footer_lines = 3\nfooter_keywords = [\"x\"]").unwrap();
        assert_eq!((parsed.footer_lines, parsed.footer_keywords), (3, vec!["x".to_string()]));
        assert!(toml::from_str::<CleanConfig>("footer = 1").is_err());
    }

    #[test]
    fn unchanged_when_no_rule_applies() {
        let cfg = CleanConfig::default();
        for text in [
            BODY,
            "",
            "\n\n",
            "これは，少しだけ全角のカンマを含む。普通の文章です。",
            "円周率は３．１４、千は１，０００。",
            "  前後に空白がある文章です。  \n\n",
        ] {
            assert_eq!(clean(text, &cfg), text);
        }
        // A footer keyword in the body only (not among the last lines) changes nothing.
        let text = format!("著作権について書いた記事です。\n{BODY}\n{BODY}");
        assert_eq!(clean(&text, &cfg), text);
    }

    #[test]
    fn fullwidth_punctuation_only_when_dominant() {
        let cfg = CleanConfig::default();
        // 3 ，． against 2 、。: replaced.
        assert_eq!(clean("これは，テスト．あれは、テスト。それも，", &cfg), "これは、テスト。あれは、テスト。それも、");
        // 2 against 2: unchanged.
        let tie = "これは，テスト．あれは、テスト。";
        assert_eq!(clean(tie, &cfg), tie);
        // 2 against 3: unchanged.
        let fewer = "これは，テスト．あれは、テスト。それも。";
        assert_eq!(clean(fewer, &cfg), fewer);
        // Number separators are neither counted nor replaced.
        assert_eq!(clean("値は３．１４，または1，000．", &cfg), "値は３．１４、または1，000。");
        assert_eq!(clean("値は３．１４と１，０００。", &cfg), "値は３．１４と１，０００。");
        // Off by config.
        let off = CleanConfig { fullwidth_punctuation: false, ..CleanConfig::default() };
        assert_eq!(clean("これは，テスト．", &off), "これは，テスト．");
        assert_eq!(clean("，．", &cfg), "、。");
    }

    #[test]
    fn footer_cut_when_keyword_lines_exceed_the_ratio() {
        let cfg = CleanConfig::default();
        // 2 of the last 5 non-blank lines are keyword lines: cut from the first of them.
        let text = format!("{BODY}\n会社概要\n\nトップへ戻る\nCOPYRIGHT 2024 Example Inc.\n");
        assert_eq!(clean(&text, &cfg), BODY);
        // Case-insensitive, and the cut takes non-keyword lines after the first keyword line.
        let text = format!("{BODY}\n\nAll Rights Reserved.\n次のページ\n(C) Example\n");
        assert_eq!(clean(&text, &cfg), BODY);
        // Only 1 of the last 5 (20%): not cut.
        let one = format!("{BODY}\n© 2024 Example\n");
        assert_eq!(clean(&one, &cfg), one);
        // Blank lines are not lines: 1 of 5 still.
        let blanks = format!("{BODY}\n\n\n\n\n© 2024 Example");
        assert_eq!(clean(&blanks, &cfg), blanks);
        // A shorter text: ratio over its lines. 1 of 2 is over 30%.
        assert_eq!(clean("本文の段落です。\nお問い合わせはこちら", &cfg), "本文の段落です。");
        // Never the whole text.
        let all = "お問い合わせ\n利用規約\nサイトマップ";
        assert_eq!(clean(all, &cfg), all);
        // The ratio and line count are config: with 3 lines examined, 1 keyword line is 33%.
        let three = CleanConfig { footer_lines: 3, ..CleanConfig::default() };
        assert_eq!(clean(&one, &three), BODY);
        let none = CleanConfig { footer_lines: 0, ..CleanConfig::default() };
        let text = format!("{BODY}\n会社概要\nCopyright");
        assert_eq!(clean(&text, &none), text);
        assert_eq!(clean(&text, &cfg), BODY);
        // Both rules together.
        let text = "これは，テスト．\n次の行です．\n利用規約\n著作権";
        assert_eq!(clean(text, &cfg), "これは、テスト。\n次の行です。");
    }

    #[test]
    fn never_panics() {
        let pool: Vec<char> = "あ，．、。\n\r \u{3000}１1©(c)Cé𠮷著作権\u{0}\u{FFFF}ー…・".chars().collect();
        let configs = [
            CleanConfig::default(),
            CleanConfig { footer_lines: 1, footer_keyword_ratio: 0.0, ..CleanConfig::default() },
            CleanConfig { footer_lines: usize::MAX, footer_keyword_ratio: f64::NAN, ..CleanConfig::default() },
            CleanConfig { footer_keywords: vec![String::new(), "ｃ".into()], ..CleanConfig::default() },
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (state >> 58) as usize;
            let text: String = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    pool[(state >> 33) as usize % pool.len()]
                })
                .collect();
            for cfg in &configs {
                let out = clean(&text, cfg);
                assert!(out.chars().count() <= text.chars().count());
            }
        }
    }
}
