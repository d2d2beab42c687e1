#!/usr/bin/env python3
"""Compose swallow's small sample corpus: data/sample/ja.jsonl and data/sample/en.jsonl.

    python3 data/sample/make_corpus.py

All text here was written for this project. Each document picks a topic, fills that topic's slots
once (so the city, dish, train line or character stays the same through the document), and strings
together an opening sentence, a few body sentences (in the order of the pool, so recipe steps stay in order) split into one to three
paragraphs, and sometimes a closing sentence. The fixed seed makes the output reproducible; the
sizes are chosen so that Japanese is about two thirds of the bytes and the total about 220 KB.
One JSON object per line: {"text": ...}.
"""
import json
import os
import random
import re

SEED = 20240607
JA_BYTES = 150_000
EN_BYTES = 75_000
HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------- slot values (shared per document)
JA_SLOTS = {
    "city": ["東京", "大阪", "札幌", "仙台", "名古屋", "京都", "福岡", "広島", "金沢", "那覇",
             "横浜", "神戸", "長野", "松山", "新潟", "熊本", "静岡", "盛岡"],
    "city2": ["青森", "富山", "岡山", "高松", "鹿児島", "宇都宮", "奈良", "函館", "松本", "長崎"],
    "temp": [str(t) for t in range(-3, 36)],
    "rain": ["10", "20", "30", "40", "50", "60", "70", "80", "90"],
    "dish": ["カレー", "肉じゃが", "味噌汁", "親子丼", "焼きそば", "おにぎり", "卵焼き", "豚汁",
             "オムライス", "野菜炒め"],
    "veg": ["玉ねぎ", "にんじん", "じゃがいも", "キャベツ", "大根", "ほうれん草", "ねぎ", "なす"],
    "minutes": ["5", "10", "15", "20", "25", "30"],
    "people": ["二", "三", "四", "五"],
    "line": ["山手線", "中央線", "東海道線", "京浜東北線", "御堂筋線", "東西線", "総武線", "京王線"],
    "station": ["新宿", "渋谷", "品川", "上野", "池袋", "梅田", "天王寺", "博多", "大宮", "立川"],
    "hour": [str(h) for h in range(5, 23)],
    "minute": ["05", "10", "15", "20", "30", "40", "45", "50"],
    "delay": ["五分", "十分", "十五分", "二十分", "三十分"],
    "lang": ["Rust", "Python", "C++", "Go", "Julia", "Fortran"],
    "nodes": ["16", "32", "64", "128", "256", "512"],
    "gpus": ["4", "8"],
    "name": ["太郎", "花子", "次郎", "さくら", "健太", "美咲", "翔", "千尋", "大輔", "由美", "陽菜", "蓮"],
    "job": ["大工", "鍛冶屋", "漁師", "米農家", "薬売り", "機織り職人", "紙すき職人", "炭焼き"],
    "village": ["川辺の村", "山あいの村", "海沿いの町", "峠のふもとの村", "湖のほとりの里"],
    "era": ["江戸時代の中ごろ", "明治のはじめ", "ずっと昔", "戦国の世が終わったころ", "昔々"],
    "season": ["春", "夏", "秋", "冬"],
    "fruit": ["りんご", "みかん", "桃", "ぶどう", "梨", "柿", "いちご"],
    "book": ["歴史の本", "料理の本", "星の図鑑", "推理小説", "旅行記", "詩集"],
    "weekday": ["月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "土曜日", "日曜日"],
    "steps": ["三千", "五千", "七千", "八千", "一万"],
    "subject": ["数学", "英語", "理科", "歴史", "国語", "音楽"],
    "star": ["オリオン座", "北斗七星", "はくちょう座", "さそり座", "カシオペヤ座"],
    "onsen": ["箱根", "草津", "別府", "有馬", "登別", "道後"],
}

EN_SLOTS = {
    "city": ["Boston", "Seattle", "Denver", "Chicago", "Edinburgh", "Dublin", "Toronto", "Melbourne",
             "Portland", "Austin", "Manchester", "Wellington", "Vancouver", "Bristol"],
    "temp": [str(t) for t in range(-5, 34)],
    "rain": ["10", "20", "30", "40", "50", "60", "70", "80"],
    "dish": ["vegetable soup", "tomato pasta", "chicken curry", "fried rice", "lentil stew",
             "potato salad", "pancakes", "omelette"],
    "veg": ["onions", "carrots", "potatoes", "cabbage", "spinach", "peppers", "mushrooms", "leeks"],
    "minutes": ["5", "10", "15", "20", "25", "30", "40"],
    "people": ["two", "three", "four", "six"],
    "line": ["the Northern Line", "the Red Line", "the coastal line", "the airport express",
             "the Green Line", "the valley line"],
    "station": ["Central Station", "Union Station", "Park Street", "Harbour Road", "North Gate",
                "Riverside", "King's Cross"],
    "hour": [str(h) for h in range(5, 12)],
    "minute": ["00", "05", "10", "15", "20", "30", "40", "45", "50"],
    "delay": ["five", "ten", "fifteen", "twenty", "thirty"],
    "lang": ["Rust", "Python", "C++", "Go", "Julia", "Fortran"],
    "nodes": ["16", "32", "64", "128", "256", "512"],
    "gpus": ["four", "eight"],
    "name": ["Anna", "Tom", "Maria", "James", "Sofia", "Daniel", "Emma", "Oliver", "Grace", "Henry",
             "Lucy", "Samuel"],
    "job": ["carpenter", "blacksmith", "fisherman", "miller", "weaver", "baker", "potter", "shepherd"],
    "village": ["a village by the river", "a small town in the hills", "a fishing village on the coast",
                "a farming village at the edge of the forest", "a market town on the old road"],
    "era": ["Long ago", "In the spring of 1843", "Many years ago", "In the last years of the old king",
            "Once upon a time"],
    "season": ["spring", "summer", "autumn", "winter"],
    "fruit": ["apples", "pears", "plums", "cherries", "strawberries", "oranges"],
    "book": ["a history book", "a cookbook", "a guide to the stars", "a detective novel",
             "a travel diary", "a book of poems"],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "steps": ["three thousand", "five thousand", "seven thousand", "ten thousand"],
    "subject": ["mathematics", "history", "chemistry", "music", "geography", "biology"],
    "star": ["Orion", "the Big Dipper", "Cassiopeia", "Cygnus", "Scorpius"],
}

# ---------------------------------------------------------------- Japanese topics
# Each topic: open (one is used first), body (several, shuffled), close (optional ending).
JA = {}

JA["weather"] = dict(
    open=[
        "{weekday}の{city}の天気をお伝えします。",
        "きょうの{city}は、朝から雲の多い天気になっています。",
        "{city}では、けさ気温が{temp}度まで下がりました。",
        "気象台によると、{city}の週末は天気が変わりやすいそうです。",
        "{city}の{season}は、毎年どんな天気になるのでしょうか。",
    ],
    body=[
        "日中の最高気温は{temp}度の予想です。",
        "午後の降水確率は{rain}パーセントです。",
        "夕方からは南よりの風が強まり、にわか雨の降るところがありそうです。",
        "外出の際は、折りたたみの傘を持っていくと安心です。",
        "朝晩と日中の気温差が大きいので、上着で調節してください。",
        "あすは高気圧に覆われて、広い範囲で晴れるでしょう。",
        "山沿いでは雪が降り、道路が凍結するおそれがあります。",
        "湿度が低く、空気が乾燥しています。火の取り扱いに注意してください。",
        "雨は夜のうちにやみ、あすの朝には青空が広がる見込みです。",
        "海上では波が高くなるため、船の便に影響が出るかもしれません。",
        "熱中症を防ぐため、こまめに水分をとるようにしましょう。",
        "{city2}でも、きのうより気温が高くなる見込みです。",
        "この時期としては珍しく、霧が出て見通しの悪いところがありました。",
        "洗濯物は午前中のうちに外に干すのがよさそうです。",
        "台風の進路によっては、週の後半に大雨となる可能性があります。",
        "花粉の飛ぶ量は、きょうは多いと予想されています。",
        "夜空が晴れるため、放射冷却で朝は冷え込みが強まります。",
        "天気図を見ると、日本の東の海上に低気圧があります。",
    ],
    close=[
        "最新の気象情報に気をつけてお過ごしください。",
        "以上、{city}の天気でした。",
        "あすも元気に一日を過ごしましょう。",
    ],
)

JA["cooking"] = dict(
    open=[
        "きょうは家庭で作れる{dish}の作り方を紹介します。",
        "{people}人分の{dish}を作ってみましょう。",
        "寒い日には、温かい{dish}が食べたくなります。",
        "母から教わった{dish}は、今でも私の得意料理です。",
        "忙しい平日の夜でも、{dish}なら手早く作れます。",
    ],
    body=[
        "まず、{veg}をよく洗って、食べやすい大きさに切ります。",
        "鍋に油を少し入れて、中火で{veg}を炒めます。",
        "水を加えて沸騰したら、火を弱めて{minutes}分ほど煮ます。",
        "味見をしながら、しょうゆと砂糖で味を調えます。",
        "だしは昆布とかつお節から取ると、香りがぐっとよくなります。",
        "ご飯は少し固めに炊いておくと、仕上がりがべたつきません。",
        "材料は前の日に切っておくと、当日の手間が省けます。",
        "最後に火を止めてから、みそを溶き入れるのがこつです。",
        "卵は割りほぐして、だしと塩をひとつまみ加えます。",
        "焦げないように、ときどき鍋の底からかき混ぜてください。",
        "子どもと一緒に作るなら、野菜をちぎる作業を任せるとよいでしょう。",
        "残った分は冷蔵庫で保存し、二日以内に食べきりましょう。",
        "{veg}の甘みが出て、やさしい味に仕上がります。",
        "盛り付けのときに、ねぎや青じそを添えると彩りがきれいです。",
        "包丁を使うときは、指先を丸めて材料を押さえます。",
        "調味料は一度に入れず、少しずつ加えるのが失敗しないこつです。",
    ],
    close=[
        "ぜひ一度、ご家庭で試してみてください。",
        "温かいうちに、いただきます。",
        "次回は{dish}のアレンジを紹介する予定です。",
    ],
)

JA["trains"] = dict(
    open=[
        "私は毎朝、{line}で会社に通っています。",
        "{station}駅は、朝の通勤時間になるととても混雑します。",
        "{line}の{station}駅から、きょうも一日が始まります。",
        "{line}は、この街でいちばん利用者の多い路線のひとつです。",
        "電車の旅は、窓の外の景色が移り変わるのが楽しいものです。",
    ],
    body=[
        "{hour}時{minute}分発の電車に乗ると、始業時刻に間に合います。",
        "けさは信号の点検のため、電車が{delay}ほど遅れました。",
        "ホームでは、乗客が整列して電車を待っていました。",
        "車内では、多くの人がスマートフォンで本やニュースを読んでいます。",
        "{station}駅で快速に乗り換えると、数分早く着きます。",
        "駅の売店でお茶とおにぎりを買ってから乗りました。",
        "指定席は満席だったので、自由席に並びました。",
        "車窓からは、雪をかぶった山がよく見えました。",
        "遅延証明書は、駅の改札口や会社のホームページで受け取れます。",
        "混雑を避けるため、一本早い電車に乗るようにしています。",
        "終電を逃してしまい、タクシーで帰ることになりました。",
        "新しい駅舎には、エレベーターと広い待合室が設けられています。",
        "車掌のアナウンスによると、次の停車駅は{station}です。",
        "ICカードを使えば、切符を買わずに改札を通ることができます。",
        "線路の工事のため、週末は一部の区間で運休になります。",
        "座席に座れた日は、読みかけの{book}を開きます。",
    ],
    close=[
        "電車を降りると、駅前には朝の光があふれていました。",
        "あすも同じ電車で通う予定です。",
        "旅の思い出は、またいつか書きたいと思います。",
    ],
)

JA["seasons"] = dict(
    open=[
        "日本には春夏秋冬の四つの季節があり、それぞれに楽しみがあります。",
        "{city}の{season}は、ほかの季節とはまったく違う顔を見せます。",
        "今年も{season}がやってきました。",
        "季節の移り変わりは、食卓にもよく表れます。",
    ],
    body=[
        "春になると、公園の桜がいっせいに咲き、多くの人が花見に出かけます。",
        "梅雨の時期は雨の日が続き、あじさいの花がきれいに色づきます。",
        "夏には各地で祭りが開かれ、夜空に花火が上がります。",
        "夏休みには、子どもたちが川で遊んだり、虫をとったりします。",
        "秋は紅葉の季節で、山が赤や黄色に染まります。",
        "秋になると、{fruit}や新米など、おいしい食べ物が店に並びます。",
        "冬は空気が澄んでいて、遠くの山まではっきりと見えます。",
        "北の地方では雪がたくさん積もり、雪かきが毎朝の仕事になります。",
        "年末には大掃除をして、新しい年を迎える準備をします。",
        "正月には家族が集まり、おせち料理やお雑煮を食べます。",
        "{season}の夜は、{star}を探しながら散歩するのが好きです。",
        "季節の野菜は栄養が豊富で、値段も手ごろです。",
        "衣替えの時期には、押し入れの服を入れ替えます。",
        "朝の空気が冷たくなると、季節が進んだことを感じます。",
        "虫の声が聞こえ始めると、夏の終わりが近いと分かります。",
    ],
    close=[
        "次の季節が来るのが、今から楽しみです。",
        "季節を感じながら、毎日を大切に過ごしたいものです。",
    ],
)

JA["programming"] = dict(
    open=[
        "最近、{lang}でちょっとしたツールを書いています。",
        "プログラムを書くときに、私が気をつけていることを紹介します。",
        "きょうは、{lang}で見つけたバグの話をします。",
        "新人研修で、初めて{lang}を使ったプログラミングを学びました。",
        "テストのないコードは、あとで直すのがとても大変です。",
    ],
    body=[
        "まず、小さな関数に分けて、それぞれが一つのことだけをするようにします。",
        "変数には、読んだ人が意味を理解できる名前をつけます。",
        "テストを先に書いておくと、仕様がはっきりします。",
        "エラーが起きたときは、どのファイルの何がおかしいのかを伝えるメッセージが大切です。",
        "コンパイラの警告は、見過ごさずにすべて直すようにしています。",
        "ループの境界を一つ間違えると、最後の要素が読まれなくなります。",
        "ログを出力すると、どこで処理が止まったのかが分かります。",
        "配列の添字が範囲外になっていたのが、バグの原因でした。",
        "同じ入力に対して、いつも同じ結果を返すことを確かめます。",
        "乱数の種を固定すると、実験を何度でも再現できます。",
        "処理が遅いときは、推測せずにまず計測します。",
        "コードレビューでは、ほかの人の視点から多くのことを学べます。",
        "ファイルを書き込むときは、一時ファイルに書いてから名前を変えると安全です。",
        "メモリの使い方を工夫したところ、処理時間が半分になりました。",
        "並列に動かす部分は、結果の順番が変わらないように注意します。",
        "ドキュメントには、使い方の例を必ず一つ載せるようにしています。",
        "{lang}の型システムのおかげで、多くの間違いを実行前に見つけられます。",
    ],
    close=[
        "これからも、読みやすく壊れにくいコードを書いていきたいです。",
        "失敗から学ぶことは、本当にたくさんあります。",
        "次は、もっと大きなプログラムに挑戦するつもりです。",
    ],
)

JA["hpc"] = dict(
    open=[
        "スーパーコンピュータは、たくさんの計算機をつないで一つの大きな計算をする装置です。",
        "私たちの研究室では、{nodes}台のノードを使って言語モデルを学習しています。",
        "大規模言語モデルの学習には、膨大な計算資源が必要です。",
        "きょうは、計算機センターの見学に行ってきました。",
    ],
    body=[
        "各ノードには{gpus}枚のGPUが載っていて、高速なネットワークで結ばれています。",
        "モデルを複数のGPUに分けて置くことを、モデル並列と呼びます。",
        "データ並列では、それぞれのGPUが別のデータで勾配を計算し、最後に平均をとります。",
        "パイプライン並列では、層をいくつかの段に分け、順番に計算を流します。",
        "通信の時間を減らすことが、学習を速くするための大きな鍵になります。",
        "学習の途中で障害が起きても、チェックポイントから再開できます。",
        "計算機は大量の熱を出すため、冷却の仕組みがとても重要です。",
        "ジョブはスケジューラに投入され、順番が来ると実行されます。",
        "学習の損失が順調に下がっていくのを見ると、ほっとします。",
        "行列の掛け算が、計算時間の大部分を占めています。",
        "半精度の数値を使うと、メモリを節約しながら計算を速くできます。",
        "学習データは、あらかじめトークンに変換してファイルに保存しておきます。",
        "日本語の文章を多く学習させると、日本語の能力が大きく伸びます。",
        "一つの実験に、数週間もかかることがあります。",
        "電力の消費量も、運用するうえで無視できない問題です。",
        "性能を測るときは、一秒あたりに処理できるトークンの数を記録します。",
    ],
    close=[
        "計算機の進歩によって、研究の可能性はますます広がっています。",
        "次の実験の結果が、今から楽しみです。",
    ],
)

JA["daily"] = dict(
    open=[
        "{weekday}の朝は、いつもより少し早く起きました。",
        "きょうは久しぶりに、近所の図書館へ行きました。",
        "休みの日には、駅前の喫茶店でコーヒーを飲むのが楽しみです。",
        "夕方、{name}さんと一緒に商店街を歩きました。",
    ],
    body=[
        "図書館で{book}を二冊借りました。",
        "八百屋の店先には、旬の{fruit}が山のように積まれていました。",
        "帰りにパン屋に寄って、焼きたての食パンを買いました。",
        "喫茶店の窓ぎわの席は、午後の日差しが入って暖かいです。",
        "郵便局で、遠くに住む友人に手紙を出しました。",
        "公園では、子どもたちがボール遊びをしていました。",
        "部屋の掃除をして、いらない本を整理しました。",
        "夜は家族そろって夕食を食べ、その日の出来事を話しました。",
        "{name}さんは、最近始めた料理の話をしてくれました。",
        "寝る前に少しだけ日記を書くのが、長年の習慣です。",
        "スーパーの特売で、卵と牛乳を安く買うことができました。",
        "自転車のタイヤに空気を入れてから出かけました。",
        "観葉植物に水をやり、枯れた葉を取り除きました。",
        "近所の人に会ったので、あいさつをして少し立ち話をしました。",
    ],
    close=[
        "何気ない一日でしたが、心の落ち着く時間でした。",
        "あしたもよい一日になりますように。",
    ],
)

JA["health"] = dict(
    open=[
        "健康のために、毎日{steps}歩を目標に歩いています。",
        "よく眠ることは、体にも心にも大切です。",
        "最近、朝ごはんをきちんと食べるようにしています。",
    ],
    body=[
        "歩くときは、背筋を伸ばして少し大またで歩くとよいそうです。",
        "寝る前にスマートフォンを見ないようにしたら、寝つきがよくなりました。",
        "野菜を多めに食べると、体の調子が整います。",
        "階段を使うだけでも、よい運動になります。",
        "水分は、のどが渇く前に少しずつとるのがよいとされています。",
        "休日には、近くの川沿いをゆっくり散歩します。",
        "肩こりがひどいときは、軽いストレッチが効きます。",
        "毎年一回、健康診断を受けるようにしています。",
        "夜ふかしが続くと、昼間に集中できなくなります。",
        "深呼吸をすると、気持ちが落ち着きます。",
        "無理をせず、自分のペースで続けることが大切です。",
    ],
    close=[
        "小さな習慣の積み重ねが、健康につながると信じています。",
        "皆さんも、できることから始めてみてください。",
    ],
)

JA["travel"] = dict(
    open=[
        "{season}休みを利用して、{onsen}温泉へ旅行に行きました。",
        "今回の旅の目的地は、{city2}です。",
        "久しぶりの一人旅で、{city2}の古い町並みを歩きました。",
    ],
    body=[
        "旅館に着くと、まずは温泉にゆっくりつかりました。",
        "夕食には、地元でとれた魚や山菜の料理が並びました。",
        "朝早く起きて、宿の近くの神社にお参りしました。",
        "石畳の坂道の両側には、小さなお土産屋が並んでいました。",
        "地元の人に教えてもらった食堂で、名物の料理を食べました。",
        "お寺の庭は手入れが行き届いていて、とても静かでした。",
        "展望台からは、町と海が一望できました。",
        "帰りの電車の時刻を確かめてから、駅へ向かいました。",
        "家族へのお土産に、{fruit}を使ったお菓子を買いました。",
        "旅先で出会った人との会話が、いちばんの思い出になりました。",
        "観光案内所で地図をもらい、歩いて名所を回りました。",
    ],
    close=[
        "また季節を変えて、訪れてみたいと思います。",
        "短い旅でしたが、心も体もすっかり元気になりました。",
    ],
)

JA["school"] = dict(
    open=[
        "今学期は、特に{subject}の勉強に力を入れています。",
        "試験まで、あと二週間になりました。",
        "放課後、友だちと図書室で勉強をしました。",
    ],
    body=[
        "先生の説明を聞きながら、大事なところをノートにまとめます。",
        "分からない問題は、その日のうちに質問するようにしています。",
        "毎朝、英単語を十個ずつ覚えることにしました。",
        "教科書の例題を、何も見ずに解けるまで繰り返します。",
        "グループで発表の準備をして、役割を分担しました。",
        "{subject}の授業で、面白い実験をしました。",
        "勉強の合間には、軽く体を動かして気分を変えます。",
        "計画表を作ると、何をいつやるべきかがはっきりします。",
        "間違えた問題を集めたノートは、試験前にとても役立ちます。",
        "部活動のあとは疲れていますが、三十分だけでも机に向かいます。",
    ],
    close=[
        "努力の成果が、試験の結果に表れるとうれしいです。",
        "これからも、こつこつと続けていきます。",
    ],
)

JA["science"] = dict(
    open=[
        "夜空に見える星の光は、何年も前に星を出発したものです。",
        "植物は、光のエネルギーを使って栄養を作っています。",
        "水は、温度によって氷や水蒸気に姿を変えます。",
        "地球は、一日に一回、自分で回転しています。",
    ],
    body=[
        "{star}は、冬の夜空でも見つけやすい星座です。",
        "望遠鏡を使うと、月の表面のくぼみまで見ることができます。",
        "葉の緑色は、葉緑素という物質によるものです。",
        "植物の根は、土の中から水と養分を吸い上げます。",
        "水は摂氏百度で沸騰し、零度で凍ります。",
        "空が青く見えるのは、太陽の光が空気中で散らばるためです。",
        "地球が太陽の周りを一周するのに、およそ一年かかります。",
        "季節があるのは、地球の軸が少し傾いているからです。",
        "雷の光が見えてから音が聞こえるまでの時間で、距離を知ることができます。",
        "実験では、条件を一つだけ変えて結果を比べることが大切です。",
        "観察した結果は、日付と一緒に記録しておきます。",
    ],
    close=[
        "身の回りの不思議を調べると、新しい発見があります。",
        "科学の目で見ると、いつもの景色も違って見えてきます。",
    ],
)

# History-style narratives: a fixed arc, each step picks one of its variants.
JA_STORY = [
    ["{era}、{village}に{name}という{job}が住んでいた。",
     "{era}のこと、{village}に{name}という腕のよい{job}がいた。"],
    ["{name}は毎朝早く起き、日が暮れるまで働いた。",
     "{name}の仕事ぶりは、村の誰もが知るほど丁寧だった。",
     "{name}は口数こそ少なかったが、困った人を見ると放っておけない性分だった。"],
    ["ある年、長い日照りが続き、畑の作物がすっかり枯れてしまった。",
     "ある秋、大きな嵐が来て、村の橋が流されてしまった。",
     "ある冬、ひどい寒さが続き、村人たちは薪にも困るようになった。"],
    ["村人たちは集まって相談したが、よい考えはなかなか浮かばなかった。",
     "村の長老は頭を抱え、このままでは冬を越せないと嘆いた。"],
    ["そこで{name}は、自分の仕事で身につけた知恵を使おうと考えた。",
     "{name}は一晩じっくり考え、翌朝、村人たちに一つの案を話した。"],
    ["{name}の指図のもと、村人たちは力を合わせて働いた。",
     "はじめは疑っていた者たちも、やがて{name}を手伝うようになった。"],
    ["やがて村は元の暮らしを取り戻し、人々は{name}に深く感謝した。",
     "その年の{season}、村ではささやかな祭りが開かれ、皆が{name}の働きをたたえた。"],
    ["この話は今も{village}に語り継がれている。",
     "それ以来、村では困ったときこそ力を合わせよと言われるようになったという。"],
]

# ---------------------------------------------------------------- English topics
EN = {}

EN["weather"] = dict(
    open=[
        "Here is the weather for {city} on {weekday}.",
        "It was a grey and windy morning in {city} today.",
        "The temperature in {city} fell to {temp} degrees overnight.",
        "Forecasters expect a changeable weekend in {city}.",
    ],
    body=[
        "The high this afternoon will be around {temp} degrees.",
        "There is a {rain} percent chance of rain in the evening.",
        "A band of showers will move in from the west after lunch.",
        "If you are going out, it is worth taking an umbrella.",
        "Tomorrow should be dry and bright, with only a light breeze.",
        "Fog may form in the valleys early in the morning.",
        "Roads could be icy overnight, so drivers should take care.",
        "The wind will ease by midnight as the low pressure moves away.",
        "It will feel warmer than yesterday, especially in the sunshine.",
        "Snow is likely on the higher ground later in the week.",
        "Clear skies tonight mean a cold start tomorrow.",
        "Farmers will welcome the rain after several dry weeks.",
        "Humidity will stay high, making the afternoon feel heavy.",
    ],
    close=["That is all for the weather today.", "Stay safe and dress warmly."],
)

EN["cooking"] = dict(
    open=[
        "Today we are making a simple {dish} for {people} people.",
        "On a cold evening, nothing beats a bowl of {dish}.",
        "My grandmother taught me how to make {dish}, and I still make it every week.",
        "This {dish} takes less than an hour and uses ingredients you probably already have.",
    ],
    body=[
        "First, wash the {veg} and cut them into small pieces.",
        "Heat a little oil in a large pan over a medium flame.",
        "Add the {veg} and cook them gently until they are soft.",
        "Pour in the water, bring it to the boil, and then let it simmer for {minutes} minutes.",
        "Season with salt and pepper, tasting as you go.",
        "Stir from time to time so that nothing sticks to the bottom of the pan.",
        "You can prepare the vegetables the night before to save time.",
        "A squeeze of lemon at the end makes the flavour brighter.",
        "Keep any leftovers in the fridge and eat them within two days.",
        "If the sauce is too thick, add a splash of water.",
        "Children can help by washing the vegetables and setting the table.",
        "Serve it hot, with fresh bread on the side.",
    ],
    close=["Enjoy your meal.", "Next time, try adding a handful of fresh herbs."],
)

EN["trains"] = dict(
    open=[
        "Every morning I take {line} into the city.",
        "{station} is always crowded during the morning rush.",
        "Today I travelled by train from {city} to the coast.",
        "A long train journey is a good chance to read and think.",
    ],
    body=[
        "The {hour}:{minute} train usually gets me to work on time.",
        "This morning the train was delayed by {delay} minutes because of a signal fault.",
        "I changed trains at {station} and caught the express.",
        "Most passengers were reading or looking at their phones.",
        "The carriage was quiet, and I found a seat by the window.",
        "Outside, the fields and small towns rolled past.",
        "The conductor announced that the next stop would be {station}.",
        "Engineering work means there will be no trains on Sunday morning.",
        "I bought a coffee at the station before the train arrived.",
        "With a travel card, you do not need to buy a ticket each time.",
        "The new station has lifts, a large waiting room and clear signs.",
    ],
    close=["I arrived just in time for my first meeting.", "Tomorrow I will take the same train again."],
)

EN["seasons"] = dict(
    open=[
        "Each season brings its own pleasures.",
        "{season} has finally arrived in {city}.",
        "The change of the seasons shows up first in the markets.",
    ],
    body=[
        "In spring the parks fill with blossom, and people eat lunch on the grass.",
        "Summer evenings are long and light, perfect for a walk after dinner.",
        "In autumn the leaves turn red and gold, and the air smells of wood smoke.",
        "Winter brings short days, frosty mornings and warm drinks by the fire.",
        "The market stalls are piled high with fresh {fruit} this time of year.",
        "Children splash in the river during the summer holidays.",
        "On clear {season} nights you can easily find {star}.",
        "Many families gather at the end of the year to share a big meal.",
        "The first snow always makes the town look new and quiet.",
        "Gardeners plant their seeds as soon as the soil is warm enough.",
    ],
    close=["I am already looking forward to the next season.", "Every season has something to offer."],
)

EN["programming"] = dict(
    open=[
        "Lately I have been writing a small tool in {lang}.",
        "Here are a few habits that make my code easier to maintain.",
        "Today I want to write about a bug I found in a {lang} program.",
        "Code without tests is hard to change safely.",
    ],
    body=[
        "I split the work into small functions that each do one thing.",
        "Good names make code much easier to read a year later.",
        "Writing the test first helps me decide what the function should do.",
        "An error message should say which file was wrong and what was expected.",
        "I never ignore compiler warnings, because they often point to real problems.",
        "The bug turned out to be an off-by-one error at the end of a loop.",
        "Fixing the random seed makes every experiment reproducible.",
        "When the program is slow, I measure before I change anything.",
        "Writing to a temporary file and renaming it keeps the old data safe if something fails.",
        "Parallel code must produce the same output as the sequential version.",
        "A short example in the documentation saves readers a lot of time.",
        "Code review is one of the best ways to learn from colleagues.",
        "The type system of {lang} catches many mistakes before the program runs.",
    ],
    close=["Small habits add up to reliable software.", "I will share more lessons as I learn them."],
)

EN["hpc"] = dict(
    open=[
        "A supercomputer is many computers working together on a single problem.",
        "Our group trains language models on {nodes} nodes.",
        "Training a large language model takes an enormous amount of computation.",
    ],
    body=[
        "Each node has {gpus} GPUs connected by a fast network.",
        "Tensor parallelism splits each layer across several GPUs.",
        "In data parallelism, every GPU processes different examples and the gradients are averaged.",
        "Pipeline parallelism divides the layers into stages that work like an assembly line.",
        "Reducing communication time is the key to scaling to more GPUs.",
        "Checkpoints let a job restart after a hardware failure.",
        "Matrix multiplication takes most of the computing time.",
        "Using half precision saves memory and speeds up the arithmetic.",
        "The training data is converted into tokens ahead of time and stored on disk.",
        "We watch the loss curve closely during the first few hours of a run.",
        "The cooling system is as important as the processors themselves.",
        "We report throughput in tokens per second for every experiment.",
    ],
    close=["Faster machines keep opening new directions for research.", "The next run starts tomorrow."],
)

EN["daily"] = dict(
    open=[
        "On {weekday} morning I got up a little earlier than usual.",
        "Today I went to the local library for the first time in months.",
        "On weekends I like to sit in the small cafe near the station.",
    ],
    body=[
        "I borrowed {book} and a magazine about gardening.",
        "The greengrocer had boxes of fresh {fruit} outside the shop.",
        "On the way home I stopped at the bakery for a warm loaf.",
        "I met {name} in the park, and we talked for a while.",
        "In the evening the whole family had dinner together.",
        "I wrote a letter to an old friend who lives abroad.",
        "After lunch I cleaned the kitchen and watered the plants.",
        "Before bed I read a few pages and wrote in my diary.",
        "The children next door were playing football in the street.",
    ],
    close=["It was an ordinary day, but a good one.", "I hope tomorrow is just as calm."],
)

EN["health"] = dict(
    open=[
        "I try to walk {steps} steps every day.",
        "Good sleep matters as much as good food.",
        "This year I decided to eat a proper breakfast every morning.",
    ],
    body=[
        "Taking the stairs instead of the lift is an easy way to move more.",
        "I stopped looking at my phone before bed, and now I fall asleep faster.",
        "Eating more vegetables has made me feel lighter and more awake.",
        "A short stretch every hour helps my back and shoulders.",
        "It is better to drink water little and often than to wait until you are thirsty.",
        "On {weekday} evenings I go for a slow walk along the river.",
        "Staying up late for several nights makes it hard to concentrate.",
        "The important thing is to keep going at your own pace.",
        "A few deep breaths can calm you down before a difficult meeting.",
    ],
    close=["Small habits, repeated every day, make a real difference.", "Why not start with one small change?"],
)

EN["travel"] = dict(
    open=[
        "During the {season} holidays we took a short trip to the mountains.",
        "This time my destination was {city}.",
        "Travelling alone for the first time in years, I wandered through the old streets of {city}.",
    ],
    body=[
        "We checked into a small guest house run by a friendly couple.",
        "Dinner was fresh fish and vegetables from the local market.",
        "Early in the morning I climbed the hill behind the town to watch the sunrise.",
        "The narrow lanes were lined with little shops selling pottery and sweets.",
        "A local woman recommended a cafe that served excellent soup.",
        "From the lookout we could see the whole town and the sea beyond it.",
        "I bought a jar of jam made from local {fruit} as a present for my family.",
        "The tourist office gave us a map, and we explored the town on foot.",
        "The conversations with people we met along the way were the best part of the trip.",
    ],
    close=["I would love to go back in another season.", "It was a short trip, but I came home refreshed."],
)

EN["science"] = dict(
    open=[
        "The starlight we see at night left those stars many years ago.",
        "Plants make their own food using the energy of sunlight.",
        "Water changes its form as the temperature rises and falls.",
    ],
    body=[
        "{star} is one of the easiest constellations to find.",
        "Through a small telescope you can see craters on the Moon.",
        "Leaves are green because of a substance called chlorophyll.",
        "Roots take up water and minerals from the soil.",
        "At sea level, water boils at one hundred degrees Celsius and freezes at zero.",
        "The sky looks blue because air scatters blue light more than red light.",
        "The Earth takes about a year to travel once around the Sun.",
        "We have seasons because the Earth's axis is slightly tilted.",
        "In a good experiment, you change only one thing at a time.",
        "Write down every observation together with the date.",
    ],
    close=["Looking closely at ordinary things often leads to new questions.", "Science begins with curiosity."],
)

EN_STORY = [
    ["{era}, in {village}, there lived a {job} named {name}.",
     "{era}, {village} was home to a skilled {job} called {name}."],
    ["{name} worked from dawn until dusk and rarely complained.",
     "Everyone in the village knew how careful {name} was with every task."],
    ["One year a long drought dried up the fields.",
     "One autumn a great storm washed away the only bridge.",
     "One winter the cold was so harsh that firewood ran short."],
    ["The villagers met to talk, but nobody knew what to do.",
     "The elders feared that the village would not survive the season."],
    ["Then {name} had an idea, drawn from years of work as a {job}.",
     "{name} thought about the problem all night and spoke to the villagers the next morning."],
    ["Under {name}'s direction, everyone worked together.",
     "Even those who had doubted {name} soon came to help."],
    ["Before long, life in the village returned to normal, and people thanked {name} warmly.",
     "That {season}, the village held a small festival in {name}'s honour."],
    ["The story is still told in the village today.",
     "Since then, people there say that hard times are best faced together."],
]


# ---------------------------------------------------------------- composition
def fill(template, values):
    s = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
    return s[:1].upper() + s[1:]


def compose_topic(rng, topic, slots, sep):
    values = {k: rng.choice(v) for k, v in slots.items()}
    sentences = [rng.choice(topic["open"])]
    # Body sentences keep the order of their pool (recipe steps stay in order).
    picked = rng.sample(range(len(topic["body"])), k=min(len(topic["body"]), rng.randint(3, 9)))
    body = [topic["body"][i] for i in sorted(picked)]
    if rng.random() < 0.6:
        body.append(rng.choice(topic["close"]))
    sentences += body
    # One to three paragraphs.
    n_par = min(len(sentences), rng.choice([1, 1, 2, 2, 3]))
    cuts = sorted(rng.sample(range(1, len(sentences)), k=n_par - 1)) if n_par > 1 else []
    paras, prev = [], 0
    for c in cuts + [len(sentences)]:
        paras.append(sep.join(fill(s, values) for s in sentences[prev:c]))
        prev = c
    return "\n".join(paras)


def compose_story(rng, story, slots, sep):
    values = {k: rng.choice(v) for k, v in slots.items()}
    steps = [fill(rng.choice(step), values) for step in story]
    return sep.join(steps[:4]) + "\n" + sep.join(steps[4:])


def generate(rng, topics, story, slots, sep, target_bytes):
    names = sorted(topics)
    docs, size = [], 0
    while size < target_bytes:
        if rng.random() < 0.12:
            text = compose_story(rng, story, slots, sep)
        else:
            text = compose_topic(rng, topics[rng.choice(names)], slots, sep)
        line = json.dumps({"text": text}, ensure_ascii=False)
        docs.append(line)
        size += len(line.encode()) + 1
    return docs


def main():
    rng = random.Random(SEED)
    for name, topics, story, slots, sep, target in [
        ("ja.jsonl", JA, JA_STORY, JA_SLOTS, "", JA_BYTES),
        ("en.jsonl", EN, EN_STORY, EN_SLOTS, " ", EN_BYTES),
    ]:
        docs = generate(rng, topics, story, slots, sep, target)
        path = os.path.join(HERE, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(docs) + "\n")
        print(f"{path}: {len(docs)} documents, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
