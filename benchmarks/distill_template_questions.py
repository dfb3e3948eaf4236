"""Question-shaped general text from WordNet lemmas, for a test of the general stage (docs/distill.md,
*Questions by template*): does the student lack the teacher's reading of interrogatives, or of what
questions are about? Writes the packaged WordNet texts followed by N templated questions, one per line:

    .venv/bin/python benchmarks/distill_template_questions.py --out /tmp/general/wn_q.txt
    embedkd distill ... --general-texts /tmp/general/wn_q.txt
"""

from __future__ import annotations

import argparse

import numpy as np

from embedkd.distill.general import read_general_texts

# fixed before any run; the last takes a second lemma
TEMPLATES = ("What is {}?", "What does {} mean?", "How do I use {}?", "Why is it called {}?", "Can you explain {}?",
             "What is the difference between {} and {}?")


def template_questions(texts: list[str], n: int, seed: int) -> list[str]:
    lemmas = list(dict.fromkeys(t.split(": ", 1)[0] for t in texts if ": " in t))  # glosses read "lemma: gloss"
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(lemmas))[:n]:
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        other = lemmas[rng.integers(len(lemmas))] if template.count("{}") == 2 else None  # drawn only when used
        out.append(template.format(lemmas[i], other))  # format ignores the unused argument
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--questions", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    texts = read_general_texts("wordnet")
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in texts + template_questions(texts, args.questions, args.seed))


if __name__ == "__main__":
    main()
