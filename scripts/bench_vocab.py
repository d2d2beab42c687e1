#!/usr/bin/env python3
"""`swallow vocab` against SentencePiece's BPE trainer on the same Japanese text, side by side.

    python3 scripts/bench_vocab.py [--input out/corpus/ja.jsonl] [--vocab-size 16000] [--threads 2]

1. Text: JSONL documents (real Japanese text: `python3 scripts/tokenizer_corpus.py --lang ja --out
   out/corpus/ja.jsonl` extracts it from Debian's Japanese documentation packages). SentencePiece
   reads lines, so every document's lines (split at "\\n", a "\\r" before it dropped: what `swallow
   vocab` takes as sentences) are written to one text file for it.
2. Base: the Llama-2-kind fixture tests/fixtures/tokenizers/llama2/tokenizer.json cut to its 259
   meta and byte tokens and no merges, so every piece either trainer learns is new: `swallow vocab
   --target-size V` then appends exactly the pieces SentencePiece's model holds at ids 259..V
   (merged pieces in learned order, then the characters by frequency).
3. SentencePiece (PyPI `sentencepiece`): model_type=bpe, vocab_size=V, num_threads=--threads, with
   Llama 2's settings (identity normalization, byte fallback, split digits, whitespace-only
   pieces, no extra-whitespace removal) and the same character coverage.
4. `swallow vocab --workers --threads` on the JSONL file.
With --repeat N the two alternate N times and the best time of each counts. Prints SentencePiece's
time (its train call, in this process), `swallow vocab`'s (the whole process, and the command alone
without the binary's MPI start-up), the ratios, and how far the two piece lists agree (identical
ids, first difference, shared pieces).
Needs: sentencepiece (pip), a release build (cargo build --release).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lines_file(jsonl, path):
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for doc in open(jsonl, encoding="utf-8"):
            if not doc.strip():
                continue
            for line in json.loads(doc)["text"].split("\n"):
                line = line[:-1] if line.endswith("\r") else line
                if line:
                    out.write(line + "\n")
                    n += 1
    return n


def minimal_base(fixture, path):
    t = json.load(open(fixture, encoding="utf-8"))
    vocab = {tok: i for tok, i in t["model"]["vocab"].items() if i < 259}
    assert sorted(vocab.values()) == list(range(259)), "the fixture's first 259 ids are meta and byte tokens"
    t["model"]["vocab"] = vocab
    t["model"]["merges"] = []
    json.dump(t, open(path, "w", encoding="utf-8"), ensure_ascii=False, indent=2)


def run_sentencepiece(text, prefix, vocab_size, threads, coverage):
    import sentencepiece as spm
    start = time.perf_counter()
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=prefix, model_type="bpe", vocab_size=vocab_size, num_threads=threads,
        character_coverage=coverage, byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        max_sentence_length=4192, minloglevel=2)
    seconds = time.perf_counter() - start
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    return seconds, [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def run_swallow(binary, base, jsonl, out, vocab_size, threads, coverage):
    start = time.perf_counter()
    r = subprocess.run([binary, "vocab", "--base", base, "--input", jsonl, "--target-size", str(vocab_size),
                        "--output", out, "--workers", str(threads), "--character-coverage", str(coverage)],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"swallow vocab failed:\n{r.stderr}")
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    vocab = json.load(open(os.path.join(out, "tokenizer.json"), encoding="utf-8"))["model"]["vocab"]
    by_id = sorted(vocab, key=vocab.get)
    return seconds, by_id, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default=os.path.join(REPO, "out", "corpus", "ja.jsonl"))
    ap.add_argument("--vocab-size", type=int, default=16000, help="a multiple of 8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--coverage", type=float, default=0.9995)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--swallow", default=os.path.join(REPO, "target", "release", "swallow"))
    a = ap.parse_args()
    if a.vocab_size % 8:
        sys.exit("--vocab-size must be a multiple of 8 (swallow vocab rounds up to one)")
    if not os.path.exists(a.input):
        sys.exit(f"{a.input} is missing: python3 scripts/tokenizer_corpus.py --lang ja --out {a.input}")
    tmp = tempfile.mkdtemp(prefix="bench-vocab-")
    text = os.path.join(tmp, "lines.txt")
    n = lines_file(a.input, text)
    base = os.path.join(tmp, "base.json")
    minimal_base(os.path.join(REPO, "tests", "fixtures", "tokenizers", "llama2", "tokenizer.json"), base)
    mb = os.path.getsize(a.input) / 1e6
    print(f"input {a.input}: {mb:.1f} MB, {n} lines; vocabulary {a.vocab_size} (259 meta and byte tokens + learned); "
          f"{a.threads} threads, coverage {a.coverage}")
    best = {"sentencepiece": float("inf"), "swallow": float("inf"), "swallow_in_command": float("inf")}
    for _ in range(a.repeat):
        t, spm_pieces = run_sentencepiece(text, os.path.join(tmp, "spm"), a.vocab_size, a.threads, a.coverage)
        best["sentencepiece"] = min(best["sentencepiece"], t)
        t, ours, summary = run_swallow(a.swallow, base, a.input, os.path.join(tmp, "out"), a.vocab_size, a.threads, a.coverage)
        best["swallow"] = min(best["swallow"], t)
        if summary["seconds"] < best["swallow_in_command"]:
            best["swallow_in_command"], fastest = summary["seconds"], summary
    summary = fastest
    merged = a.vocab_size - 259 - summary["new_chars"]
    same = sum(x == y for x, y in zip(spm_pieces[259:], ours[259:]))
    first = next((i for i, (x, y) in enumerate(zip(spm_pieces[259:], ours[259:])) if x != y), None)
    shared = len(set(spm_pieces[259:]) & set(ours[259:]))
    spm, ours_wall, ours_in = best["sentencepiece"], best["swallow"], best["swallow_in_command"]
    print(f"sentencepiece (its train call) {spm:.2f} s; swallow vocab: process {ours_wall:.2f} s "
          f"({spm / ours_wall:.2f}x faster), of which the command {ours_in:.2f} s ({spm / ours_in:.2f}x faster; the rest is "
          f"the binary's MPI start-up and exit); the command: counting {summary['count_seconds']:.2f} s, learning "
          f"{summary['merges_learned']} merges {summary['train_seconds']:.2f} s, writing {summary['seconds'] - summary['count_seconds'] - summary['train_seconds']:.2f} s")
    print(f"pieces: {same} of {a.vocab_size - 259} at the same id; first difference at learned piece "
          f"{'none' if first is None else first} ({merged} merged pieces, {summary['new_chars']} characters); "
          f"{shared} shared as a set")
    if first is not None:
        print(f"  at {first}: sentencepiece {spm_pieces[259 + first]!r}, swallow {ours[259 + first]!r}")
    print(json.dumps({"sentencepiece_s": spm, "swallow_s": ours_wall, "swallow_command_s": ours_in, "same_id": same,
                      "first_difference": first, "shared": shared, "learned": a.vocab_size - 259}))


if __name__ == "__main__":
    main()
