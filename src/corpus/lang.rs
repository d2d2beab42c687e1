//! Language identification: whether an extracted text is Japanese, by a logistic regression over
//! hashed character 1–3-grams — the kind of classifier Swallow's corpus team used (theirs was not
//! released). The weights (data/corpus/langid.bin, 128 KiB) come from scripts/train_langid.py,
//! trained on the HTML documentation Debian ships in many languages and measured on a book held
//! out (docs/CORPUS.md); scripts/langid_features.py is the Python side of the same features.
//!
//! Features: the text is normalised (ASCII letters lowercased, ASCII digits to 0, whitespace runs
//! to one space, one space at both ends), and two families of 1-, 2- and 3-grams are hashed into
//! 2^16 buckets: code points (key Σ (c_i + 1) << 21(i-1)) and script classes (`class`, key
//! Σ class_i << 4(i-1) with bit 63 set); bucket = mix64(key) >> 48. A feature is its bucket's count
//! over the number of n-grams, and the score is sigmoid(bias + w · x). The class n-grams let
//! scripts never seen in training (Arabic, Greek) score by their class, not by hash collisions.

use super::script::{script, Script};
use crate::mix::mix64;
use serde::Deserialize;
use std::sync::OnceLock;

/// `[lang]` of the corpus config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LangConfig {
    /// A text is Japanese when its Japanese score reaches this.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_threshold() -> f64 {
    0.5
}

impl Default for LangConfig {
    fn default() -> Self {
        LangConfig { threshold: default_threshold() }
    }
}

const BITS: u32 = 16;
const MAGIC: &[u8; 8] = b"SWLID001";
const MODEL_FILE: &[u8] = include_bytes!("../../data/corpus/langid.bin");
/// Class n-gram keys have bit 63 set; code point keys stay below 2^63.
const CLASS_KEY: u64 = 1 << 63;

struct Model {
    bias: f64,
    weights: Vec<f32>,
}

/// The model file's layout: MAGIC, u32 bits, f32 bias, f32 scale, 2^bits i16 weights (weight =
/// f32(i16) * scale), little-endian.
fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let f = MODEL_FILE;
        let u32_at = |i: usize| u32::from_le_bytes(f[i..i + 4].try_into().unwrap());
        assert!(&f[..8] == MAGIC && u32_at(8) == BITS && f.len() == 20 + (2usize << BITS), "data/corpus/langid.bin is not a {BITS}-bit model");
        let (bias, scale) = (f32::from_bits(u32_at(12)), f32::from_bits(u32_at(16)));
        let weights = f[20..].chunks_exact(2).map(|q| f32::from(i16::from_le_bytes([q[0], q[1]])) * scale).collect();
        Model { bias: f64::from(bias), weights }
    })
}

/// The script class of `c` for the class n-grams (1..=10; scripts/langid_features.py lists the
/// same ranges).
fn class(c: char) -> u64 {
    match script(c) {
        Script::Hiragana => 1,
        Script::Katakana => 2,
        Script::Prolonged => 3,
        Script::Kanji => 4,
        Script::Other => match c as u32 {
            0x3000..=0x303F | 0xFF01..=0xFF65 => 5,
            0x61..=0x7A | 0x41..=0x5A | 0xC0..=0x24F | 0x1E00..=0x1EFF => 6,
            0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => 7,
            0x20 => 8,
            0x00..=0x7F => 9,
            _ => 10,
        },
    }
}

/// `text` normalised for the features (see the module header).
fn normalise(text: &str) -> Vec<char> {
    let mut out = vec![' '];
    for c in text.chars() {
        let c = match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '0'..='9' => '0',
            c if c.is_whitespace() => ' ',
            c => c,
        };
        if !(c == ' ' && out.last() == Some(&' ')) {
            out.push(c);
        }
    }
    if out.last() != Some(&' ') {
        out.push(' ');
    }
    if out.len() == 1 {
        out.push(' ');
    }
    out
}

/// Adds `w[bucket]` of every 1-, 2- and 3-gram key of `units` (each below 2^shift) to `sum`,
/// returning the number of n-grams.
fn add_ngrams(units: &[u64], shift: u32, tag: u64, weights: &[f32], sum: &mut f64) -> usize {
    let weight = |key: u64| f64::from(weights[(mix64(key | tag) >> (64 - BITS)) as usize]);
    let mut n = 0;
    for (i, &u) in units.iter().enumerate() {
        *sum += weight(u);
        n += 1;
        if i >= 1 {
            *sum += weight(units[i - 1] | u << shift);
            n += 1;
        }
        if i >= 2 {
            *sum += weight(units[i - 2] | units[i - 1] << shift | u << (2 * shift));
            n += 1;
        }
    }
    n
}

/// The probability in [0, 1] that `text` is Japanese.
pub fn japanese_score(text: &str) -> f64 {
    let m = model();
    let chars = normalise(text);
    let code_points: Vec<u64> = chars.iter().map(|&c| c as u64 + 1).collect();
    let classes: Vec<u64> = chars.iter().map(|&c| class(c)).collect();
    let mut sum = 0.0;
    let n = add_ngrams(&code_points, 21, 0, &m.weights, &mut sum) + add_ngrams(&classes, 4, CLASS_KEY, &m.weights, &mut sum);
    1.0 / (1.0 + (-(m.bias + sum / n as f64)).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_japanese(text: &str) -> bool {
        japanese_score(text) >= LangConfig::default().threshold
    }

    #[test]
    fn normalisation_and_classes() {
        let n = |t: &str| normalise(t).into_iter().collect::<String>();
        assert_eq!(n(""), "  ");
        assert_eq!(n("  \t "), "  ");
        assert_eq!(n("Ab 12\u{3000}\n\nÉ"), " ab 00 É ");
        assert_eq!(n("日本語"), " 日本語 ");
        let classes: Vec<u64> = "あアー日、ＡaéI한 1Жب".chars().map(class).collect();
        assert_eq!(classes, [1, 2, 3, 4, 5, 5, 6, 6, 6, 7, 8, 9, 10, 10]);
    }

    /// The model read back: 2^16 weights, finite, not all zero.
    #[test]
    fn model_file() {
        let m = model();
        assert_eq!(m.weights.len(), 1 << BITS);
        assert!(m.bias.is_finite() && m.weights.iter().all(|w| w.is_finite()));
        assert!(m.weights.iter().filter(|w| **w != 0.0).count() > 1000);
    }

    /// The held-out examples of tests/fixtures/corpus/langid_eval.jsonl (pieces and paragraphs of
    /// the Debian Administrator's Handbook in 19 languages, which training never saw): the score
    /// is the one scripts/train_langid.py computed (same features, same weights), and the
    /// accuracy is what docs/CORPUS.md reports.
    #[test]
    fn held_out_examples() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus/langid_eval.jsonl");
        let (mut right, mut total) = (std::collections::BTreeMap::<String, (usize, usize)>::new(), 0);
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = e["text"].as_str().unwrap();
            let score = japanese_score(text);
            let expected = e["score"].as_f64().unwrap();
            assert!((score - expected).abs() < 1e-5, "{text:?}: {score} against Python's {expected}");
            let group = if e["japanese"].as_bool().unwrap() { "ja" } else { e["lang"].as_str().unwrap() };
            let r = right.entry(if ["ja", "zh", "ko"].contains(&group) { group.into() } else { "other".into() }).or_default();
            r.0 += usize::from((score >= 0.5) == e["japanese"].as_bool().unwrap());
            r.1 += 1;
            total += 1;
        }
        assert_eq!(total, 2500);
        for (group, floor) in [("ja", 0.95), ("zh", 0.99), ("ko", 0.99), ("other", 0.99)] {
            let (r, n) = right[group];
            assert!(r as f64 >= floor * n as f64, "{group}: {r}/{n} right");
        }
    }

    const JAPANESE: &[&str] = &[
        "今日はとても良い天気ですね。",
        "明日の会議は午前十時から始まります。",
        "この商品は送料無料でお届けします。",
        "東京駅から新幹線で大阪へ向かいました。",
        "お問い合わせはこちらのフォームからどうぞ。",
        "彼女は毎朝コーヒーを飲んでから仕事に行く。",
        "日本の経済は緩やかに回復している。",
        "子供たちは公園で元気に遊んでいます。",
        "新しいスマートフォンが来月発売される予定です。",
        "週末は家族と一緒に映画を見に行きました。",
        "この料理のレシピを教えてください。",
        "政府は新たな経済対策を発表した。",
        "桜の花が満開になり、多くの人が花見を楽しんだ。",
        "ログインするにはメールアドレスとパスワードが必要です。",
        "私は大学で日本文学を専攻しています。",
        "台風の影響で電車が大幅に遅れている。",
        "ご利用ありがとうございました。",
        "図書館で本を三冊借りてきた。",
        "冬になると北海道では雪がたくさん降ります。",
        "会員登録は無料で、すぐに始められます。",
        "ｶﾀｶﾅの半角表記もあります。",
    ];
    const ENGLISH: &[&str] = &[
        "The weather is very nice today.",
        "The meeting starts at ten tomorrow morning.",
        "Free shipping on all orders over fifty dollars.",
        "We took the train from London to Manchester.",
        "Please contact us using the form below.",
        "She drinks coffee every morning before work.",
        "The economy is slowly recovering.",
        "Children are playing happily in the park.",
        "A new smartphone will be released next month.",
        "I went to see a movie with my family on the weekend.",
        "Please tell me the recipe for this dish.",
        "The government announced new economic measures.",
        "Cherry blossoms are in full bloom this week.",
        "You need an email address and password to log in.",
        "I major in Japanese literature at university.",
        "Trains are delayed due to the typhoon.",
        "Thank you for your purchase.",
        "I borrowed three books from the library.",
        "It snows a lot in Hokkaido in winter.",
        "Registration is free and you can start right away.",
    ];
    const CHINESE: &[&str] = &[
        "今天天气非常好。",
        "明天的会议上午十点开始。",
        "本商品全国包邮。",
        "我们从北京坐高铁去上海。",
        "请通过下面的表格联系我们。",
        "她每天早上上班前都喝咖啡。",
        "中国经济正在稳步复苏。",
        "孩子们在公园里快乐地玩耍。",
        "新款智能手机将于下个月发布。",
        "周末我和家人一起去看电影了。",
        "今天天氣非常好。",
        "明天的會議上午十點開始。",
        "我們從台北坐高鐵去高雄。",
        "請通過下面的表格聯繫我們。",
        "她每天早上上班前都喝咖啡。",
        "孩子們在公園裡快樂地玩耍。",
        "新款智慧型手機將於下個月發佈。",
        "週末我和家人一起去看電影了。",
        "政府宣佈了新的經濟措施。",
        "冬天北海道會下很多雪。",
    ];
    const KOREAN: &[&str] = &[
        "오늘은 날씨가 정말 좋네요.",
        "내일 회의는 오전 열 시에 시작합니다.",
        "이 상품은 무료로 배송해 드립니다.",
        "서울역에서 기차를 타고 부산에 갔습니다.",
        "아래 양식을 통해 문의해 주세요.",
        "그녀는 매일 아침 커피를 마시고 출근한다.",
        "한국 경제는 천천히 회복되고 있다.",
        "아이들이 공원에서 신나게 놀고 있어요.",
        "새로운 스마트폰이 다음 달에 출시될 예정입니다.",
        "주말에 가족과 함께 영화를 보러 갔습니다.",
        "이 요리의 레시피를 알려 주세요.",
        "정부는 새로운 경제 대책을 발표했다.",
        "벚꽃이 만개해서 많은 사람들이 꽃구경을 했다.",
        "로그인하려면 이메일 주소와 비밀번호가 필요합니다.",
        "저는 대학교에서 일본 문학을 전공하고 있습니다.",
        "태풍의 영향으로 열차가 크게 지연되고 있다.",
        "이용해 주셔서 감사합니다.",
        "도서관에서 책을 세 권 빌려 왔다.",
        "大韓民國 헌법 제1조에 따르면 대한민국은 민주공화국이다.",
        "회원 가입은 무료이며 바로 시작할 수 있습니다.",
    ];
    /// Mixed scripts, with whether each is Japanese.
    const MIXED: &[(&str, bool)] = &[
        ("PythonのライブラリNumPyを使ってデータを分析します。", true),
        ("Google Cloud Platformでサーバーを構築する方法を解説します。", true),
        ("iPhone 15 Proのカメラ性能をレビューしました。", true),
        ("このAPIはJSON形式でresponseを返します。", true),
        ("GitHubのpull requestをmergeする前にreviewしてください。", true),
        ("Amazon Web Services (AWS) の料金体系について説明します。", true),
        ("Microsoft Officeの最新versionがリリースされた。", true),
        ("machine learningとdeep learningの違いは何ですか？", true),
        ("JavaScriptでDOMを操作する基本的なテクニック", true),
        ("Windows 11にupdateしたらWi-Fiが繋がらなくなった。", true),
        ("Tokyo Olympic Gamesの開会式が行われました。", true),
        ("Linuxのコマンドlsとcdとgrepとsedとawkとfindとxargsとtarを覚えよう。", true),
        ("I love sushi, especially the one called まぐろ, which is tuna.", false),
        ("The word 東京 means eastern capital in Japanese.", false),
        ("Visit our store in Osaka! 営業中 from 9am to 6pm every day of the week.", false),
        ("The anime was called ドラゴンボール in the original Japanese release, and it became famous worldwide.", false),
        ("我们使用Python和TensorFlow进行深度学习研究。", false),
        ("這個App支援iOS和Android系統。", false),
        ("삼성전자 Galaxy S24 스마트폰이 출시되었습니다.", false),
        ("Seoul에서 BTS 콘서트가 열렸습니다.", false),
    ];

    #[test]
    fn accuracy_on_a_labelled_set() {
        let labelled = JAPANESE
            .iter()
            .map(|t| (*t, true))
            .chain(ENGLISH.iter().chain(CHINESE).chain(KOREAN).map(|t| (*t, false)))
            .chain(MIXED.iter().copied());
        let (mut right, mut total) = (0, 0);
        for (text, japanese) in labelled {
            total += 1;
            if is_japanese(text) == japanese {
                right += 1;
            } else {
                eprintln!("wrong: {text} ({})", japanese_score(text));
            }
        }
        assert!(total >= 100);
        let accuracy = right as f64 / total as f64;
        assert!(accuracy >= 0.95, "accuracy {accuracy}");
    }
}
