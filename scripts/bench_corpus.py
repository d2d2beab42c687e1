#!/usr/bin/env python3
"""`swallow corpus` against the Python pipeline (scripts/corpus_peer.py), side by side on the same WARC
files, one core each.

    make bench-corpus   (or: out/corpus-venv/bin/python scripts/bench_corpus.py [--files 4]
                         [--records 500] [--repeat N])

1. Input (deterministic, fixed seed), under out/bench-corpus/warc/: `--files` WARC files of
   `--records` response records each, gzip per record as Common Crawl writes them (a warcinfo
   record, then a request and a response record per page). The pages are the real pages of
   tests/fixtures/corpus/*.warc* (Debian documentation in UTF-8, Shift_JIS, EUC-JP and ISO-2022-JP,
   English pages, the made-up spam, short, repetitive, footer, full-width and blocked-host pages),
   under new URLs:
     distinct  a Japanese page whose content paragraphs (<p> with kana) are all replaced by
               paragraphs drawn from every Japanese page: a new document (same markup, same charset)
     near      an earlier Japanese page of the benchmark with about 1 in 20 of its paragraphs replaced
     exact     an earlier Japanese page of the benchmark again, byte for byte
     english   one of the English pages (the pre-check drops them before any parsing)
     fixture   any fixture page as it is (blocked hosts keep their host)
2. Config, out/bench-corpus/corpus.toml, for both: Swallow's recipe relaxed as tests/corpus.rs does
   for these pages (technical documentation: long command lines, repeated terms), so that pages go
   through every stage: max_sentence_length = 100000, max_duplicate_ngram_ratio all 1.0,
   min_japanese_ratio = 0.3, plus the fixtures' NG-word and host lists.
3. `mpirun -np 1 swallow corpus --workers 1` (RAYON_NUM_THREADS=1) and `python3 scripts/corpus_peer.py`
   (OMP/MKL/OpenBLAS threads 1), each into a fresh output directory; wall time of each process
   (start-up included) and its CPU time. With --repeat N they alternate N times and the best wall
   time of each counts.
Prints the side-by-side table (pages, documents kept, seconds, pages/s per core, ratio), swallow's
seconds per stage from report.json next to the peer's, the removals by stage and rule of both, and
how many kept documents (by URL) the two have in common.
"""
import argparse
import gzip
import html as htmlmod
import io
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid

import zstandard
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "corpus")
OUT = os.path.join(REPO, "out", "bench-corpus")
BIN = os.path.join(REPO, "target", "release", "swallow")
CODECS = {"UTF-8": "utf-8", "Shift_JIS": "cp932", "EUC-JP": "euc_jp", "ISO-2022-JP": "iso2022_jp"}
# Fixture pages that are not Japanese content (never templates, never paragraph sources).
SPECIAL = ("en", "spam-ng", "blocked-host", "short", "repetitive")
KINDS = (("distinct", 0.55), ("near", 0.10), ("exact", 0.10), ("english", 0.12), ("fixture", 0.13))
PARA_RE = re.compile(r"(<p(?:\s[^>]*)?>)(.*?)(</p>)", re.S)
TAG_RE = re.compile(r"<[^>]*>")
KANA_RE = re.compile("[\u3041-\u30ff]")


def fixture_pages():
    """The response records of the fixture WARC files (whole.warc.gz decompressed first: warcio reads
    only gzip per record), with the manifest's case and encoding."""
    manifest = {r["url"]: r for r in json.load(open(os.path.join(FIXTURES, "manifest.json")))["records"]}
    pages = []
    for name in ("cc-a.warc.gz", "cc-b.warc.gz", "whole.warc.gz", "plain.warc"):
        data = open(os.path.join(FIXTURES, name), "rb").read()
        if name == "whole.warc.gz":
            data = gzip.decompress(data)
        for rec in ArchiveIterator(io.BytesIO(data)):
            if rec.rec_type != "response":
                continue
            url = rec.rec_headers.get_header("WARC-Target-URI")
            m = manifest[url]
            pages.append({"url": url, "case": m["case"], "encoding": m["encoding"],
                          "content_type": rec.http_headers.get_header("Content-Type"),
                          "payload": rec.content_stream().read()})
    return pages


def text_of(inner):
    return htmlmod.unescape(TAG_RE.sub("", inner))


def content_paragraph(inner):
    return len(KANA_RE.findall(text_of(inner))) >= 10


class Generator:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pages = fixture_pages()
        self.english = [p for p in self.pages if p["case"] == "en"]
        self.japanese = [p for p in self.pages if not p["case"].startswith(SPECIAL) and not p["case"].startswith("exact-dup")]
        for p in self.japanese:
            p["html"] = p["payload"].decode(CODECS[p["encoding"]])
        self.pool = sorted({m.group(2) for p in self.japanese for m in PARA_RE.finditer(p["html"]) if content_paragraph(m.group(2))})
        self.made = []  # Japanese pages generated so far: (html, page it came from)
        self.serial = 0

    def replace(self, html, share):
        """`html` with `share` of its content paragraphs (at least one) replaced from the pool."""
        spans = [m for m in PARA_RE.finditer(html) if content_paragraph(m.group(2))]
        if not spans:
            return html
        chosen = set(self.rng.sample(range(len(spans)), max(1, round(share * len(spans)))))
        new = self.rng.sample(self.pool, len(chosen))
        out, at = [], 0
        for i, m in enumerate(spans):
            if i in chosen:
                out += [html[at:m.start(2)], new.pop()]
                at = m.end(2)
        out.append(html[at:])
        return "".join(out)

    def url(self, host=None):
        self.serial += 1
        host = host or "www%d.site%03d.example.jp" % (self.rng.randrange(4), self.rng.randrange(600))
        return "https://%s/%s/%06d.html" % (host, self.rng.choice(("doc", "blog", "news", "wiki", "faq")), self.serial)

    def page(self):
        """(url, content type, payload, kind) of the next page."""
        r, kind = self.rng.random(), KINDS[-1][0]
        for k, w in KINDS:
            if r < w:
                kind = k
                break
            r -= w
        if kind in ("near", "exact") and not self.made:
            kind = "distinct"
        if kind == "english":
            p = self.rng.choice(self.english)
            return self.url(re.sub(r"^site\d+", "www%d" % self.rng.randrange(100), p["url"].split("/")[2])), p["content_type"], p["payload"], kind
        if kind == "fixture":
            p = self.rng.choice(self.pages)
            host = p["url"].split("/")[2] if p["case"] == "blocked-host" else None
            return self.url(host), p["content_type"], p["payload"], kind
        if kind == "distinct":
            src = self.rng.choice(self.japanese)
            html = self.replace(src["html"], 1.0)
        elif kind == "near":
            html, src = self.rng.choice(self.made)
            html = self.replace(html, 0.05)
        else:
            html, src = self.rng.choice(self.made)
        self.made.append((html, src))
        return self.url(), src["content_type"], html.encode(CODECS[src["encoding"]], errors="xmlcharrefreplace"), kind


def record_id(rng):
    return "<urn:uuid:%s>" % uuid.UUID(int=rng.getrandbits(128), version=4)


def generate(files, records, seed):
    """Writes the benchmark's WARC files; returns their paths and the count of each kind."""
    gen, ids = Generator(seed), random.Random(seed + 1)
    warc_dir = os.path.join(OUT, "warc")
    shutil.rmtree(warc_dir, ignore_errors=True)
    os.makedirs(warc_dir)
    kinds, paths, second = {}, [], 0
    for f in range(files):
        path = os.path.join(warc_dir, "bench-%05d.warc.gz" % f)
        with open(path, "wb") as fh:
            w = WARCWriter(fh, gzip=True)
            date = "2023-06-01T%02d:00:00Z" % f
            info = b"software: scripts/bench_corpus.py\r\nformat: WARC File Format 1.0\r\n"
            w.write_record(w.create_warc_record(os.path.basename(path), "warcinfo", payload=io.BytesIO(info),
                                                warc_content_type="application/warc-fields",
                                                warc_headers_dict={"WARC-Record-ID": record_id(ids), "WARC-Date": date}))
            for _ in range(records):
                url, ctype, payload, kind = gen.page()
                kinds[kind] = kinds.get(kind, 0) + 1
                second += 1
                date = "2023-06-%02dT%02d:%02d:%02dZ" % (2 + second // 86400, second // 3600 % 24, second // 60 % 60, second % 60)
                host, path_part = url.split("/")[2], "/" + url.split("/", 3)[3]
                req_id = record_id(ids)
                req = StatusAndHeaders("GET %s HTTP/1.1" % path_part, [("Host", host), ("User-Agent", "bench_corpus"),
                                                                      ("Accept", "text/html")], is_http_request=True)
                w.write_record(w.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=req,
                                                    warc_headers_dict={"WARC-Record-ID": req_id, "WARC-Date": date}))
                resp = StatusAndHeaders("200 OK", [("Date", "Thu, 01 Jun 2023 00:00:00 GMT"), ("Server", "nginx"),
                                                   ("Content-Type", ctype), ("Content-Length", str(len(payload)))],
                                        protocol="HTTP/1.1")
                w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=resp,
                                                    warc_headers_dict={"WARC-Record-ID": record_id(ids), "WARC-Date": date,
                                                                       "WARC-Concurrent-To": req_id}))
        paths.append(path)
    return paths, kinds


def write_config():
    path = os.path.join(OUT, "corpus.toml")
    with open(path, "w") as f:
        f.write("# Swallow's recipe, relaxed as tests/corpus.rs does for the Debian documentation pages.\n"
                "[filters]\nng_words_file = %s\nblocked_hosts_file = %s\nmax_sentence_length = 100000\n"
                "max_duplicate_ngram_ratio = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]\nmin_japanese_ratio = 0.3\n"
                % (json.dumps(os.path.join(FIXTURES, "ng_words.txt")), json.dumps(os.path.join(FIXTURES, "blocked_hosts.txt"))))
    return path


def timed(cmd, env):
    """Runs `cmd`; returns (wall seconds, CPU seconds of the process tree, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit("failed: %s\n%s%s" % (" ".join(cmd), p.stdout, p.stderr))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = [l for l in (p.stdout + p.stderr).splitlines() if l.startswith(("corpus:", "peer:"))]
    return wall, cpu, summary[0] if summary else ""


def kept_urls(out_dir):
    urls = set()
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("part-") and name.endswith(".jsonl.zst"):
            with open(os.path.join(out_dir, name), "rb") as f:
                data = zstandard.ZstdDecompressor().stream_reader(f).read()
            urls.update(json.loads(line)["url"] for line in data.splitlines() if line)
    return urls


def removals(report):
    out = {}
    for stage, rules in report.get("removed", {}).items():
        for rule, v in rules.items():
            out["%s/%s" % (stage, rule)] = v["documents"] if isinstance(v, dict) else v
    for reason, v in report.get("skipped", {}).items():
        out["skipped/%s" % reason] = v["documents"] if isinstance(v, dict) else v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--records", type=int, default=500, help="response records per file")
    ap.add_argument("--seed", type=int, default=20231201)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit("%s is missing: run `make build` first" % BIN)

    os.makedirs(OUT, exist_ok=True)
    t = time.perf_counter()
    inputs, kinds = generate(args.files, args.records, args.seed)
    config = write_config()
    size = sum(os.path.getsize(p) for p in inputs)
    print("input: %d files x %d pages = %d pages, %.1f MB gzip per record (%s), generated in %.1f s"
          % (args.files, args.records, args.files * args.records, size / 1e6,
             ", ".join("%s %d" % kv for kv in sorted(kinds.items())), time.perf_counter() - t))

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMEXPR_NUM_THREADS="1", RAYON_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    sw_dir, py_dir = os.path.join(OUT, "swallow"), os.path.join(OUT, "python")
    sw_cmd = ["mpirun", "-np", "1", BIN, "corpus", "--input", *inputs, "--output", sw_dir, "--config", config, "--workers", "1"]
    py_cmd = [sys.executable, os.path.join(REPO, "scripts", "corpus_peer.py"), "--input", *inputs, "--output", py_dir,
              "--config", config]
    runs = {"swallow": [], "python": []}
    for rep in range(args.repeat):
        for name, cmd, out_dir in (("swallow", sw_cmd, sw_dir), ("python", py_cmd, py_dir)):
            shutil.rmtree(out_dir, ignore_errors=True)  # swallow resumes a run directory: start afresh
            wall, cpu, summary = timed(cmd, env)
            report = json.load(open(os.path.join(out_dir, "report.json")))
            runs[name].append((wall, cpu, report))
            print("run %d %-7s %7.2f s wall, %7.2f s CPU | %s" % (rep + 1, name, wall, cpu, summary))

    (sw_wall, sw_cpu, sw), (py_wall, py_cpu, py) = min(runs["swallow"], key=lambda r: r[0]), min(runs["python"], key=lambda r: r[0])
    sw_pages, py_pages = sw["records_read"], py["records_read"]
    sw_inner = sum(sw["seconds"].values())
    print()
    print("| pipeline (1 core) | pages | documents kept | seconds (wall) | CPU seconds | pages/s per core |")
    print("|---|---:|---:|---:|---:|---:|")
    print("| `swallow corpus` (mpirun -np 1, --workers 1) | %d | %d | %.2f | %.2f | %.1f |"
          % (sw_pages, sw["documents_kept"], sw_wall, sw_cpu, sw_pages / sw_wall))
    print("| Python: warcio + charset_normalizer + trafilatura + datasketch | %d | %d | %.2f | %.2f | %.1f |"
          % (py_pages, py["documents_kept"], py_wall, py_cpu, py_pages / py_wall))
    print()
    print("ratio (pages/s per core, whole processes): %.1fx" % ((sw_pages / sw_wall) / (py_pages / py_wall)))
    print("ratio without start-up (swallow's stage seconds %.2f, the peer's run %.2f): %.1fx"
          % (sw_inner, py["total_seconds"], py["total_seconds"] / sw_inner))
    print()
    stages = ["warc", "charset", "precheck", "extract", "lang", "filters", "clean", "minhash", "dedup", "write"]
    print("| stage | swallow s | Python s | ratio |")
    print("|---|---:|---:|---:|")
    for s in stages + sorted(set(sw["seconds"]) - set(stages)):
        a, b = sw["seconds"].get(s, 0.0), py["seconds"].get(s, 0.0)
        print("| %s | %.3f | %.3f | %s |" % (s, a, b, "%.0fx" % (b / a) if a > 0 else "-"))
    print()
    ra, rb = removals(sw), removals(py)
    print("| removed (stage/rule) | swallow | Python |")
    print("|---|---:|---:|")
    for k in sorted(set(ra) | set(rb)):
        print("| %s | %d | %d |" % (k, ra.get(k, 0), rb.get(k, 0)))
    ua, ub = kept_urls(sw_dir), kept_urls(py_dir)
    print()
    print("kept by both: %d, by swallow only: %d, by Python only: %d" % (len(ua & ub), len(ua - ub), len(ub - ua)))


if __name__ == "__main__":
    main()
