#!/usr/bin/env python3
"""`swallow prep` against Megatron-LM's preprocess_data.py recipe, side by side in one run, for each
tokenizer kind.

    make bench-prep     (or: python3 scripts/bench_prep.py [--mb 200] [--workers 2] [--kinds ...])

1. Corpus (once, under out/bench-prep/): ~200 MB of JSONL mixing Japanese and English documents.
   With real text extracted by scripts/tokenizer_corpus.py at out/corpus/{ja,en}.jsonl (Debian's
   Japanese and English documentation), each document is a run of consecutive paragraphs of one
   real document (fixed seed; about 10x the real text, so paragraphs repeat). Without it, sentences
   of data/sample are recombined (the sample tokenizer's benchmark of earlier runs).
2. Tokenizers: `sample` (data/sample/tokenizer.json, GPT-2-style byte-level BPE, 4,096 entries),
   `llama2` (SentencePiece BPE with byte fallback, 32,000 pieces, Llama 2's file shape) and
   `llama3` (byte-level BPE behind Llama 3's split regex, 128,000 + 256 special tokens): the last
   two built once by tests/fixtures/make_tokenizers.py at full size under out/bench-prep/tokenizers.
3. Python pipeline, as tools/preprocess_data.py does it: a multiprocessing pool of `--workers`
   processes, each with its own HF `tokenizers` Tokenizer, fed lines by pool.imap(..., chunksize=32);
   each encodes with special tokens (Llama's BOS) and appends the EOS id of tokenizer_config.json as
   EOD; the parent writes with megatron-core's IndexedDatasetBuilder.add_document, then finalize().
4. `swallow prep --workers N --append-eod` on the same file.
With --repeat N the two alternate N times and the best time of each counts (the shared machine's
load varies between runs). Prints tokens/s of both and the ratio, and checks that both wrote
byte-identical .bin and .idx.
Needs: megatron-core, torch, numpy, tokenizers (pip); for the full-size tokenizers also
sentencepiece, transformers, protobuf (tests/fixtures/make_tokenizers.py).
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
OUT = os.path.join(REPO, "out", "bench-prep")
REAL = os.path.join(REPO, "out", "corpus")
FULL = os.path.join(OUT, "tokenizers")
TOKENIZERS = {
    "sample": os.path.join(REPO, "data", "sample", "tokenizer.json"),
    "llama2": os.path.join(FULL, "llama2", "tokenizer.json"),
    "llama3": os.path.join(FULL, "llama3", "tokenizer.json"),
}


def sentences(path, pattern):
    out = []
    for line in open(path, encoding="utf-8"):
        for para in json.loads(line)["text"].split("\n"):
            out.extend(s for s in re.findall(pattern, para) if s.strip())
    return out


def sample_documents(rng):
    """Documents recombined from the sentences of data/sample."""
    ja = sentences(os.path.join(REPO, "data/sample/ja.jsonl"), r"[^。]*。")
    en = sentences(os.path.join(REPO, "data/sample/en.jsonl"), r"[^.!?]*[.!?]\s*")
    while True:
        pool = ja if rng.random() < 0.5 else en
        paras = []
        for _ in range(rng.randint(1, 6)):
            paras.append("".join(rng.choice(pool).strip() + ("" if pool is ja else " ")
                                 for _ in range(rng.randint(2, 12))).strip())
        yield "\n".join(paras)


def real_documents(rng):
    """Runs of consecutive paragraphs of real documents, Japanese and English alternating at random."""
    docs = {lang: [json.loads(l)["text"].split("\n\n") for l in open(os.path.join(REAL, f"{lang}.jsonl"), encoding="utf-8")]
            for lang in ("ja", "en")}
    while True:
        paras = rng.choice(docs["ja" if rng.random() < 0.5 else "en"])
        a = rng.randrange(len(paras))
        b = min(len(paras), a + rng.randint(1, 12))
        yield "\n\n".join(paras[a:b])


def make_corpus(path, mb, real):
    rng = random.Random(0)
    target = mb * 1_000_000
    size = 0
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for text in (real_documents if real else sample_documents)(rng):
            if size >= target:
                break
            line = json.dumps({"text": text, "id": size}, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
    os.replace(tmp, path)


def eos_token(tokenizer_path):
    """What Megatron's HuggingFaceTokenizer uses as EOD: the eos_token of tokenizer_config.json."""
    cfg = os.path.join(os.path.dirname(tokenizer_path), "tokenizer_config.json")
    if os.path.exists(cfg):
        eos = json.load(open(cfg, encoding="utf-8")).get("eos_token")
        return eos["content"] if isinstance(eos, dict) else eos
    return "</s>"


class Encoder:
    """preprocess_data.py's Encoder: one tokenizer per worker process, built in the initializer."""

    def __init__(self, tokenizer_path):
        self.path = tokenizer_path

    def initializer(self):
        from tokenizers import Tokenizer
        Encoder.tokenizer = Tokenizer.from_file(self.path)
        Encoder.eod = Encoder.tokenizer.token_to_id(eos_token(self.path))

    def encode(self, line):
        text = json.loads(line)["text"]
        ids = Encoder.tokenizer.encode(text).ids
        lens = [len(ids)] if ids else []
        if ids:  # append_eod, as preprocess_data.py does for non-empty documents
            ids.append(Encoder.eod)
            lens[-1] += 1
        return ids, lens, len(line)


def python_pipeline(tokenizer_path, corpus, prefix, workers):
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_file(tokenizer_path).get_vocab_size(with_added_tokens=True)
    start = time.time()
    encoder = Encoder(tokenizer_path)
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


def swallow_prep(tokenizer_path, corpus, prefix, workers):
    start = time.time()
    out = subprocess.run([os.path.join(REPO, "target/release/swallow"), "prep", "--tokenizer", tokenizer_path,
                          "--input", corpus, "--output", prefix, "--append-eod", "--workers", str(workers)],
                         check=True, capture_output=True, text=True).stdout.strip()
    secs = time.time() - start
    m = re.search(r"prep: (\d+) documents, (\d+) tokens", out)
    return int(m.group(1)), int(m.group(2)), secs, out


def build_full_size_tokenizers():
    if all(os.path.exists(p) for p in TOKENIZERS.values()):
        return
    t = time.time()
    subprocess.run([sys.executable, os.path.join(REPO, "tests/fixtures/make_tokenizers.py"), "--text",
                    os.path.join(REAL, "ja.jsonl"), os.path.join(REAL, "en.jsonl"), "--out", FULL,
                    "--sp-vocab", "32000", "--bl-vocab", "128000", "--kinds", "llama2", "llama3", "--no-expected"], check=True)
    print(f"built the full-size tokenizers in {time.time() - t:.0f} s")


def bench(kind, corpus, size, a):
    tok = TOKENIZERS[kind]
    py = os.path.join(OUT, f"python-{kind}")
    rs = os.path.join(OUT, f"swallow-{kind}")
    ps = ss = float("inf")
    for r in range(a.repeat):
        pd, pt, p_secs = python_pipeline(tok, corpus, py, a.workers)
        print(f"[{kind}] python (preprocess_data.py recipe): {pd} documents, {pt} tokens in {p_secs:.1f} s = "
              f"{pt / p_secs:,.0f} tokens/s ({size / 1e6 / p_secs:.2f} MB/s)")
        sd, st, s_secs, line = swallow_prep(tok, corpus, rs, a.workers)
        print(f"[{kind}] swallow prep:                      {sd} documents, {st} tokens in {s_secs:.1f} s = "
              f"{st / s_secs:,.0f} tokens/s ({size / 1e6 / s_secs:.2f} MB/s)")
        print(f"  {line}")
        ps, ss = min(ps, p_secs), min(ss, s_secs)
    same = all(open(py + e, "rb").read() == open(rs + e, "rb").read() for e in (".bin", ".idx"))
    print(f"[{kind}] speed-up (best of {a.repeat} each): {(st / ss) / (pt / ps):.2f}x; outputs byte-identical: {same}")
    result = {"kind": kind, "corpus_mb": size / 1e6, "workers": a.workers, "repeat": a.repeat,
              "python_tokens_per_s": pt / ps, "swallow_tokens_per_s": st / ss, "speedup": (st / ss) / (pt / ps),
              "identical": same}
    print(json.dumps(result))
    if not same or (pd, pt) != (sd, st):
        sys.exit(f"error: the two pipelines wrote different shards for {kind}")
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--kinds", default="llama2,llama3,sample", help="comma-separated: sample, llama2, llama3")
    a = ap.parse_args()
    kinds = a.kinds.split(",")
    os.makedirs(OUT, exist_ok=True)
    real = os.path.exists(os.path.join(REAL, "ja.jsonl")) and os.path.exists(os.path.join(REAL, "en.jsonl"))
    if not real and kinds != ["sample"]:
        sys.exit("error: no real text at out/corpus/{ja,en}.jsonl: run scripts/tokenizer_corpus.py first (make bench-prep does)")
    if kinds != ["sample"]:
        build_full_size_tokenizers()
    corpus = os.path.join(OUT, f"corpus-{'real' if real else 'sample'}-{a.mb}mb.jsonl")
    if not os.path.exists(corpus):
        t = time.time()
        make_corpus(corpus, a.mb, real)
        print(f"generated {corpus} in {time.time() - t:.1f} s")
    size = os.path.getsize(corpus)
    print(f"corpus: {corpus}, {size / 1e6:.1f} MB, {sum(1 for _ in open(corpus, 'rb'))} documents; "
          f"{a.workers} workers; {os.cpu_count()} cores")
    results = [bench(k, corpus, size, a) for k in kinds]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
