"""Merged-layer prunes of a 6-layer model (6 -> 3) beside the plain drop of `prune:MODEL:3` (layers 0,3,5).

Each variant replaces a group of consecutive layers by one: "drop" keeps the group's first listed layer,
"avg" averages the group's parameters (a soup across depth), "laco" adds to the first listed layer the
others' differences from it (LaCo, Yang et al. 2024, "layer collapse"). The variants are saved as
sentence-transformers folders, for `embedkd eval retrieval --model` (undistilled) or `embedkd distill --student`.

    .venv/bin/python benchmarks/prune_merge_layers.py --model $M --out /tmp/merge
    for v in /tmp/merge/*/; do embedkd eval retrieval --data /tmp/unseen/perlfaq --model $v --json; done
"""

from __future__ import annotations

import argparse
import copy

VARIANTS = {
    "drop035": ("drop", [[0], [3], [5]]),
    "avg_0_123_45": ("avg", [[0], [1, 2, 3], [4, 5]]),
    "avg_01_23_45": ("avg", [[0, 1], [2, 3], [4, 5]]),
    "avg_0_1234_5": ("avg", [[0], [1, 2, 3, 4], [5]]),
    "avg_0_234_5": ("avg", [[0], [2, 3, 4], [5]]),
    "laco_0_312_54": ("laco", [[0], [3, 1, 2], [5, 4]]),
}


def merged(states: list[dict], how: str, group: list[int]) -> dict:
    first = states[group[0]]
    if how == "avg":
        return {k: sum(states[i][k].float() for i in group) / len(group) for k in first}
    if how == "laco":
        return {k: first[k].float() + sum(states[i][k].float() - first[k].float() for i in group[1:]) for k in first}
    return first


def main() -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a 6-layer sentence-transformers model (all-MiniLM-L6-v2)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    for name in args.variants.split(","):
        how, groups = VARIANTS[name]
        model = SentenceTransformer(args.model, device="cpu")
        encoder = model[0].auto_model.encoder
        states = [layer.state_dict() for layer in encoder.layer]
        layers = []
        for group in groups:
            layer = copy.deepcopy(encoder.layer[group[0]])
            layer.load_state_dict(merged(states, how, group))
            layers.append(layer)
        encoder.layer = torch.nn.ModuleList(layers)
        model[0].auto_model.config.num_hidden_layers = len(layers)
        model.save(f"{args.out}/{name}")
        print(f"{args.out}/{name}")


if __name__ == "__main__":
    main()
