"""Build a general-text file (one text per line) for embedding distillation from Debian packages.

A diagnostic for the 3-layer student's loss on question sets (docs/distill.md, *General text*): does
embedding distillation on a large, diverse set of short texts, none from any evaluation set, give
back what SciFact's few thousand texts cannot? Sources, each from an unpacked Debian package under
`--root` (none of them is a source of the FAQ, Debian-description or docstring evaluation sets):

    apt-get download wordnet-base fortunes manpages manpages-dev perl-doc gnome-user-docs git-doc \
        sqlite3-doc postgresql-doc-15
    for f in *.deb; do dpkg -x $f /tmp/gen-src; done
    .venv/bin/python benchmarks/distill_make_general.py --root /tmp/gen-src --out /tmp/general

- `lexical` (wordnet-base, fortunes): WordNet 3.0 glosses and their example sentences, fortune cookies.
- `technical` (manpages, manpages-dev, perl-doc, gnome-user-docs, git-doc): paragraphs and section
  titles of manual pages, Perl documentation (its FAQ questions included), the GNOME user help (many
  of whose titles are questions) and git's documentation.
- `permissive` (sqlite3-doc, postgresql-doc-15): titles, headings, paragraphs and definition terms of the
  SQLite (public domain) and PostgreSQL 15 (PostgreSQL Licence) manuals, code blocks dropped: technical
  text whose licences would let us ship it (docs/distill.md, *Varied technical text we may ship*).

Writes OUT/lexical.txt, OUT/technical.txt, OUT/permissive.txt and OUT/summary.json (counts per source). Texts are cut at
`--words` words; duplicates dropped; a seeded sample of `--max-per-source` per source.

`OUT/wordnet.txt.gz` is the WordNet part alone (the first 60,000 lines of lexical.txt): the general text
that ships with embedkd (`embedkd/distill/texts/`), WordNet's licence permitting redistribution with its
notice; the other sources' licences (CC BY-SA, GPL, mixed) do not let us ship them.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import html
import json
import os
import re

import numpy as np

POD_CODE = re.compile(r"[A-Z]<+\s*(.*?)\s*>+")
ROFF_ESC = re.compile(r"\\f\(\w\w|\\f[BIRP]|\\f\[[A-Z]*\]|\\\(..|\\[-&|e]|\\s[-+]?\d")
TAG = re.compile(r"<[^>]+>")


def clean(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def wordnet(root: str) -> list[str]:
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(f"{root}/usr/share/wordnet/data.{pos}", encoding="latin-1"):
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header
            lemma = line.split()[4].replace("_", " ")
            parts = [p.strip() for p in line.split(" | ", 1)[1].split(";")]
            out.append(f"{lemma}: {parts[0]}")
            out += [p.strip('"') for p in parts[1:] if p.startswith('"') and len(p.split()) >= 4]
    return out


def fortunes(root: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(f"{root}/usr/share/games/fortunes/*")):
        if "." in os.path.basename(path) or "art" in os.path.basename(path):
            continue  # .dat indexes, .u8 links, ASCII art
        out += [t for t in open(path, encoding="utf-8", errors="replace").read().split("\n%\n")
                if len(t.split()) >= 5]
    return out


def manpages(root: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(f"{root}/usr/share/man/man*/*.gz")):
        para: list[str] = []
        for line in gzip.open(path, "rt", encoding="utf-8", errors="replace"):
            if line.startswith((".", "'")):
                if line.startswith((".SH", ".SS")) and line.split(maxsplit=1)[1:]:
                    out.append(line.split(maxsplit=1)[1].strip('"\n '))
                if para and not line.startswith((".B", ".I", ".R")):
                    out.append(" ".join(para))
                    para = []
                if line.startswith((".B ", ".I ", ".BR ", ".IR ", ".BI ", ".RB ", ".RI ", ".IB ")):
                    para.append(line.split(maxsplit=1)[1:][0].replace('"', "") if line.split(maxsplit=1)[1:] else "")
                continue
            para.append(ROFF_ESC.sub("", line.strip()))
        if para:
            out.append(" ".join(para))
    return out


def perldoc(root: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(f"{root}/usr/share/perl/*/pod/*.pod")):
        for para in open(path, encoding="utf-8", errors="replace").read().split("\n\n"):
            if para.startswith(("=head", "=item")):
                out.append(POD_CODE.sub(r"\1", para.split(maxsplit=1)[1:][0]) if para.split(maxsplit=1)[1:] else "")
            elif not para.startswith((" ", "\t", "=")):
                out.append(POD_CODE.sub(r"\1", para))
    return out


def gnome_help(root: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(f"{root}/usr/share/help/C/*/*.page")):
        text = open(path, encoding="utf-8").read()
        text = re.sub(r"<info>.*?</info>", "", text, flags=re.S)
        for tag in ("title", "p"):
            out += [html.unescape(TAG.sub("", m)) for m in re.findall(rf"<{tag}[^>]*>(.*?)</{tag}>", text, flags=re.S)]
    return out


def git_docs(root: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(f"{root}/usr/share/doc/git-doc/*.txt")):
        for para in open(path, encoding="utf-8", errors="replace").read().split("\n\n"):
            lines = [ln for ln in para.splitlines() if ln.strip() and not re.match(r"^[-=~^+.]{3,}|^\s|^\[|^//", ln)]
            if lines:
                out.append(" ".join(lines))
    return out


def html_texts(paths: list[str]) -> list[str]:
    """Titles, headings, paragraphs and definition terms of HTML pages; code blocks dropped."""
    out = []
    for path in paths:
        text = re.sub(r"<(script|style|pre)\b[^>]*>.*?</\1>", "", open(path, encoding="utf-8", errors="replace").read(),
                      flags=re.S | re.I)
        for tag in ("title", "h1", "h2", "h3", "h4", "p", "dt"):
            out += [html.unescape(TAG.sub("", m)) for m in re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", text, flags=re.S | re.I)]
    return out


def postgres_docs(root: str) -> list[str]:
    return html_texts(sorted(glob.glob(f"{root}/usr/share/doc/postgresql-doc-*/html/*.html")))


def sqlite_docs(root: str) -> list[str]:
    return html_texts(sorted(glob.glob(f"{root}/usr/share/doc/sqlite3/**/*.html", recursive=True)))


SOURCES = {"lexical": {"wordnet": wordnet, "fortunes": fortunes},
           "technical": {"manpages": manpages, "perldoc": perldoc, "gnome_help": gnome_help, "git_docs": git_docs},
           "permissive": {"postgres_docs": postgres_docs, "sqlite_docs": sqlite_docs}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="folder the Debian packages were unpacked into")
    ap.add_argument("--out", required=True)
    ap.add_argument("--words", type=int, default=64)
    ap.add_argument("--min-words", type=int, default=3)
    ap.add_argument("--max-per-source", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    summary: dict[str, dict[str, int]] = {}
    for group, readers in SOURCES.items():
        texts: list[str] = []
        for name, read in readers.items():
            found = list(dict.fromkeys(t for t in (clean(x, args.words) for x in read(args.root))
                                       if len(t.split()) >= args.min_words))
            keep = sorted(rng.permutation(len(found))[:args.max_per_source])
            texts += [found[i] for i in keep]
            summary.setdefault(group, {})[name] = len(keep)
            if name == "wordnet":
                data = "".join(found[i] + "\n" for i in keep).encode("utf-8")
                with gzip.GzipFile(f"{args.out}/wordnet.txt.gz", "wb", compresslevel=9, mtime=0) as f:
                    f.write(data)  # mtime 0: the same bytes on every rebuild
        with open(f"{args.out}/{group}.txt", "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in texts)
    json.dump(summary, open(f"{args.out}/summary.json", "w"), indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
