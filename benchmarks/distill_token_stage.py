"""Diagnostic: does the general-text stage teach the pruned student more when it matches the teacher's
every token vector, not only the pooled embedding (hidden-state distillation, as TinyBERT and DistilBERT
do), on the same texts and steps?

The stage's loss becomes `1 - cos(pooled)` + `--token-weight` x the mean over real tokens of
`1 - cos(student token, teacher token)` (last layer, the vectors the mean pooling reads; the prune shares
the teacher's tokenizer, so positions line up). Everything else is `embedkd distill` as the user runs it:
this script patches the stage's loss and the teacher's per-batch encoder, then calls the CLI with the
arguments it is given.

    .venv/bin/python benchmarks/distill_token_stage.py --token-weight 1 -- distill --teacher $M \
        --student prune:$M:3 --data ../shared/data/scifact --out /tmp/tok/T --seed 0 --threads 1 --time-budget 0
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import Tensor

import embedkd.distill.general as general
from embedkd.cli.main import main as cli_main

_teacher_tokens: dict[str, Tensor] = {}  # the last batch's teacher outputs, read by the loss of the same step


def token_teacher_encoder(st_model, max_length: int):
    """The stage's teacher encoder, keeping the batch's token vectors for `token_loss`."""
    def encode(texts: list[str]) -> np.ndarray:
        from sentence_transformers.util import batch_to_device

        saved, st_model.max_seq_length = st_model.max_seq_length, min(st_model.max_seq_length, max_length)
        try:
            with torch.no_grad():
                out = st_model(dict(batch_to_device(st_model.preprocess(texts), st_model.device)))
        finally:
            st_model.max_seq_length = saved
        _teacher_tokens.update(texts="\n".join(texts), tokens=out["token_embeddings"], mask=out["attention_mask"])
        return torch.nn.functional.normalize(out["sentence_embedding"], dim=-1).cpu().numpy()
    return encode


def token_loss_fn(weight: float):
    def loss(model, texts: list[str], target: Tensor) -> Tensor:
        from sentence_transformers.util import batch_to_device

        if _teacher_tokens.get("texts") != "\n".join(texts):
            raise RuntimeError("teacher token vectors belong to another batch")
        out = model(dict(batch_to_device(model.preprocess(texts), target.device)))
        pooled = (1 - torch.nn.functional.cosine_similarity(out["sentence_embedding"], target, dim=-1)).mean()
        mask = out["attention_mask"].bool()
        if not torch.equal(mask, _teacher_tokens["mask"].bool()):
            raise RuntimeError("student and teacher tokenised the batch differently")
        cos = torch.nn.functional.cosine_similarity(out["token_embeddings"], _teacher_tokens["tokens"], dim=-1)
        return pooled + weight * (1 - cos[mask]).mean()
    return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--token-weight", type=float, required=True)
    ap.add_argument("cli", nargs=argparse.REMAINDER, help="-- then the embedkd command line")
    args = ap.parse_args()
    cli = args.cli[1:] if args.cli[:1] == ["--"] else args.cli
    general.teacher_encoder = token_teacher_encoder
    general.embedding_loss = token_loss_fn(args.token_weight)
    sys.argv = ["embedkd", *cli]
    cli_main()


if __name__ == "__main__":
    main()
