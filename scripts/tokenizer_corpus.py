#!/usr/bin/env python3
"""Extract real Japanese or English plain text from installed Debian documentation packages.

Python 3 standard library only. Reads the files that `dpkg -L PACKAGE` lists for each installed
package of the chosen language: HTML pages (html.parser: script/style/navigation dropped, block
elements become line breaks, runs of blank lines collapsed) and man pages (gzip'd roff: requests
dropped, font/size escapes removed, named characters mapped; source line breaks kept). One
document per HTML page or man page, written as JSON lines {"text": ..., "source": "package/path"}
in sorted source order, so the output depends only on the installed package versions.

Packages (install with apt-get install -y --no-install-recommends ...):
  core ja: debian-reference-ja developers-reference-ja debian-policy-ja aptitude-doc-ja
           maint-guide-ja debian-faq-ja manpages-ja manpages-ja-dev
  core en: debian-reference-en developers-reference debian-policy aptitude-doc-en
           maint-guide debian-faq manpages manpages-dev
  --packages all adds, when installed: debian-edu-doc-{ja,en}, gimp-help-{ja,en}, kicad-doc-ja,
           harden-doc, debian-history (w3m satisfies gimp-help's www-browser dependency;
           libreoffice-help-*, lilypond-doc-html*, scilab-doc-ja and python3.11-doc are also
           read when installed, but pull in large dependencies)

Examples:
  # everything the installed core packages hold
  python3 scripts/tokenizer_corpus.py --lang ja --out out/corpus/ja.jsonl
  # the committed fixture excerpts (GPL-2/GPL-2+ packages only, fixed selection)
  python3 scripts/tokenizer_corpus.py --lang ja --excerpt-kb 300 --max-doc-kb 10 \
      --license-clean --out tests/fixtures/tokenizers/text/ja.jsonl
  python3 scripts/tokenizer_corpus.py --lang en --excerpt-kb 150 --max-doc-kb 10 \
      --license-clean --out tests/fixtures/tokenizers/text/en.jsonl
"""

import argparse
import gzip
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys

# Package tables. `clean` marks packages whose whole text is under GPL-2 or GPL-2+ (the only ones
# the committed excerpts draw from; the man pages carry per-page licenses and the FAQ a
# verbatim-notice license, so they are used for local corpora only).
PACKAGES = {
    "ja": [
        ("debian-reference-ja", "core", True),
        ("developers-reference-ja", "core", True),
        ("debian-policy-ja", "core", True),
        ("aptitude-doc-ja", "core", True),
        ("maint-guide-ja", "core", True),
        ("debian-faq-ja", "core", False),
        ("manpages-ja", "core", False),
        ("manpages-ja-dev", "core", False),
        ("debian-edu-doc-ja", "extra", False),
        ("gimp-help-ja", "extra", False),
        ("kicad-doc-ja", "extra", False),
        ("harden-doc", "extra", False, r"/html/ja-JP/"),
        ("debian-history", "extra", False, r"\.ja\.html$"),
        ("libreoffice-help-ja", "extra", False),
        ("lilypond-doc-html-ja", "extra", False),
        ("scilab-doc-ja", "extra", False),
    ],
    "en": [
        ("debian-reference-en", "core", True),
        ("developers-reference", "core", True),
        ("debian-policy", "core", True),
        ("aptitude-doc-en", "core", True),
        ("maint-guide", "core", True),
        ("debian-faq", "core", False),
        ("manpages", "core", False),
        ("manpages-dev", "core", False),
        ("debian-edu-doc-en", "extra", False),
        ("gimp-help-en", "extra", False),
        ("harden-doc", "extra", False, r"/html/en-US/"),
        ("debian-history", "extra", False, r"\.en\.html$"),
        ("libreoffice-help-en-us", "extra", False),
        ("lilypond-doc-html", "extra", False),
        ("python3.11-doc", "extra", False),
    ],
}

HTML_RE = re.compile(r"\.(x?html?)(\.gz)?$")
MAN_RE = re.compile(r"/man/(?:[^/]+/)?man[0-9n][^/]*/[^/]+\.[0-9n][^/]*$")
# Navigation pages, search pages and single-page aggregates that repeat the chapter pages.
SKIP_RE = re.compile(
    r"(/|^)(search|genindex|py-modindex|index|searchindex|developers-reference|"
    r"policy|menu-policy-1|perl-policy-1|index\.[a-z_-]+)\.html?(\.gz)?$"
)
# Files of otherwise GPL packages that carry other licenses (debian-policy ships the FHS, the
# copyright-format and debconf specifications): left out with --license-clean.
LICENSE_EXCLUDE_RE = re.compile(r"/(copyright-format[^/]*|debconf_specification[^/]*|fhs/[^/]*)$")
# Files under these directories are sources, assets or duplicates.
SKIP_DIR_RE = re.compile(r"/(_sources|_static|_images|images|js)/")


def sh(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def installed_version(pkg):
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg],
            capture_output=True, text=True,
        )
    except FileNotFoundError:
        return None
    if out.returncode != 0 or "install ok installed" not in out.stdout:
        return None
    return out.stdout.split("\t", 1)[1].strip()


def read_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def decode(data):
    for enc in ("utf-8", "euc-jp"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            pass
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# HTML

BLOCK = {
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "thead", "tfoot", "tr", "ul", "title", "center", "br",
}
PARAGRAPH = {"p", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "table", "dl", "ul", "ol",
             "blockquote", "section", "hr", "title"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr"}
SKIP_TAGS = {"script", "style", "head", "noscript", "template", "svg", "button", "select"}
SKIP_CLASSES = {"navheader", "navfooter", "sphinxsidebar", "related", "footer", "headerlink",
                "breadcrumbs", "toc", "language_switcher_placeholder", "navigation"}

# East Asian characters between which a source line break is dropped, not turned into a space
# (CSS Text level 3 segment break rule).
WIDE = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f"
WIDE_BREAK_RE = re.compile(r"(?<=[%s])[ \t\f]*[\r\n][ \t\r\n\f]*(?=[%s])" % (WIDE, WIDE))
HTML_WS_RE = re.compile(r"[ \t\r\n\f]+")


class TextExtractor(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = []
        self.stack = []  # (tag, skipping)
        self.skip = 0
        self.pre = 0

    def _brk(self, n):
        have = 0
        for piece in reversed(self.out):
            stripped = piece.rstrip("\n")
            have += len(piece) - len(stripped)
            if stripped:
                break
        else:
            have = max(have, 2)  # start of document
        if have < n:
            self.out.append("\n" * (n - have))

    def handle_starttag(self, tag, attrs):
        classes = set()
        for k, v in attrs:
            if k == "class" and v:
                classes.update(v.split())
        skipping = tag in SKIP_TAGS or bool(classes & SKIP_CLASSES)
        if tag not in VOID:
            self.stack.append((tag, skipping))
            if skipping:
                self.skip += 1
        if self.skip:
            return
        if tag == "pre":
            self.pre += 1
        if tag in ("td", "th"):
            s = "".join(self.out[-1:])
            if s and not s.endswith(("\n", "\t")):
                self.out.append("\t")
        elif tag == "br":
            self.out.append("\n")
        elif tag in PARAGRAPH:
            self._brk(2)
        elif tag in BLOCK:
            self._brk(1)
        if tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            t, skipping = self.stack.pop()
            if skipping:
                self.skip -= 1
            if not self.skip and t == "pre":
                self.pre = max(0, self.pre - 1)
            if t == tag:
                break
        if self.skip:
            return
        if tag in PARAGRAPH:
            self._brk(2)
        elif tag in BLOCK:
            self._brk(1)

    def handle_data(self, data):
        if self.skip or not data:
            return
        if self.pre:
            self.out.append(data.replace("\r\n", "\n"))
            return
        data = WIDE_BREAK_RE.sub("", data)
        data = HTML_WS_RE.sub(" ", data)
        last = self.out[-1] if self.out else "\n"
        if last.endswith(("\n", "\t", " ")):
            data = data.lstrip(" ")
        if data:
            self.out.append(data)

    def text(self):
        return tidy("".join(self.out))


def tidy(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def html_to_text(src):
    p = TextExtractor()
    p.feed(src)
    p.close()
    return p.text()


# ---------------------------------------------------------------------------------------------
# roff (man pages)

NAMED = {
    "em": "\u2014", "en": "\u2013", "bu": "\u2022", "aq": "'", "dq": '"', "lq": "\u201c",
    "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "co": "\u00a9", "rg": "\u00ae",
    "tm": "\u2122", "mi": "-", "hy": "-", "ga": "`", "ti": "~", "ha": "^", "sl": "/",
    "rs": "\\", "ba": "|", "or": "|", "at": "@", "sh": "#", "Do": "$", "dg": "\u2020",
    ">=": "\u2265", "<=": "\u2264", "!=": "\u2260", "==": "\u2261", "mu": "\u00d7",
    "di": "\u00f7", "+-": "\u00b1", "de": "\u00b0", "ua": "\u2191", "da": "\u2193",
    "->": "\u2192", "<-": "\u2190", "<>": "\u2194", "rA": "\u21d2", "lA": "\u21d0",
    "Fo": "\u00ab", "Fc": "\u00bb", "fo": "\u2039", "fc": "\u203a", "ss": "\u00df",
    "pl": "+", "eq": "=", "sq": "\u25a1", "ci": "\u25cb", "ps": "\u00b6", "sc": "\u00a7",
    "lh": "\u261c", "rh": "\u261e", "aa": "\u00b4", "'e": "\u00e9", "`e": "\u00e8",
    "'a": "\u00e1", "`a": "\u00e0", ":u": "\u00fc", ":o": "\u00f6", ":a": "\u00e4",
    "R": "\u00ae", "Tm": "\u2122", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "\u27e8",
    "ra": "\u27e9", "fm": "\u2032", "sd": "\u2033", "tf": "\u2234", "if": "\u221e",
    "12": "\u00bd", "14": "\u00bc", "34": "\u00be", "Eu": "\u20ac", "eu": "\u20ac",
    "Po": "\u00a3", "Ye": "\u00a5", "ct": "\u00a2", "no": "\u00ac", "pc": "\u00b7",
}
ESC_RE = re.compile(
    r"\\(?:"
    r"(?P<font>[fF](?:\[[^\]]*\]|\(..|.))"
    r"|(?P<size>s[+-]?(?:\(\d\d|\[\d+\]|'\d+'|\d))"
    r"|(?P<named>\((?P<n2>..)|\[(?P<nb>[^\]]*)\])"
    r"|(?P<string>\*(?:\((?P<s2>..)|\[(?P<sb>[^\]]*)\]|(?P<s1>.)))"
    r"|(?P<reg>[ngV$](?:\(..|\[[^\]]*\]|.))"
    r"|(?P<arg>[kzhvwoxlLbDXNRSYAC](?:'[^']*'|\[[^\]]*\]|.))"
    r"|(?P<comment>[\"#].*)"
    r"|(?P<other>.|$)"
    r")"
)
SIMPLE = {"-": "-", "e": "\\", "\\": "\\", "&": "", ".": ".", "'": "'", "`": "`", " ": " ",
          "~": " ", "0": " ", "|": "", "^": "", ",": "", "/": "", ":": "", "%": "", "c": "",
          ")": "", "t": "\t", "a": "", "d": "", "u": "", "r": "", "p": "", "E": "\\", "{": "",
          "}": "", "!": "", "?": "", "": ""}


def roff_unescape(s):
    def repl(m):
        if m.group("named"):
            name = m.group("n2") or m.group("nb") or ""
            if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
                return chr(int(name[1:], 16))
            return NAMED.get(name, "")
        if m.group("string"):
            name = m.group("s2") or m.group("sb") or m.group("s1") or ""
            return {"lq": "\u201c", "rq": "\u201d", "R": "\u00ae", "Tm": "\u2122",
                    "(lq": "\u201c", "(rq": "\u201d"}.get(name, "")
        if m.group("other") is not None:
            return SIMPLE.get(m.group("other"), m.group("other"))
        return ""
    return ESC_RE.sub(repl, s)


def split_args(s):
    args, cur, q, i = [], [], False, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c == '"':
            if q and i + 1 < len(s) and s[i + 1] == '"':
                cur.append('"')
                i += 2
                continue
            q = not q
        elif c in " \t" and not q:
            if cur:
                args.append("".join(cur))
                cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        args.append("".join(cur))
    return args


BREAK_REQ = {"PP", "LP", "P", "sp", "HP", "TP", "TQ", "IP", "RS", "RE", "SY", "YS", "EX",
             "EE", "nf", "fi", "bp", "ne", "Sh", "Ss", "Pp", "Bl", "El", "Bd", "Ed", "It"}
FONT_REQ = {"B", "I", "SM", "SB", "CW", "R"}
ALT_REQ = {"BR", "RB", "IR", "RI", "BI", "IB"}


def roff_to_text(src):
    src = src.replace("\r\n", "\n")
    src = re.sub(r"\\\n", "", src)  # escaped newline joins lines
    out = []
    skip_until = None
    in_table = 0  # 0 outside, 1 options/format, 2 data
    tab = "\t"

    def para():
        if out and out[-1] != "":
            out.append("")

    for line in src.split("\n"):
        if skip_until is not None:
            if line.strip() == skip_until:
                skip_until = None
            continue
        if line.startswith((".", "'")):
            m = re.match(r"^[.']\s*(\\\"|\S+)?\s*(.*)$", line)
            req, rest = (m.group(1) or ""), m.group(2)
            if req.startswith('\\"') or req.startswith("\\#") or req == "":
                continue
            if req in ("de", "de1", "am", "ig", "ds1"):
                skip_until = ".." if req != "ig" or not rest.strip() else "." + rest.strip()
                continue
            if req == "TS":
                in_table, tab = 1, "\t"
                continue
            if req == "TE":
                in_table = 0
                para()
                continue
            if req == "T&":
                in_table = 1
                continue
            if req in ("SH", "SS", "Sh", "Ss"):
                para()
                text = roff_unescape(" ".join(split_args(rest))).strip()
                if text:
                    out.append(text)
                continue
            if req in ("TH", "Dd", "Dt", "Os"):
                continue
            if req in FONT_REQ:
                text = roff_unescape(" ".join(split_args(rest)))
                if text.strip():
                    out.append(text)
                continue
            if req in ALT_REQ:
                out.append(roff_unescape("".join(split_args(rest))))
                continue
            if req in ("IP", "TP", "HP", "It"):
                para()
                args = split_args(rest)
                if req == "IP" and args:
                    tag = roff_unescape(args[0]).strip()
                    if tag:
                        out.append(tag)
                continue
            if req in ("UR", "MT"):
                args = split_args(rest)
                if args:
                    out.append(roff_unescape(args[0]))
                continue
            if req in ("UE", "ME"):
                args = split_args(rest)
                if args:
                    out.append(roff_unescape(" ".join(args)))
                continue
            if req == "OP":
                args = [roff_unescape(a) for a in split_args(rest)]
                out.append("[" + " ".join(args) + "]")
                continue
            if req in ("Nm", "Nd", "Ar", "Fl", "Op", "Xr", "Pa", "Va", "Fn", "Ft", "Em",
                       "Sy", "Dv", "Er", "Ev", "Cm", "Li", "Ql", "Dq", "Sq", "Pq"):
                text = roff_unescape(" ".join(split_args(rest)))
                if text.strip():
                    out.append(text)
                continue
            if req in BREAK_REQ:
                if req in ("PP", "LP", "P", "sp", "Pp", "RS", "RE", "EX", "EE", "Bd", "Ed"):
                    para()
                continue
            continue  # every other request: dropped
        if in_table == 1:
            s = line.strip()
            m = re.search(r"tab\s*\((.)\)", s)
            if m:
                tab = m.group(1)
            if s.endswith("."):
                in_table = 2
            continue
        if in_table == 2:
            if line.strip() in ("_", "=", ""):
                continue
            cells = [roff_unescape(c).strip() for c in line.split(tab)]
            cells = [c for c in cells if c not in ("T{", "T}")]
            out.append("\t".join(c.replace("T{", "").replace("T}", "") for c in cells))
            continue
        text = roff_unescape(line)
        if not line.strip():
            para()
            continue
        out.append(text)
    return tidy("\n".join(out))


def is_so_redirect(src):
    for line in src.split("\n"):
        s = line.strip()
        if not s or s.startswith(('.\\"', "'\\\"", '.\\\\"')):
            continue
        return s.startswith(".so ")
    return False


# ---------------------------------------------------------------------------------------------
# language filters

JA_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")
LATIN_RE = re.compile(r"[A-Za-z\u00c0-\u024f]")


def ja_share(text):
    nonspace = sum(1 for c in text if not c.isspace())
    return len(JA_RE.findall(text)) / nonspace if nonspace else 0.0


def keep(lang, text, min_chars):
    if len(text) < min_chars:
        return False
    if lang == "ja":
        return ja_share(text) >= 0.30
    nonspace = sum(1 for c in text if not c.isspace())
    return nonspace > 0 and len(JA_RE.findall(text)) == 0 and \
        len(LATIN_RE.findall(text)) / nonspace >= 0.5


def truncate(text, max_bytes):
    """Cut at the last paragraph (else line) boundary within max_bytes of UTF-8."""
    if max_bytes <= 0 or len(text.encode()) <= max_bytes:
        return text
    max_chars = len(text.encode()[:max_bytes].decode("utf-8", errors="ignore"))
    cut = text.rfind("\n\n", 0, max_chars)
    if cut < max_chars // 2:
        cut = text.rfind("\n", 0, max_chars)
    if cut < max_chars // 2:
        cut = max_chars
    return text[:cut].rstrip()


# ---------------------------------------------------------------------------------------------


def documents(lang, which, license_clean, min_chars, log):
    seen = set()
    for pkg, tier, clean, *include in PACKAGES[lang]:
        include_re = re.compile(include[0]) if include else None
        if which == "core" and tier != "core":
            continue
        if license_clean and not clean:
            continue
        version = installed_version(pkg)
        if version is None:
            log(f"  {pkg}: not installed, skipped")
            continue
        paths = sorted(p for p in sh(["dpkg", "-L", pkg]).split("\n") if p)
        n = 0
        nbytes = 0
        for path in paths:
            if not os.path.isfile(path) or os.path.islink(path) or SKIP_DIR_RE.search(path):
                continue
            if license_clean and LICENSE_EXCLUDE_RE.search(path):
                continue
            if include_re is not None and not include_re.search(path):
                continue
            if HTML_RE.search(path):
                if SKIP_RE.search(path):
                    continue
                text = html_to_text(decode(read_bytes(path)))
            elif MAN_RE.search(path):
                src = decode(read_bytes(path))
                if is_so_redirect(src):
                    continue
                text = roff_to_text(src)
            else:
                continue
            if not keep(lang, text, min_chars):
                continue
            h = hashlib.sha1(text.encode()).digest()
            if h in seen:
                continue
            seen.add(h)
            n += 1
            nbytes += len(text.encode())
            yield pkg, version, {"text": text, "source": f"{pkg}{path}"}
        log(f"  {pkg} {version}: {n} documents, {nbytes / 1e6:.2f} MB")


def dumps(obj):
    """One JSON line: UTF-8 kept, but characters that some line splitters treat as line
    breaks (U+0085, U+2028, U+2029) and DEL are escaped so that only \\n ends a record."""
    line = json.dumps(obj, ensure_ascii=False)
    for c in ("\u0085", "\u2028", "\u2029", "\u007f"):
        line = line.replace(c, "\\u%04x" % ord(c))
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lang", choices=["ja", "en"], required=True)
    ap.add_argument("--out", required=True, help="output JSONL file ('-' for stdout)")
    ap.add_argument("--max-mb", type=float, default=0,
                    help="stop once this many MB of text are written (0: no limit)")
    ap.add_argument("--packages", choices=["core", "all"], default="core",
                    help="core packages only, or also the large extra ones when installed")
    ap.add_argument("--license-clean", action="store_true",
                    help="only packages whose text is GPL-2/GPL-2+ (for committed fixtures)")
    ap.add_argument("--excerpt-kb", type=float, default=0,
                    help="fixed selection of about this many KB: documents taken round-robin "
                         "across packages in sha1(source) order, then written in source order")
    ap.add_argument("--max-doc-kb", type=float, default=0,
                    help="truncate each document at a paragraph boundary to at most this many KB "
                         "of UTF-8 (0: whole documents)")
    ap.add_argument("--min-chars", type=int, default=200)
    args = ap.parse_args()

    log = lambda s: print(s, file=sys.stderr)
    log(f"lang={args.lang} packages={args.packages}")
    max_bytes = int(args.max_doc_kb * 1000)
    docs = []
    for pkg, version, doc in documents(args.lang, args.packages, args.license_clean,
                                       args.min_chars, log):
        doc["text"] = truncate(doc["text"], max_bytes)
        docs.append((pkg, doc))

    if args.excerpt_kb > 0:
        by_pkg = {}
        for pkg, doc in docs:
            by_pkg.setdefault(pkg, []).append(doc)
        queues = [sorted(v, key=lambda d: hashlib.sha1(d["source"].encode()).hexdigest())
                  for _, v in sorted(by_pkg.items())]
        budget = args.excerpt_kb * 1000
        chosen, total = [], 0
        while total < budget and any(queues):
            for q in queues:
                if q and total < budget:
                    d = q.pop(0)
                    chosen.append(d)
                    total += len(dumps(d).encode()) + 1
        selected = sorted(chosen, key=lambda d: d["source"])
    else:
        selected = [d for _, d in docs]

    limit = args.max_mb * 1e6
    total_text = 0
    n = 0
    f = sys.stdout if args.out == "-" else None
    if f is None:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        f = open(args.out, "w", encoding="utf-8", newline="\n")
    try:
        for d in selected:
            if limit and total_text >= limit:
                break
            f.write(dumps(d) + "\n")
            total_text += len(d["text"].encode())
            n += 1
    finally:
        if f is not sys.stdout:
            f.close()
    log(f"wrote {n} documents, {total_text / 1e6:.2f} MB of text -> {args.out}")


if __name__ == "__main__":
    main()
