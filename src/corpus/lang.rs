//! Language identification: whether an extracted text is Japanese.
//!
//! The score is a character count, no model: one pass over the text, classifying each letter.
//! - Japanese letters: kana (hiragana, katakana with ー, half-width katakana) and CJK ideographs
//!   (with 々 〆 〇). Other letters (Latin, Hangul, Cyrillic, ...) count by the word: a run of them
//!   is one unit, since "NumPy" in a Japanese sentence weighs about what one kanji does. Digits,
//!   punctuation, symbols and whitespace do not count.
//! - share = Japanese letters / (Japanese letters + other words).
//! - Chinese is ideographs without kana, so the share is scaled by the kana ratio (kana / Japanese
//!   letters): 0 at 2% kana or less, rising linearly to full at 10%. Ordinary Japanese prose has
//!   30–70% kana; a Chinese text that borrows an odd の stays far below.
//!
//! Hence a text without kana scores 0 (English, Chinese, Korean: no statistical detector needed,
//! and none of whatlang's Chinese/Japanese confusion), and kanji-only Japanese (a headline) scores
//! 0 too, which a document of any length is not.

use super::script::{script, Script};
use serde::Deserialize;

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

/// Kana ratios at and below which the score is 0, and from which it is not scaled down.
const KANA_FLOOR: f64 = 0.02;
const KANA_FULL: f64 = 0.10;

/// The score in [0, 1] that `text` is Japanese (the rule is in the module header).
pub fn japanese_score(text: &str) -> f64 {
    let (mut kana, mut kanji, mut other_words) = (0usize, 0usize, 0usize);
    let mut in_word = false;
    for c in text.chars() {
        let (is_kana, is_kanji) = (is_kana(c), is_kanji(c));
        kana += usize::from(is_kana);
        kanji += usize::from(is_kanji);
        let other = !is_kana && !is_kanji && c.is_alphabetic();
        other_words += usize::from(other && !in_word);
        in_word = other;
    }
    let japanese = (kana + kanji) as f64;
    if japanese == 0.0 {
        return 0.0;
    }
    let share = japanese / (japanese + other_words as f64);
    let kana_scale = ((kana as f64 / japanese - KANA_FLOOR) / (KANA_FULL - KANA_FLOOR)).clamp(0.0, 1.0);
    share * kana_scale
}

/// Kana for the score: hiragana, katakana and ー.
fn is_kana(c: char) -> bool {
    matches!(script(c), Script::Hiragana | Script::Katakana | Script::Prolonged)
}

fn is_kanji(c: char) -> bool {
    script(c) == Script::Kanji
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_japanese(text: &str) -> bool {
        japanese_score(text) >= LangConfig::default().threshold
    }

    #[test]
    fn scores() {
        assert_eq!(japanese_score(""), 0.0);
        assert_eq!(japanese_score("1234 !?… 。、"), 0.0);
        assert_eq!(japanese_score("ひらがなだけ"), 1.0);
        let ja = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\
                  何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。";
        assert_eq!(japanese_score(ja), 1.0);
        let tech = "PythonのライブラリであるNumPyとpandasを使って、CSVファイルのデータを分析します。\
                    Dockerのcontainer上でJupyter Notebookを起動してください。";
        assert!(japanese_score(tech) > 0.7, "{}", japanese_score(tech));
        for not in [
            "The quick brown fox jumps over the lazy dog.",
            "我们今天去北京参观了故宫和长城，天气非常好。",
            "我們今天去台北參觀了故宮博物院，天氣非常好。",
            "오늘은 서울에서 친구를 만나서 점심을 먹었습니다.",
        ] {
            assert_eq!(japanese_score(not), 0.0, "{not}");
        }
        assert!(is_japanese("令和〇年のｶﾞｲﾄﾞﾌﾞｯｸ"));
        // Chinese with a borrowed の: scaled down, not Japanese.
        assert!(!is_japanese("这是我的の猫，它非常可爱，每天都在家里睡觉。"));
        // English with a Japanese word in it.
        assert!(!is_japanese("In Japan, people say ありがとう to thank someone, and the word is used in many situations every day."));
        assert!(LangConfig::default() == LangConfig { threshold: 0.5 });
    }

    /// What a character count cannot do, on short texts (a document of a few hundred characters
    /// has kana in the proportions of its language): kanji-only Japanese is not told from Chinese,
    /// and a kana-laden foreign phrase passes.
    #[test]
    fn blind_spots() {
        for (text, score) in [
            ("本日休業", 0.0),
            ("平成〇年々", 0.0),
            ("Web開発 HTML CSS JavaScript入門", 0.0),
            ("台灣の美食地圖", 1.0),
            ("Naruto (ナルト) Shippuden episode 1", 0.5),
        ] {
            assert!((japanese_score(text) - score).abs() < 1e-9, "{text}: {}", japanese_score(text));
        }
        // Near the kana floor: one の in twelve characters is Japanese, one in twenty is not.
        assert!(is_japanese("東京都千代田区丸の内一丁目"));
        assert!(!is_japanese("我们在北京大学图书馆里看书，这本の书很有意思。"));
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
