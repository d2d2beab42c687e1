//! Which part of Japanese writing a character is (hiragana, katakana, the prolonged sound mark,
//! kanji, or none): one table for the filters' ratios (filters.rs) and the language score (lang.rs).

/// The classes of Japanese writing a character belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    Hiragana,
    Katakana,
    Kanji,
    Prolonged,
    Other,
}

/// The class of `c`: hiragana, katakana (half-width too), the prolonged sound mark ー (neither),
/// kanji (CJK ideographs of every plane, with 々 〆 〇 〻), or other.
pub(crate) fn script(c: char) -> Script {
    match c as u32 {
        0x3041..=0x3096 | 0x309D..=0x309F => Script::Hiragana,
        0x30FC | 0xFF70 => Script::Prolonged,
        0x30A1..=0x30FA | 0x30FD..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF6F | 0xFF71..=0xFF9F => Script::Katakana,
        0x3005..=0x3007 | 0x303B | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF => Script::Kanji,
        _ => Script::Other,
    }
}
