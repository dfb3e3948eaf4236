"""Make a third unseen BEIR folder, of question answering: FAQ questions against their answers.

The two other stand-ins for "BEIR sets we do not have" (docstrings, Debian package descriptions) both
ask a one-line summary to find the text it summarises. Most BEIR sets ask a *question* (FiQA, NQ,
HotpotQA, BioASQ, CQADupStack's answers), so this set does: query = a question from the Python FAQ
or the Debian FAQ; its one relevant document = the answer under it. Distractors are sections of the
Python documentation (library reference, HOWTOs, tutorial, language reference) cut at their headings,
so the corpus is full of text about the same things the questions ask about.

Both FAQs ship in Debian packages; fetch and unpack them, then build the folder:

    apt-get download python3.11-doc debian-faq
    for f in python3.11-doc_*.deb debian-faq_*.deb; do dpkg -x $f /tmp/faq-src; done
    .venv/bin/python benchmarks/distill_make_faq.py --root /tmp/faq-src --out /tmp/distill-bench/faq

The texts are the Python Software Foundation's documentation (PSF License) and the Debian FAQ's authors'
(GPL-2+); the folder is made locally and not committed.

`--source perl` builds a second question set the same way from the Perl documentation (perl-doc;
Artistic License or GPL-1+): query = a Perl FAQ question (perlfaq1-9), relevant document = its
answer's prose, distractors = passages of the rest of the Perl manual (perlfunc, perlop, perlre, ...;
release notes perl*delta left out):

    apt-get download perl-doc && dpkg -x perl-doc_*.deb /tmp/perl-src
    .venv/bin/python benchmarks/distill_make_faq.py --source perl --root /tmp/perl-src --out /tmp/unseen/perlfaq
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import random
import re
from pathlib import Path

from embedkd.evaluation.beir import write_qrels, write_queries

PY_DOC = "usr/share/doc/python3*/html/_sources"
DEBIAN_FAQ = "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>.:_])\1{2,}\s*$")
ROLE = re.compile(r":[\w:.-]+:`(?:[^`<]*<)?([^`>]+)>?`")  # :func:`name` / :mod:`text <target>` -> name / target
LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`_+")            # `text <url>`_ -> text
DEB_HEADING = re.compile(r"^(\d+)\.(\d+)\.\s+(\S.*)$")
FIELD = re.compile(r"^\s*:[\w-]+:(\s|$)")  # rst field lists (":synopsis: ...", ":tocdepth: 2"), not roles


def _clean(lines: list[str]) -> str:
    kept = [ln for ln in lines if not ln.lstrip().startswith(".. ") and not FIELD.match(ln)]
    text = LINK.sub(r"\1", ROLE.sub(r"\1", " ".join(kept)))
    return " ".join(text.replace("``", "").replace("**", "").replace("\u00a0", " ").split())


def rst_sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for each section of an rst file; a heading is a line underlined by a run of
    one punctuation character at least as long as it."""
    lines = text.splitlines()
    starts = [i for i in range(len(lines) - 1)
              if lines[i].strip() and not UNDERLINE.match(lines[i])
              and UNDERLINE.match(lines[i + 1]) and len(lines[i + 1].strip()) >= len(lines[i].strip())]
    out = []
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        body = [ln for ln in lines[i + 2:end] if not UNDERLINE.match(ln)]
        out.append((lines[i].strip(), _clean(body)))
    return out


def debian_faq(text: str) -> list[tuple[str, str]]:
    """(question, answer) from the Debian FAQ's text edition: a heading "N.M. Question?" at column 0,
    possibly folded over several lines, then its answer up to the next heading or chapter."""
    lines = text.replace("\u00a0", " ").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = DEB_HEADING.match(lines[i])
        if not m:
            i += 1
            continue
        title = [m.group(3)]
        i += 1
        while i < len(lines) and lines[i].strip():
            title.append(lines[i].strip())
            i += 1
        body = []
        while i < len(lines) and not DEB_HEADING.match(lines[i]) and not lines[i].startswith("Chapter "):
            body.append(lines[i])
            i += 1
        out.append((" ".join(" ".join(title).split()), " ".join(" ".join(body).split())))
    return out


PERL_POD = "usr/share/perl/*/pod"
POD_CODE = re.compile(r"[CLBIFESX]<+\s*(.*?)\s*>+")  # C<code>, L<link>, B<<bold>> -> their text


def pod_sections(text: str) -> list[tuple[str, str]]:
    """(=head2 heading, its prose) of a pod file: verbatim (indented) code and directives dropped."""
    parts = re.split(r"^=head2\s+(.*)$", text, flags=re.M)
    out = []
    for i in range(1, len(parts), 2):
        body = re.split(r"^=head", parts[i + 1], flags=re.M)[0]
        body = "\n".join(line for line in body.splitlines() if not line.startswith((" ", "\t", "=")))
        out.append((POD_CODE.sub(r"\1", parts[i].strip()), " ".join(POD_CODE.sub(r"\1", body).split())))
    return out


def perlfaq_pairs(root: Path) -> list[tuple[str, str]]:
    """(question, answer) of the Perl FAQ: its =head2 headings that end in '?'."""
    pairs = []
    for f in sorted(root.glob(f"{PERL_POD}/perlfaq[1-9].pod")):
        pairs += [(q, a) for q, a in pod_sections(f.read_text(encoding="utf-8", errors="replace")) if q.endswith("?")]
    return pairs


def _passages(bodies: list[str], max_words: int) -> list[str]:
    """Long sections become several passages, as BEIR's corpora are; fragments under 30 words are dropped."""
    out = []
    for body in bodies:
        words = body.split()
        out += [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)
                if len(words[i:i + max_words]) >= 30]
    return out


def _sources(root: Path, source: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(question, answer) pairs and distractor section bodies of one source."""
    if source == "perl":
        if not list(root.glob(f"{PERL_POD}/perlfaq1.pod")):
            raise SystemExit(f"{root} lacks the unpacked perl-doc package (see this file's docstring)")
        bodies = [b for f in sorted(root.glob(f"{PERL_POD}/*.pod"))
                  if not re.match(r"perlfaq|perl\d*delta", f.stem)
                  for _, b in pod_sections(f.read_text(encoding="utf-8", errors="replace"))]
        return perlfaq_pairs(root), bodies
    py_root = sorted(root.glob(PY_DOC))
    if not py_root or not (root / DEBIAN_FAQ).exists():
        raise SystemExit(f"{root} lacks the unpacked python3.x-doc and debian-faq packages (see this file's docstring)")
    pairs = []
    for f in sorted(glob.glob(str(py_root[-1] / "faq" / "*.rst.txt"))):
        pairs += [(q, a) for q, a in rst_sections(Path(f).read_text(encoding="utf-8")) if q.endswith("?")]
    with gzip.open(root / DEBIAN_FAQ, "rt", encoding="utf-8") as fh:
        pairs += [(q, a) for q, a in debian_faq(fh.read()) if q.endswith("?")]
    bodies = [body for part in ("library", "howto", "tutorial", "reference", "using", "extending")
              for f in sorted(glob.glob(str(py_root[-1] / part / "*.rst.txt")))
              for _, body in rst_sections(Path(f).read_text(encoding="utf-8"))]
    return pairs, bodies


def build(root: Path, docs: int, seed: int, max_words: int = 250,
          source: str = "python-debian") -> tuple[list[dict], list[dict], list[tuple]]:
    pairs, bodies = _sources(root, source)
    seen, qa = set(), []
    for q, a in pairs:  # one answer per question; answers too short to retrieve ("Yes.") are dropped
        if len(a.split()) >= 20 and q.lower() not in seen:
            seen.add(q.lower())
            qa.append((q, " ".join(a.split()[:max_words])))
    distractors = _passages(bodies, max_words)
    rng = random.Random(seed)
    rng.shuffle(distractors)
    corpus = [{"_id": f"a{n}", "title": "", "text": a} for n, (_, a) in enumerate(qa)]
    corpus += [{"_id": f"d{n}", "title": "", "text": b}
               for n, b in enumerate(distractors[:max(0, docs - len(qa))])]
    queries = [(f"q{n}", q) for n, (q, _) in enumerate(qa)]
    qrels = [(f"q{n}", f"a{n}", 1) for n in range(len(qa))]
    return corpus, queries, qrels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="where the .deb packages were unpacked (dpkg -x)")
    p.add_argument("--source", choices=("python-debian", "perl"), default="python-debian",
                   help="python-debian: the Python and Debian FAQs (the default set); perl: the Perl FAQ")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--docs", type=int, default=5000, help="corpus size: the answers plus sampled distractors")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    corpus, queries, qrels = build(a.root, a.docs, a.seed, source=a.source)
    (a.out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(a.out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in corpus)
    write_queries(a.out / "queries.jsonl", queries)
    write_qrels(a.out / "qrels" / "test.tsv", qrels)
    print(json.dumps({"out": str(a.out), "documents": len(corpus), "queries": len(queries)}))


if __name__ == "__main__":
    main()
