"""Diagnostic: does averaging a distilled student's weights with its general-text stage's keep the stage's
reach on unseen questions (WiSE-FT, Wortsman et al. 2022, applied to the two stages of `embedkd distill`)?

`embedkd distill` deletes its checkpoints when it finishes, so copy `OUT/checkpoint/general.pt` while it
runs (it is written once, atomically, when the stage ends):

    embedkd distill --teacher $M --student prune:$M:3 --data SCIFACT --out /tmp/wise/F --seed 0 --threads 2 &
    while [ ! -f /tmp/wise/F/checkpoint/general.pt ]; do sleep 3; done; cp /tmp/wise/F/checkpoint/general.pt /tmp/wise/
    wait
    .venv/bin/python benchmarks/distill_wise.py --final /tmp/wise/F --stage /tmp/wise/general.pt \
        --alpha 0.5 --out /tmp/wise/W50
    embedkd eval retrieval --data /tmp/unseen/faq --model /tmp/wise/W50

The saved model is (1 - alpha) x the final weights + alpha x the stage's, in sentence-transformers format.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from embedkd.text_encoder import load_sentence_transformer


def interpolate(final: dict[str, torch.Tensor], stage: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * final + alpha * stage for floating tensors; others (position ids) kept from `final`."""
    if final.keys() != stage.keys():
        raise SystemExit(f"the stage checkpoint holds other parameters: {sorted(final.keys() ^ stage.keys())[:5]}")
    return {k: torch.lerp(v, stage[k].to(v.dtype), alpha) if v.is_floating_point() else v for k, v in final.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--final", required=True, help="the distilled student (embedkd distill --out)")
    ap.add_argument("--stage", required=True, help="a copy of that run's checkpoint/general.pt")
    ap.add_argument("--alpha", type=float, required=True, help="weight of the stage's parameters, 0..1")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not 0 <= args.alpha <= 1:
        raise SystemExit(f"--alpha must be in [0, 1], got {args.alpha}")
    model = load_sentence_transformer(args.final, device="cpu")
    stage = torch.load(args.stage, map_location="cpu", weights_only=False)["model"]
    model.load_state_dict(interpolate(model.state_dict(), stage, args.alpha))
    model.save(args.out)
    print(json.dumps({"final": args.final, "stage": args.stage, "alpha": args.alpha, "out": str(Path(args.out))}))


if __name__ == "__main__":
    main()
