#!/usr/bin/env python3
"""The Python peer of `swallow corpus`: the same refinery, stage by stage, built from the libraries a
Python user reaches for. Single process, one thread. Used by scripts/bench_corpus.py.

    python3 scripts/corpus_peer.py --input FILES... --output DIR [--config corpus.toml]

Per WARC response record (input order, then record order), as src/corpus/run.rs does:
1. warc     warcio's ArchiveIterator (gzip per record or plain; chunked transfer coding and
            Content-Encoding undone by content_stream()); HTTP status 200 and an HTML-like
            Content-Type (text/html, application/xhtml+xml or none) only.
2. host     the host block list (data/corpus/blocked_hosts.txt + filters.blocked_hosts_file):
            `host` exact, `.domain` the domain and its subdomains (urllib.parse for the host).
3. charset  BOM, else the HTTP header's charset, else the first `<meta>` declaring one (first 4096
            bytes), else detection: valid UTF-8 is UTF-8, otherwise charset_normalizer's best guess;
            a declared charset that decodes to more than 1% U+FFFD/control characters gives way to
            detection (charset.rs).
4. precheck lang="ja" (or ja-*) on the <html> tag in the first 8 KB, or >= 2 kana in the <title>
            (first 64 KB; kana as characters or numeric references) (extract.rs, looks_japanese).
5. extract  trafilatura.extract(html, include_comments=False, include_tables=True), the settings of
            tests/fixtures/corpus/make_fixtures.py.
6. lang     the Japanese score of lang.rs (the logistic regression over hashed character 1-3-grams
            of data/corpus/langid.bin, computed with numpy by scripts/langid_features.py),
            >= lang.threshold.
7. filters  the rules of filters.rs in its order: NG-word ratio (leftmost-longest, ASCII
            case-insensitive), min chars, min Japanese chars, hiragana / katakana / Japanese ratios,
            average and longest sentence, ellipsis endings, duplicate lines and their characters,
            duplicate sentences and their characters, top 2/3/4-gram ratios, duplicate 5..10-gram
            ratios (every n-gram table counted with collections.Counter, as quality.py does).
8. clean    clean.rs: footer lines cut, full-width ，． replaced by 、。 where they dominate.
9. minhash  datasketch MinHash(num_perm=800) over the set of character 5-grams (one shared set of
            permutations, as datasketch's own MinHash.bulk does), plus an exact key (hash of the text).
10. dedup   exact: a set of keys; near: MinHashLSH(num_perm=800, params=(40, 20)): a document whose
            query hits an earlier one is a duplicate; every document is inserted (kept or not), so
            the earliest of each group is kept, as in dedup.rs.
11. write   DIR/part-NNNNN.jsonl.zst per input (zstandard, level output.zstd_level, default 3): one
            JSON line per kept document (text, url, date, warc_record_id).

Prints pages read, documents kept, seconds, pages/s, the removals by stage and rule, and the seconds
per stage; writes the same to DIR/report.json.
"""
import argparse
import codecs
import hashlib
import json
import os
import re
import sys
import time
import tomllib
import urllib.parse
from collections import Counter, defaultdict

import charset_normalizer
import trafilatura
import zstandard
from datasketch import MinHash, MinHashLSH
from warcio.archiveiterator import ArchiveIterator

import langid_features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- config (the same TOML as `swallow corpus --config`; defaults from filters.rs, clean.rs ...) ---

FILTER_DEFAULTS = {
    "blocked_hosts_file": None,
    "blocked_hosts_defaults": True,
    "ng_words_file": None,
    "ng_words_defaults": True,
    "ng_word_ratio": 0.05,
    "min_chars": 400,
    "min_japanese_chars": 400,
    "min_hiragana_ratio": 0.2,
    "max_katakana_ratio": 0.5,
    "min_japanese_ratio": 0.5,
    "min_avg_sentence_length": 20.0,
    "max_avg_sentence_length": 90.0,
    "max_sentence_length": 200,
    "max_ellipsis_ratio": 0.2,
    "max_duplicate_line_ratio": 0.30,
    "max_duplicate_line_char_ratio": 0.20,
    "max_duplicate_sentence_ratio": 0.30,
    "max_duplicate_sentence_char_ratio": 0.20,
    "max_top_ngram_ratio": [0.20, 0.18, 0.16],
    "max_duplicate_ngram_ratio": [0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
}
CLEAN_DEFAULTS = {
    "fullwidth_punctuation": True,
    "footer_lines": 5,
    "footer_keyword_ratio": 0.3,
    "footer_keywords": ["copyright", "©", "(c)", "（c）", "（ｃ）", "all rights reserved", "無断転載", "無断複製",
                        "著作権", "プライバシーポリシー", "利用規約", "会社概要", "お問い合わせ", "サイトマップ"],
}


def load_config(path):
    cfg = tomllib.load(open(path, "rb")) if path else {}
    out = {
        "warc": {"max_record_bytes": 10 << 20, **cfg.get("warc", {})},
        "lang": {"threshold": 0.5, **cfg.get("lang", {})},
        "filters": {**FILTER_DEFAULTS, **cfg.get("filters", {})},
        "dedup": {"ngram": 5, "bands": 40, "rows": 20, **cfg.get("dedup", {})},
        "clean": {**CLEAN_DEFAULTS, **cfg.get("clean", {})},
        "output": {"zstd_level": 3, **cfg.get("output", {})},
    }
    for section, keys in (("filters", FILTER_DEFAULTS), ("clean", CLEAN_DEFAULTS)):
        unknown = set(out[section]) - set(keys)
        if unknown:
            sys.exit("%s: [%s]: unknown keys %s" % (path, section, sorted(unknown)))
    return out


def list_lines(text):
    return [line.strip() for line in text.splitlines()]


# --- 2. host block list ---

class HostList:
    def __init__(self, fcfg):
        self.exact, self.domains = set(), set()
        if fcfg["blocked_hosts_defaults"]:
            self.add(open(os.path.join(REPO, "data/corpus/blocked_hosts.txt"), encoding="utf-8").read())
        if fcfg["blocked_hosts_file"]:
            self.add(open(fcfg["blocked_hosts_file"], encoding="utf-8").read())

    def add(self, text):
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip().lower()
            if not entry:
                continue
            if "://" in entry:
                host = urllib.parse.urlsplit(entry).hostname
                if host:
                    self.exact.add(host)
                continue
            domain = entry.startswith(("*", "."))
            entry = entry.lstrip("*").lstrip(".").rstrip(".")
            if entry:
                (self.domains if domain else self.exact).add(entry)

    def blocked(self, url):
        try:
            host = urllib.parse.urlsplit(url.strip()).hostname
        except ValueError:
            return False
        if not host:
            return False
        host = host.rstrip(".")
        if host in self.exact or host in self.domains:
            return True
        parts = host.split(".")
        return any(".".join(parts[i:]) in self.domains for i in range(1, len(parts)))


# --- 3. charset ---

# encoding_rs (the WHATWG Encoding Standard) reads Shift_JIS as Windows-31J: so does a careful
# Python crawler (cp932); other labels go through Python's codec registry.
ALIASES = {"shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "ms_kanji": "cp932",
           "windows-31j": "cp932", "csshiftjis": "cp932", "x-euc-jp": "euc_jp", "iso-8859-1": "cp1252",
           "latin1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252"}
CHARSET_RE = re.compile(rb"""charset\s*=\s*["']?([^"';>/\s]+)""", re.I)
META_RE = re.compile(rb"<meta([^>]*)>", re.I)
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def codec(label):
    if not label:
        return None
    label = label.decode("ascii", "replace").strip().lower() if isinstance(label, bytes) else label.lower()
    label = ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def meta_charset(head):
    for m in META_RE.finditer(head):
        if b"charset" in m.group(1).lower():
            c = CHARSET_RE.search(m.group(1))
            name = codec(c.group(1)) if c else None
            return "utf-8" if name in ("utf-16", "utf-16-le", "utf-16-be") else name
    return None


GARBAGE_RE = re.compile("[\ufffd\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def decode_clean(body, name):
    try:
        text = body.decode(name, errors="replace")
    except LookupError:
        return None
    return None if len(GARBAGE_RE.findall(text)) * 100 > len(text) else text


def decode_html(payload, content_type):
    declared, body = None, payload
    for bom, name in BOMS:
        if payload.startswith(bom):
            declared, body = name, payload[len(bom):]
            break
    if declared is None and content_type:
        c = CHARSET_RE.search(content_type.encode("latin-1", "replace"))
        declared = codec(c.group(1)) if c else None
    if declared is None:
        declared = meta_charset(body[:4096])
    if declared:
        text = decode_clean(body, declared)
        if text is not None:
            return text
    if b"\x1b" not in body:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    best = charset_normalizer.from_bytes(body).best()
    if best is None or best.encoding == declared:
        return None
    return decode_clean(body, best.encoding)


# --- 4. pre-check ---

HTML_TAG_RE = re.compile(r"<html(?=[\s>/])([^>]*)", re.I)
LANG_JA_RE = re.compile(r"""(?:^|[\s/])(?:xml:)?lang\s*=\s*["']?\s*ja(?:[-_"'\s]|$)""", re.I)
TITLE_RE = re.compile(r"<title(?=[\s>/])[^>]*>(.*?)(?:</title(?=[\s>/])|$)", re.I | re.S)
KANA_RE = re.compile("[\u3040-\u30ff]")
CHARREF_RE = re.compile(r"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9a-fA-F]{1,8}))")


def looks_japanese(html):
    m = HTML_TAG_RE.search(html[:8192])
    if m and LANG_JA_RE.search(m.group(1)):
        return True
    m = TITLE_RE.search(html[:65536])
    if not m:
        return False
    title = m.group(1)
    kana = len(KANA_RE.findall(title))
    for hexa, dec in CHARREF_RE.findall(title):
        try:
            c = int(hexa, 16) if hexa else int(dec, 10)
        except ValueError:
            continue
        kana += 0x3040 <= c <= 0x30FF
    return kana >= 2


# --- 6. language score (lang.rs): scripts/langid_features.py ---

LANGID_MODEL = langid_features.read_model(os.path.join(REPO, "data/corpus/langid.bin"))


def japanese_score(text):
    return langid_features.score(text, LANGID_MODEL)


# --- 7. filters (filters.rs) ---

HIRAGANA_RE = re.compile("[\u3041-\u3096\u309d-\u309f]")
KATAKANA_RE = re.compile("[\u30a1-\u30fa\u30fd-\u30ff\u31f0-\u31ff\uff66-\uff6f\uff71-\uff9f]")
KANJI_RE = re.compile("[\u3005-\u3007\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")
PROLONGED_RE = re.compile("[\u30fc\uff70]")
WHITESPACE_RE = re.compile(r"\s")
SENTENCE_RE = re.compile("[^。．！？!?]+[。．！？!?]?")


def ratio(num, den):
    return num / den if den else 0.0


def duplicates(items):
    """Gopher's counts: items, repeated items, characters, characters of repeated copies."""
    counts = Counter(items)
    n = sum(counts.values())
    chars = sum(len(s) * c for s, c in counts.items())
    dup_items = sum(c - 1 for c in counts.values())
    dup_chars = sum(len(s) * (c - 1) for s, c in counts.items())
    return n, dup_items, chars, dup_chars


class Filters:
    def __init__(self, fcfg):
        self.cfg = fcfg
        words = []
        if fcfg["ng_words_defaults"]:
            words += list_lines(open(os.path.join(REPO, "data/corpus/ng_words.txt"), encoding="utf-8").read())
        if fcfg["ng_words_file"]:
            words += list_lines(open(fcfg["ng_words_file"], encoding="utf-8").read())
        words = sorted({w for w in words if w and not w.startswith("#")}, key=lambda w: (-len(w), w))
        # Longest alternatives first: the leftmost match is the longest there.
        self.ng = re.compile("|".join(map(re.escape, words)), re.I | re.A) if words else None

    def check(self, text):
        cfg = self.cfg
        chars = len(text) - text.count("\n") - text.count("\r")
        non_ws = len(text) - len(WHITESPACE_RE.findall(text))
        hira = len(HIRAGANA_RE.findall(text))
        kata = len(KATAKANA_RE.findall(text))
        japanese = hira + kata + len(KANJI_RE.findall(text)) + len(PROLONGED_RE.findall(text))

        ng = sum(len(m) for m in self.ng.findall(text)) if self.ng else 0
        if ng > 0 and (japanese == 0 or ng / japanese >= cfg["ng_word_ratio"]):
            return "ng_words"
        if chars < cfg["min_chars"]:
            return "min_chars"
        if japanese < cfg["min_japanese_chars"]:
            return "min_japanese_chars"
        if ratio(hira, japanese) < cfg["min_hiragana_ratio"]:
            return "hiragana_ratio"
        if ratio(kata, japanese) > cfg["max_katakana_ratio"]:
            return "katakana_ratio"
        if ratio(japanese, non_ws) < cfg["min_japanese_ratio"]:
            return "japanese_ratio"

        sentences = [s for line in text.split("\n") for s in (m.strip() for m in SENTENCE_RE.findall(line)) if s]
        lengths = [len(s) for s in sentences]
        average = sum(lengths) / len(lengths) if lengths else 0.0
        if average < cfg["min_avg_sentence_length"] or average > cfg["max_avg_sentence_length"]:
            return "sentence_length"
        if max(lengths, default=0) > cfg["max_sentence_length"]:
            return "longest_sentence"
        if ratio(sum(1 for s in sentences if s.endswith(("・", "…"))), len(sentences)) > cfg["max_ellipsis_ratio"]:
            return "ellipsis_endings"

        n, dup, c, dup_c = duplicates(line for line in (l.strip() for l in text.split("\n")) if line)
        if ratio(dup, n) > cfg["max_duplicate_line_ratio"]:
            return "duplicate_lines"
        if ratio(dup_c, c) > cfg["max_duplicate_line_char_ratio"]:
            return "duplicate_line_chars"
        n, dup, c, dup_c = duplicates(sentences)
        if ratio(dup, n) > cfg["max_duplicate_sentence_ratio"]:
            return "duplicate_sentences"
        if ratio(dup_c, c) > cfg["max_duplicate_sentence_char_ratio"]:
            return "duplicate_sentence_chars"

        for i, n in enumerate((2, 3, 4)):
            grams = Counter(text[j:j + n] for j in range(len(text) - n + 1))
            top = max(grams.values(), default=0)
            if ratio(top, len(text) - n + 1 if len(text) >= n else 0) > cfg["max_top_ngram_ratio"][i]:
                return "top_%dgram" % n
        for i, n in enumerate(range(5, 11)):
            grams = Counter(text[j:j + n] for j in range(len(text) - n + 1))
            repeated = sum(1 for c in grams.values() if c > 1)
            if ratio(repeated, len(grams)) > cfg["max_duplicate_ngram_ratio"][i]:
                return "duplicate_%dgram" % n
        return None


# --- 8. cleaning (clean.rs) ---

def footer_cut(text, ccfg):
    keywords = [k.lower() for k in ccfg["footer_keywords"] if k]
    if ccfg["footer_lines"] == 0 or not keywords:
        return None
    lines, offset = [], 0
    for line in text.split("\n"):
        if line.strip():
            lines.append((offset, line))
        offset += len(line) + 1
    if not lines:
        return None
    tail = lines[max(0, len(lines) - ccfg["footer_lines"]):]
    hits = [start for start, line in tail if any(k in line.lower() for k in keywords)]
    if hits and len(hits) / len(tail) > ccfg["footer_keyword_ratio"] and hits[0] > lines[0][0]:
        return hits[0]
    return None


DIGITS = set("0123456789０１２３４５６７８９")


def clean(text, ccfg):
    cut = footer_cut(text, ccfg)
    if cut is not None:
        text = text[:cut].rstrip()
    if not ccfg["fullwidth_punctuation"] or ("，" not in text and "．" not in text):
        return text
    last = len(text) - 1

    def separator(i):
        return 0 < i < last and text[i - 1] in DIGITS and text[i + 1] in DIGITS

    fullwidth = sum(1 for i, c in enumerate(text) if c in "，．" and not separator(i))
    if fullwidth <= text.count("、") + text.count("。"):
        return text
    table = {"，": "、", "．": "。"}
    return "".join(table[c] if c in table and not separator(i) else c for i, c in enumerate(text))


# --- the run ---

HTML_TYPES = ("", "text/html", "application/xhtml+xml")


class Report:
    def __init__(self):
        self.records_read = 0
        self.removed = defaultdict(Counter)
        self.skipped = Counter()
        self.seconds = Counter()
        self.clock = time.perf_counter()

    def lap(self, stage):
        now = time.perf_counter()
        self.seconds[stage] += now - self.clock
        self.clock = now


def run(inputs, output, cfg):
    os.makedirs(output, exist_ok=True)
    hosts, filters = HostList(cfg["filters"]), Filters(cfg["filters"])
    threshold, ccfg, dcfg = cfg["lang"]["threshold"], cfg["clean"], cfg["dedup"]
    num_perm, ngram = dcfg["bands"] * dcfg["rows"], dcfg["ngram"]
    template = MinHash(num_perm=num_perm)
    lsh = MinHashLSH(num_perm=num_perm, params=(dcfg["bands"], dcfg["rows"]))
    exact_keys = set()
    zc = zstandard.ZstdCompressor(level=cfg["output"]["zstd_level"])
    max_bytes = cfg["warc"]["max_record_bytes"]
    rep, kept, kept_chars, serial = Report(), 0, 0, 0
    for i, path in enumerate(inputs):
        part = os.path.join(output, "part-%05d.jsonl.zst" % i)
        with open(path, "rb") as fh, open(part + ".tmp", "wb") as out, zc.stream_writer(out) as z:
            rep.clock = time.perf_counter()
            for record in ArchiveIterator(fh):
                if record.rec_type != "response":
                    continue
                rep.records_read += 1
                http = record.http_headers
                ctype = http.get_header("Content-Type") if http else None
                if http is None or http.get_statuscode() != "200":
                    rep.skipped["warc: not http" if http is None else "warc: http status"] += 1
                    rep.lap("warc")
                    continue
                if (ctype or "").split(";")[0].strip().lower() not in HTML_TYPES:
                    rep.skipped["warc: not html"] += 1
                    rep.lap("warc")
                    continue
                payload = record.content_stream().read()
                url = record.rec_headers.get_header("WARC-Target-URI") or ""
                rep.lap("warc")
                if len(payload) > max_bytes:
                    rep.skipped["warc: record too large"] += 1
                    continue
                if hosts.blocked(url):
                    rep.removed["host"]["host_blocklist"] += 1
                    continue
                html = decode_html(payload, ctype)
                rep.lap("charset")
                if html is None:
                    rep.skipped["charset: undecodable"] += 1
                    continue
                if not looks_japanese(html):
                    rep.removed["precheck"]["not_japanese_html"] += 1
                    rep.lap("precheck")
                    continue
                rep.lap("precheck")
                text = trafilatura.extract(html, include_comments=False, include_tables=True) or ""
                rep.lap("extract")
                if japanese_score(text) < threshold:
                    rep.removed["lang"]["not_japanese"] += 1
                    rep.lap("lang")
                    continue
                rep.lap("lang")
                rule = filters.check(text)
                rep.lap("filters")
                if rule:
                    rep.removed["filters"][rule] += 1
                    continue
                text = clean(text, ccfg)
                rep.lap("clean")
                grams = {text[j:j + ngram].encode("utf-8") for j in range(len(text) - ngram + 1)} or {text.encode("utf-8")}
                m = MinHash(num_perm=num_perm, permutations=template.permutations, scheme=template.scheme)
                m.update_batch(grams)
                key = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
                rep.lap("minhash")
                # Dedup as the documents come (input order, then record order = swallow's order).
                near = bool(lsh.query(m))
                lsh.insert(serial, m)
                serial += 1
                if key in exact_keys:
                    rep.removed["dedup"]["exact_duplicate"] += 1
                    rep.lap("dedup")
                    continue
                exact_keys.add(key)
                if near:
                    rep.removed["dedup"]["near_duplicate"] += 1
                    rep.lap("dedup")
                    continue
                rep.lap("dedup")
                doc = {"text": text, "url": url, "date": record.rec_headers.get_header("WARC-Date") or "",
                       "warc_record_id": record.rec_headers.get_header("WARC-Record-ID") or ""}
                z.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
                kept += 1
                kept_chars += len(text)
                rep.lap("write")
        os.replace(part + ".tmp", part)
        rep.lap("write")
    return rep, kept, kept_chars


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--config")
    args = ap.parse_args()
    cfg = load_config(args.config)
    t = time.perf_counter()
    rep, kept, kept_chars = run(args.input, args.output, cfg)
    seconds = time.perf_counter() - t
    report = {
        "records_read": rep.records_read, "documents_kept": kept, "characters_kept": kept_chars,
        "skipped": dict(rep.skipped), "removed": {k: dict(v) for k, v in rep.removed.items()},
        "seconds": dict(rep.seconds), "total_seconds": seconds,
    }
    with open(os.path.join(args.output, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    print("peer: %d inputs, %d pages read, %d documents kept (%d characters), %.2f s, %.1f pages/s"
          % (len(args.input), rep.records_read, kept, kept_chars, seconds, rep.records_read / seconds))
    print("peer removed:", json.dumps(report["removed"], sort_keys=True), "skipped:", json.dumps(report["skipped"]))
    print("peer seconds:", " ".join("%s %.2f" % kv for kv in sorted(rep.seconds.items())))


if __name__ == "__main__":
    main()
