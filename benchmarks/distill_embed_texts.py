"""Diagnostic: how far does embedding distillation alone, on a given set of texts, lift a student?

Trains `--student` (a model or prune spec) to match the teacher's normalised embeddings (1 - cosine)
on the texts of `--texts` (BEIR corpus/queries .jsonl, or .txt with one text per line), then saves it
for `embedkd eval retrieval`. No labels, no negatives: it measures what the student *can* learn of
the teacher's space from those texts, e.g. a test set's own questions as an upper bound, or another
FAQ as out-of-set question data (`--perlfaq ROOT` reads the Perl FAQ of an unpacked perl-doc package).
Both `--epochs` and `--minutes` run `embedkd distill`'s general-text stage (`general_stage`); the
`--epochs` figures in docs/distill.md were made by an earlier loop of this script (10% warm-up, targets
encoded up front), so a rerun differs from them in the last digits.

    apt-get download perl-doc && dpkg -x perl-doc_*.deb /tmp/perl-src
    .venv/bin/python benchmarks/distill_embed_texts.py --teacher $M --student prune:$M:3 \
        --perlfaq /tmp/perl-src --epochs 10 --out /tmp/embed-perl
    embedkd eval retrieval --data /tmp/unseen/faq --model /tmp/embed-perl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from distill_make_faq import perlfaq_pairs  # this folder is on sys.path when a script in it runs

from embedkd.distill.general import GeneralTexts, general_stage, read_general_texts
from embedkd.distill.prune import load_student
from embedkd.text_encoder import load_sentence_transformer


def perlfaq_texts(root: str, words: int = 250) -> list[str]:
    """Questions of the Perl FAQ and their answers' prose (first `words` words; answers under 20 dropped)."""
    return [t for q, a in perlfaq_pairs(Path(root)) if len(a.split()) >= 20 for t in (q, " ".join(a.split()[:words]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--texts", nargs="*", default=[])
    ap.add_argument("--perlfaq", default=None, help="root of an unpacked perl-doc package")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="train for this long instead of --epochs (the learning rate decayed over the time)")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    texts = [t for path in args.texts for t in read_general_texts(path)]
    if args.perlfaq:
        texts += perlfaq_texts(args.perlfaq)
    t0 = time.perf_counter()
    teacher = load_sentence_transformer(args.teacher, "cpu")
    teacher.max_seq_length = args.max_length  # targets from the text the student reads
    model, _ = load_student(args.student, "cpu")
    general = GeneralTexts(texts, lambda batch: teacher.encode(batch, batch_size=len(batch), normalize_embeddings=True),
                           batch_size=args.batch_size, seed=args.seed)
    # --minutes: up to 20 passes, stopped (and the learning rate decayed) by the clock
    passes = 20 if args.minutes > 0 else args.epochs
    steps = max(1, round(passes * len(texts) / args.batch_size))
    result = general_stage(model, general, steps=steps, lr=args.lr, max_length=args.max_length,
                           max_seconds=60 * args.minutes if args.minutes > 0 else None)
    model.save(args.out)
    print(json.dumps({"out": args.out, "texts": len(texts), "seen": result["texts_seen"], "steps": result["steps"],
                      "final_loss": result["final_loss"], "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
