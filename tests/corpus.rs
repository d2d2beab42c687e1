//! `swallow corpus` on the WARC fixtures of tests/fixtures/corpus (made by make_fixtures.py from
//! real Debian documentation pages, with planted cases listed in manifest.json): each planted case
//! meets its rule, damaged input is skipped and counted, the parts are the same under -np 1/2/4
//! and any thread count, a restarted run repeats nothing, `swallow prep` reads the output, and the
//! main text agrees with trafilatura's on the real pages.

mod common;

use common::{repo, succeeded, tmpdir};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/corpus")
}

fn good_inputs() -> Vec<String> {
    ["cc-a.warc.gz", "cc-b.warc.gz", "plain.warc", "whole.warc.gz", "web.warc.gz"].iter().map(|f| fixtures().join(f).display().to_string()).collect()
}

/// The fixture config: the fixture's NG words and blocked hosts. The real pages are technical
/// documentation, whose long command lines and repeated terms fail Swallow's longest-sentence and
/// repeated-5-gram rules (meant for web text; each rule is tested at its threshold in filters.rs)
/// and sit near its Japanese ratio: those three are relaxed so the pages reach the later stages.
fn config(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.toml");
    let f = fixtures();
    std::fs::write(
        &p,
        format!(
            "[filters]\nng_words_file = {:?}\nblocked_hosts_file = {:?}\nmax_sentence_length = 100000\nmax_duplicate_ngram_ratio = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]\nmin_japanese_ratio = 0.3\n",
            f.join("ng_words.txt").display().to_string(),
            f.join("blocked_hosts.txt").display().to_string()
        ),
    )
    .unwrap();
    p
}

fn corpus(np: usize, inputs: &[String], out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = vec!["corpus", "--input"];
    args.extend(inputs.iter().map(String::as_str));
    let out_s = out.display().to_string();
    args.extend(["--output", &out_s]);
    args.extend(extra);
    common::mpirun(np, &args)
}

fn manifest() -> Vec<Value> {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap();
    m["records"].as_array().unwrap().clone()
}

/// The documents of every part in name order, and the concatenated bytes of the parts.
fn output(dir: &Path) -> (Vec<Value>, Vec<u8>) {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-")).collect();
    parts.sort();
    let (mut docs, mut bytes) = (Vec::new(), Vec::new());
    for p in parts {
        let raw = std::fs::read(&p).unwrap();
        bytes.extend(&raw);
        let mut text = String::new();
        zstd::Decoder::new(&raw[..]).unwrap().read_to_string(&mut text).unwrap();
        docs.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    (docs, bytes)
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn removed(r: &Value, stage: &str, rule: &str) -> u64 {
    r["removed"][stage][rule]["documents"].as_u64().unwrap_or(0)
}

#[test]
fn every_planted_case_meets_its_rule() {
    let dir = tmpdir("corpus", "cases");
    let out = dir.join("out");
    succeeded(&corpus(2, &good_inputs(), &out, &["--config", config(&dir).to_str().unwrap()]), "corpus");
    let (docs, _) = output(&out);
    let by_url: HashMap<&str, &Value> = docs.iter().map(|d| (d["url"].as_str().unwrap(), d)).collect();
    let cases: Vec<(String, String)> = manifest()
        .iter()
        .filter(|r| !r["file"].as_str().unwrap().starts_with("bad/"))
        .map(|r| (r["url"].as_str().unwrap().to_string(), r["case"].as_str().unwrap().to_string()))
        .collect();
    let kept = |url: &str| by_url.contains_key(url);
    for (url, case) in &cases {
        let expect_kept = match case.as_str() {
            "en" | "spam-ng" | "blocked-host" | "short" | "repetitive" => false,
            c if c.starts_with("exact-dup-of:") || c.starts_with("near-dup-of:") => false,
            "ja-sjis-meta" | "ja-eucjp-header" | "ja-iso2022jp" | "ja-sjis-undeclared" | "fullwidth-punct" | "footer" | "boilerplate" => true,
            _ => continue,
        };
        assert_eq!(kept(url), expect_kept, "{case} {url}");
    }
    // The originals of the planted duplicates stay (the first of each group in input order).
    for (_, case) in cases.iter().filter(|c| c.1.contains("-dup-of:")) {
        let original = case.split("-dup-of:").nth(1).unwrap();
        let original = original.rsplit_once(':').filter(|(_, j)| j.parse::<f64>().is_ok()).map_or(original, |(u, _)| u);
        assert!(kept(original), "{original}, the original of a duplicate");
    }
    // Pages decoded from Shift_JIS, EUC-JP and ISO-2022-JP: Japanese text, no replacement chars.
    for (url, case) in cases.iter().filter(|c| c.1.starts_with("ja-") && c.1 != "ja-utf8") {
        let text = by_url[url.as_str()]["text"].as_str().unwrap();
        assert!(!text.contains('\u{FFFD}') && text.contains("パッケージ"), "{case}: {}", &text[..200.min(text.len())]);
    }
    let text_of = |case: &str| by_url[cases.iter().find(|c| c.1 == case).unwrap().0.as_str()]["text"].as_str().unwrap();
    let fw = text_of("fullwidth-punct");
    assert!(!fw.contains('，') && !fw.contains('．') && fw.contains('、') && fw.contains('。'), "{fw}");
    let footer = text_of("footer");
    assert!(!footer.contains("All rights reserved") && !footer.contains("利用規約"), "{footer}");
    let boiler = text_of("boilerplate");
    for line in boiler.lines() {
        assert!(line.chars().count() > 12, "a navigation or footer line was kept: {line:?}");
    }
    // The report adds up, and names each rule's removals.
    let r = report(&out);
    let skipped: u64 = r["skipped"].as_object().unwrap().values().map(|c| c["documents"].as_u64().unwrap()).sum();
    let gone: u64 = r["removed"].as_object().unwrap().values().flat_map(|s| s.as_object().unwrap().values()).map(|c| c["documents"].as_u64().unwrap()).sum();
    assert_eq!(r["records_read"].as_u64().unwrap(), cases.len() as u64, "{r}");
    assert_eq!(r["documents_kept"].as_u64().unwrap() + gone + skipped, cases.len() as u64, "{r}");
    assert_eq!(r["documents_kept"].as_u64().unwrap(), docs.len() as u64);
    assert_eq!(removed(&r, "host", "host_blocklist"), 2, "{r}");
    assert_eq!(removed(&r, "filters", "ng_words"), 1, "{r}");
    assert_eq!(removed(&r, "dedup", "exact_duplicate"), 1, "{r}");
    assert_eq!(removed(&r, "dedup", "near_duplicate"), 2, "{r}");
    assert_eq!(removed(&r, "precheck", "not_japanese_html") + removed(&r, "lang", "not_japanese"), 3, "the English pages: {r}");
    for stage in ["warc", "charset", "extract", "filters", "dedup", "write"] {
        assert!(r["seconds"][stage].as_f64().is_some(), "seconds of {stage}: {r}");
    }
    // swallow prep reads the parts as they are.
    let parts: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path().display().to_string()).filter(|p| p.contains("part-")).collect();
    let mut prep = Command::new(env!("CARGO_BIN_EXE_swallow"));
    prep.args(["prep", "--tokenizer", repo().join("data/sample/tokenizer.json").to_str().unwrap(), "--output", dir.join("tok").to_str().unwrap(), "--input"]).args(&parts);
    let said = succeeded(&prep.output().unwrap(), "prep");
    assert!(said.contains(&format!("prep: {} documents", docs.len())), "{said}");
}

#[test]
fn the_parts_are_the_same_for_any_rank_and_thread_count_and_a_restart_repeats_nothing() {
    let dir = tmpdir("corpus", "determinism");
    let cfg = config(&dir);
    let cfg = cfg.to_str().unwrap();
    let mut runs = Vec::new();
    for (np, workers) in [(1, "1"), (2, "2"), (4, "1")] {
        let out = dir.join(format!("np{np}"));
        succeeded(&corpus(np, &good_inputs(), &out, &["--config", cfg, "--workers", workers]), "corpus");
        runs.push(output(&out).1);
    }
    assert!(!runs[0].is_empty());
    assert!(runs.iter().all(|r| *r == runs[0]), "the parts differ between -np 1, 2 and 4");
    // A run stopped after refining some inputs and writing some parts: it finishes the rest.
    let out = dir.join("np2");
    let before = report(&out);
    std::fs::remove_file(out.join("part-00001.jsonl.zst")).unwrap();
    std::fs::remove_file(out.join("part-00002.jsonl.zst")).unwrap();
    std::fs::remove_file(out.join(".work/in-00002.done.json")).unwrap();
    std::fs::remove_file(out.join("report.json")).unwrap();
    succeeded(&corpus(2, &good_inputs(), &out, &["--config", cfg]), "restart");
    assert_eq!(output(&out).1, runs[0], "the restarted run's parts");
    let after = report(&out);
    for k in ["records_read", "documents_kept", "characters_kept", "skipped", "removed"] {
        assert_eq!(after[k], before[k], "{k}");
    }
    // Another config or other inputs in the same directory are refused.
    let o = corpus(1, &good_inputs()[..2], &out, &["--config", cfg]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("other inputs or another config"), "{err}");
}

#[test]
fn damaged_and_odd_input_is_skipped_and_counted() {
    let dir = tmpdir("corpus", "bad");
    // A 50 MB page between two good records of a plain WARC.
    let big = dir.join("big.warc");
    let record = |uri: &str, body: &[u8]| {
        let http = [format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), body].concat();
        let head = format!(
            "WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{uri}>\r\nWARC-Date: 2023-01-01T00:00:00Z\r\nWARC-Target-URI: https://{uri}.example.jp/\r\nContent-Type: application/http; msgtype=response\r\nContent-Length: {}\r\n\r\n",
            http.len()
        );
        [head.as_bytes(), &http, b"\r\n\r\n"].concat()
    };
    let mut huge = b"<html lang=\"ja\"><body><p>".to_vec();
    huge.resize(50 << 20, b'a');
    let small = "<html lang=\"ja\"><body><p>こんにちは。</p></body></html>".as_bytes();
    // And a page of 30,000 unclosed <div>s, which would take html5ever seconds to parse.
    let deep = ["<html lang=\"ja\"><body>".as_bytes(), "<div>".repeat(30_000).as_bytes(), "日本語の文章です。".as_bytes()].concat();
    std::fs::write(&big, [record("a", small), record("b", &huge), record("c", small), record("d", &deep)].concat()).unwrap();
    let mut inputs: Vec<String> = ["empty.warc.gz", "malformed.warc", "not-html.warc.gz", "truncated.warc.gz"].iter().map(|f| fixtures().join("bad").join(f).display().to_string()).collect();
    inputs.push(big.display().to_string());
    let out = dir.join("out");
    succeeded(&corpus(2, &inputs, &out, &[]), "corpus on damaged input");
    let r = report(&out);
    let skipped: BTreeMap<String, u64> = r["skipped"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["documents"].as_u64().unwrap())).collect();
    assert_eq!(skipped.get("warc: truncated gzip"), Some(&1), "{r}");
    assert_eq!(skipped.get("warc: malformed header"), Some(&2), "{r}");
    assert_eq!(skipped.get("warc: not html"), Some(&2), "{r}");
    assert_eq!(skipped.get("warc: record too large"), Some(&1), "{r}");
    assert_eq!(removed(&r, "extract", "nesting_too_deep"), 1, "{r}");
    // 2 + 1 (truncated) + 3 + 2 (malformed) + 2 (not html) + 4 (big.warc)
    assert_eq!(r["records_read"].as_u64(), Some(14), "{r}");
    // Bad command lines: one clear line naming the file or key.
    let missing = dir.join("missing.warc.gz").display().to_string();
    let o = corpus(1, &[missing.clone()], &dir.join("o2"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("missing.warc.gz") && common::error_lines(&err).len() == 1, "{err}");
    let bad_cfg = dir.join("bad.toml");
    std::fs::write(&bad_cfg, "[dedup]\nbandz = 3\n").unwrap();
    let o = corpus(2, &good_inputs(), &dir.join("o3"), &["--config", bad_cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("bandz") && err.contains("bad.toml") && common::error_lines(&err).len() == 1, "{err}");
}

/// F1 of the two texts' multisets of non-space characters: how much of the same text they hold.
/// Swallow's default rules end to end, no config given: the web-like pages of web.warc.gz (real
/// prose from the Debian Administrator's Handbook in Japanese inside a boilerplate-heavy page, each
/// accepted by the Python peer's own implementation of the defaults, make_fixtures.py) are all
/// kept, each as its title and paragraphs, nothing of the navigation, sidebars or footer.
#[test]
fn web_pages_pass_the_default_rules() {
    let dir = tmpdir("corpus", "defaults");
    let out = dir.join("out");
    succeeded(&corpus(1, &[fixtures().join("web.warc.gz").display().to_string()], &out, &[]), "corpus");
    let (docs, _) = output(&out);
    let pages: Vec<Value> = manifest().into_iter().filter(|r| r["file"] == "web.warc.gz").collect();
    assert_eq!(pages.len(), 8);
    assert_eq!(docs.iter().map(|d| &d["url"]).collect::<Vec<_>>(), pages.iter().map(|p| &p["url"]).collect::<Vec<_>>(), "{}", report(&out));
    for (doc, page) in docs.iter().zip(&pages) {
        let text = doc["text"].as_str().unwrap();
        let paragraphs: Vec<&str> = page["main_paragraphs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let title = page["title"].as_str().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&title), "{text}");
        assert_eq!(&lines[1..], &paragraphs[..], "{}", page["url"]);
    }
}

fn char_f1(a: &str, b: &str) -> f64 {
    let bag = |s: &str| {
        let mut m: HashMap<char, i64> = HashMap::new();
        for c in s.chars().filter(|c| !c.is_whitespace()) {
            *m.entry(c).or_default() += 1;
        }
        m
    };
    let (x, y) = (bag(a), bag(b));
    let common: i64 = x.iter().map(|(c, n)| (*n).min(*y.get(c).unwrap_or(&0))).sum();
    let (nx, ny): (i64, i64) = (x.values().sum(), y.values().sum());
    if nx + ny == 0 {
        return 1.0;
    }
    2.0 * common as f64 / (nx + ny) as f64
}

#[test]
fn the_main_text_agrees_with_trafilatura_on_the_real_pages() {
    use swallow::corpus::{charset, extract, warc};
    let reference: HashMap<String, Option<String>> = serde_json::from_str(&std::fs::read_to_string(fixtures().join("trafilatura.json")).unwrap()).unwrap();
    let mut scores = Vec::new();
    for input in good_inputs() {
        for r in warc::WarcReader::open(Path::new(&input), &Default::default()).unwrap() {
            let r = r.unwrap();
            let Some(Some(theirs)) = reference.get(&r.record_id) else { continue };
            let (html, _) = charset::decode(&r.payload, r.content_type.as_deref()).unwrap();
            scores.push((char_f1(&extract::main_text(&html).text, theirs), r.target_uri));
        }
    }
    let mean = scores.iter().map(|s| s.0).sum::<f64>() / scores.len() as f64;
    let worst = scores.iter().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
    println!("main text vs trafilatura: mean character F1 {mean:.3} over {} pages, lowest {:.3} ({})", scores.len(), worst.0, worst.1);
    assert!(scores.len() >= 20, "{}", scores.len());
    assert!(mean >= 0.95 && worst.0 >= 0.9, "mean {mean:.3}, lowest {:.3} ({})", worst.0, worst.1);
}

#[test]
fn a_run_killed_mid_way_is_locked_while_alive_and_resumes_to_the_same_parts() {
    use std::io::BufRead;
    let dir = tmpdir("corpus", "kill");
    let cfg = config(&dir);
    let cfg = cfg.to_str().unwrap();
    let clean = dir.join("clean");
    succeeded(&corpus(2, &good_inputs(), &clean, &["--config", cfg]), "clean run");
    let out = dir.join("out");
    let mut args: Vec<String> = vec!["corpus".into(), "--input".into()];
    args.extend(good_inputs());
    args.extend(["--output".into(), out.display().to_string(), "--config".into(), cfg.into(), "--workers".into(), "1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = common::mpirun_command(2, &args)
        .env("SWALLOW_TEST_CORPUS_PAUSE_S", "60")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Both ranks have finished an input and are paused: "test hook: rank R (pid P) pausing ...".
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    while pids.len() < 2 {
        let line = lines.next().expect("the run ended before pausing").unwrap();
        if let Some(rest) = line.strip_prefix("test hook: ") {
            pids.push(rest.split("(pid ").nth(1).unwrap().split(')').next().unwrap().parse::<i32>().unwrap());
        }
    }
    // A second run on the same directory is refused while the first lives.
    let o = corpus(1, &good_inputs(), &out, &["--config", cfg]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("another run is writing"), "{err}");
    // kill -9 both ranks (mpirun then ends the job): no part and no report yet, two inputs done.
    for pid in pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    child.wait().unwrap();
    let done = std::fs::read_dir(out.join(".work")).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".done.json")).count();
    assert_eq!(done, 2);
    assert!(output(&out).1.is_empty() && !out.join("report.json").exists());
    // The next run finishes the other inputs and writes what the clean run wrote.
    succeeded(&corpus(2, &good_inputs(), &out, &["--config", cfg]), "resumed run");
    assert_eq!(output(&out).1, output(&clean).1);
    let (a, b) = (report(&out), report(&clean));
    for k in ["records_read", "documents_kept", "characters_kept", "skipped", "removed"] {
        assert_eq!(a[k], b[k], "{k}");
    }
}
