"""The language identifier's features and model file, as src/corpus/lang.rs computes and reads
them (scripts/train_langid.py trains the model; scripts/corpus_peer.py scores with it).

Features: the text is normalised (ASCII letters lowercased, ASCII digits to 0, runs of whitespace
-- Unicode White_Space, as Rust's char::is_whitespace -- to one space, one space at both ends).
Two families of 1-, 2- and 3-grams are hashed into 2^BITS buckets:
- code points: the n-gram c1..cn is keyed k = sum (c_i + 1) << 21 (i - 1), exact since code points
  are below 2^21;
- script classes (CLASS_RANGES): keyed k = sum class_i << 4 (i - 1), with bit 63 set;
and bucket = mix64(k) >> (64 - BITS), mix64 being splitmix64's finaliser (src/mix.rs). A feature
is its bucket's count over the number of n-grams (both families). The score is
sigmoid(bias + w . x).

Model file (data/corpus/langid.bin): MAGIC, u32 BITS, f32 bias, f32 scale, then 2^BITS i16
weights (weight = f32(i16) * scale, in f32), all little-endian.
"""

import re
import struct

import numpy as np

BITS = 16
MAGIC = b"SWLID001"
WHITESPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
NORMALISE = {ord(c): ord(c.lower()) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
NORMALISE.update({ord(c): ord("0") for c in "0123456789"})


def mix64(z):
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def normalise(text):
    t = WHITESPACE.sub(" ", text.translate(NORMALISE))
    return " " + t.strip(" ") + " "


# Script classes (the first five as script.rs names them), for the class n-grams.
CLASS_RANGES = (  # (class, first, last), first match wins
    (1, 0x3041, 0x3096), (1, 0x309D, 0x309F),                                   # hiragana
    (3, 0x30FC, 0x30FC), (3, 0xFF70, 0xFF70),                                   # prolonged mark
    (2, 0x30A1, 0x30FA), (2, 0x30FD, 0x30FF), (2, 0x31F0, 0x31FF), (2, 0xFF66, 0xFF6F),
    (2, 0xFF71, 0xFF9F),                                                        # katakana
    (4, 0x3005, 0x3007), (4, 0x303B, 0x303B), (4, 0x3400, 0x4DBF), (4, 0x4E00, 0x9FFF),
    (4, 0xF900, 0xFAFF), (4, 0x20000, 0x3FFFF),                                 # kanji
    (5, 0x3000, 0x303F), (5, 0xFF01, 0xFF65),                                   # CJK punctuation, full-width forms
    (6, 0x61, 0x7A), (6, 0x41, 0x5A), (6, 0xC0, 0x24F), (6, 0x1E00, 0x1EFF),    # Latin letters
    (7, 0x1100, 0x11FF), (7, 0x3130, 0x318F), (7, 0xAC00, 0xD7AF),              # Hangul
    (8, 0x20, 0x20),                                                            # space
    (9, 0x00, 0x7F),                                                            # other ASCII
)
OTHER_CLASS = 10  # every other character (Cyrillic, Greek, Arabic, symbols, ...)
CLASS_KEY = np.uint64(1 << 63)  # class n-gram keys: bit 63 set (code point keys stay below 2^63)


def classes(cps):
    out = np.full(len(cps), OTHER_CLASS, dtype=np.uint64)
    done = np.zeros(len(cps), dtype=bool)
    for cls, lo, hi in CLASS_RANGES:
        hit = ~done & (cps >= lo) & (cps <= hi)
        out[hit] = cls
        done |= hit
    return out


def ngram_keys(units, shift):
    """Keys of the 1-, 2- and 3-grams of `units` (each unit > 0, below 2^shift)."""
    s1, s2 = np.uint64(shift), np.uint64(2 * shift)
    keys = [units]
    if len(units) >= 2:
        keys.append(units[:-1] | (units[1:] << s1))
    if len(units) >= 3:
        keys.append(units[:-2] | (units[1:-1] << s1) | (units[2:] << s2))
    return np.concatenate(keys)


def buckets(text):
    cps = np.frombuffer(normalise(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    k = np.concatenate([ngram_keys(cps + np.uint64(1), 21), ngram_keys(classes(cps), 4) | CLASS_KEY])
    return (mix64(k) >> np.uint64(64 - BITS)).astype(np.int64)


def read_model(path):
    """(bias, weights) of a model file, weights as f32 (as lang.rs uses them)."""
    raw = open(path, "rb").read()
    if raw[:8] != MAGIC:
        raise SystemExit("%s: not a language-identifier model (magic %r)" % (path, raw[:8]))
    bits, bias, scale = struct.unpack("<Iff", raw[8:20])
    q = np.frombuffer(raw[20:], dtype="<i2")
    if bits != BITS or len(q) != 1 << BITS:
        raise SystemExit("%s: expected %d buckets" % (path, 1 << BITS))
    return np.float32(bias), q.astype(np.float32) * np.float32(scale)


def score(text, model):
    """The Japanese score of `text` in [0, 1]."""
    bias, weights = model
    b = buckets(text)
    z = float(bias) + float(weights[b].astype(np.float64).sum()) / len(b)
    return 1.0 / (1.0 + np.exp(-z))
