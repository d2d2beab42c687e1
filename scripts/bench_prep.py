#!/usr/bin/env python3
"""`swallow prep` against Megatron-LM's preprocess_data.py recipe, side by side in one run.

    cargo build --release
    python3 scripts/bench_prep.py [--mb 200] [--workers 2]      (or: make bench-prep)

1. Generates (once, under out/bench-prep/) a ~200 MB JSONL corpus mixing Japanese and English
   documents: sentences of data/sample/{ja,en}.jsonl recombined with a fixed seed.
2. Python pipeline, as tools/preprocess_data.py does it: a multiprocessing pool of `--workers`
   processes, each with its own HF `tokenizers` Tokenizer (data/sample/tokenizer.json), fed lines by
   pool.imap(..., chunksize=32); the parent json-decodes nothing and writes each document with
   megatron-core's IndexedDatasetBuilder.add_document, then finalize().
3. `swallow prep --workers N --append-eod` on the same file.
With --repeat N the two alternate N times and the best time of each counts (the shared machine's
load varies between runs). Prints tokens/s of both and the ratio, and checks that both wrote
byte-identical .bin and .idx.
Needs: megatron-core, torch, numpy, tokenizers (pip).
"""
import argparse
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(REPO, "data", "sample", "tokenizer.json")
OUT = os.path.join(REPO, "out", "bench-prep")


def sentences(path, pattern):
    out = []
    for line in open(path, encoding="utf-8"):
        for para in json.loads(line)["text"].split("\n"):
            out.extend(s for s in re.findall(pattern, para) if s.strip())
    return out


def make_corpus(path, mb):
    ja = sentences(os.path.join(REPO, "data/sample/ja.jsonl"), r"[^。]*。")
    en = sentences(os.path.join(REPO, "data/sample/en.jsonl"), r"[^.!?]*[.!?]\s*")
    rng = random.Random(0)
    target = mb * 1_000_000
    size = 0
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        while size < target:
            pool, joiner = (ja, "") if rng.random() < 0.5 else (en, "")
            paras = []
            for _ in range(rng.randint(1, 6)):
                paras.append(joiner.join(rng.choice(pool).strip() + ("" if pool is ja else " ")
                                         for _ in range(rng.randint(2, 12))).strip())
            line = json.dumps({"text": "\n".join(paras), "id": size}, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
    os.replace(tmp, path)


class Encoder:
    """preprocess_data.py's Encoder: one tokenizer per worker process, built in the initializer."""

    def initializer(self):
        from tokenizers import Tokenizer
        Encoder.tokenizer = Tokenizer.from_file(TOKENIZER)
        Encoder.eod = Encoder.tokenizer.token_to_id("</s>")

    def encode(self, line):
        text = json.loads(line)["text"]
        ids = Encoder.tokenizer.encode(text).ids
        lens = [len(ids)] if ids else []
        if ids:  # append_eod, as preprocess_data.py does for non-empty documents
            ids.append(Encoder.eod)
            lens[-1] += 1
        return ids, lens, len(line)


def python_pipeline(corpus, prefix, workers):
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_file(TOKENIZER).get_vocab_size(with_added_tokens=True)
    start = time.time()
    encoder = Encoder()
    tokens = docs = 0
    with open(corpus, encoding="utf-8") as fin, multiprocessing.Pool(workers, initializer=encoder.initializer) as pool:
        builder = IndexedDatasetBuilder(prefix + ".bin", dtype=DType.optimal_dtype(vocab))
        for ids, lens, _ in pool.imap(encoder.encode, fin, 32):
            if not ids:
                continue
            builder.add_document(ids, lens)
            tokens += len(ids)
            docs += 1
        builder.finalize(prefix + ".idx")
    return docs, tokens, time.time() - start


def swallow_prep(corpus, prefix, workers):
    start = time.time()
    out = subprocess.run([os.path.join(REPO, "target/release/swallow"), "prep", "--tokenizer", TOKENIZER,
                          "--input", corpus, "--output", prefix, "--append-eod", "--workers", str(workers)],
                         check=True, capture_output=True, text=True).stdout.strip()
    secs = time.time() - start
    m = re.search(r"prep: (\d+) documents, (\d+) tokens", out)
    return int(m.group(1)), int(m.group(2)), secs, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    corpus = os.path.join(OUT, f"corpus-{a.mb}mb.jsonl")
    if not os.path.exists(corpus):
        t = time.time()
        make_corpus(corpus, a.mb)
        print(f"generated {corpus} in {time.time() - t:.1f} s")
    size = os.path.getsize(corpus)
    print(f"corpus: {size / 1e6:.1f} MB, {sum(1 for _ in open(corpus, 'rb'))} documents; {a.workers} workers; "
          f"{os.cpu_count()} cores")
    py = os.path.join(OUT, "python")
    rs = os.path.join(OUT, "swallow")
    ps = ss = float("inf")
    for r in range(a.repeat):
        pd, pt, p_secs = python_pipeline(corpus, py, a.workers)
        print(f"python (preprocess_data.py recipe): {pd} documents, {pt} tokens in {p_secs:.1f} s = "
              f"{pt / p_secs:,.0f} tokens/s ({size / 1e6 / p_secs:.2f} MB/s)")
        sd, st, s_secs, line = swallow_prep(corpus, rs, a.workers)
        print(f"swallow prep:                      {sd} documents, {st} tokens in {s_secs:.1f} s = "
              f"{st / s_secs:,.0f} tokens/s ({size / 1e6 / s_secs:.2f} MB/s)")
        print(f"  {line}")
        ps, ss = min(ps, p_secs), min(ss, s_secs)
    same = all(open(py + e, "rb").read() == open(rs + e, "rb").read() for e in (".bin", ".idx"))
    print(f"speed-up (best of {a.repeat} each): {(st / ss) / (pt / ps):.2f}x; outputs byte-identical: {same}")
    print(json.dumps({"corpus_mb": size / 1e6, "workers": a.workers, "repeat": a.repeat, "python_tokens_per_s": pt / ps,
                      "swallow_tokens_per_s": st / ss, "speedup": (st / ss) / (pt / ps), "identical": same}))
    if not same or (pd, pt) != (sd, st):
        sys.exit("error: the two pipelines wrote different shards")


if __name__ == "__main__":
    main()
