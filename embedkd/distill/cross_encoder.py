"""Fine-tune a cross-encoder teacher on BEIR train qrels with mined negatives, and measure it by reranking.

No pretrained cross-encoder can be installed here, so `embedkd teacher train` makes one from a base
model (e.g. all-MiniLM-L6-v2's BERT weights with a fresh one-logit head); users online simply name a
published cross-encoder as `--teacher`.
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np

from embedkd.out_dir import output_folder
from indexer.errors import UserError

from ..progress import StepProgress
from .data import BeirData, load_beir, split_dev
from .retrieval import ir_metrics
from .teachers import BiEncoderTeacher

__all__ = ["rerank_metrics", "train_cross_encoder"]

log = logging.getLogger(__name__)


def rerank_metrics(cross_encoder, data: BeirData, qrels: dict[str, dict[str, int]], first_stage: BiEncoderTeacher,
                   depth: int = 20, batch_size: int = 32) -> dict[str, float]:
    """nDCG@10 etc. after the cross-encoder reranks the first stage's top-`depth` per query."""
    import torch

    from embedkd.evaluation.retrieval import exact_run

    doc_vecs = first_stage.encode(list(data.corpus.values()))
    qids = [q for q in qrels if q in data.queries]
    qvecs = first_stage.encode_queries([data.queries[q] for q in qids])
    # The first stage as every other figure is computed (a query's own id left out, as in BEIR).
    first = exact_run(list(data.corpus), doc_vecs, qids, qvecs, depth, qrels=qrels)
    pairs = [(q, d) for q in qids for d in first[q]]
    with torch.inference_mode():
        scores = cross_encoder.predict([(data.queries[q], data.corpus[d]) for q, d in pairs], batch_size=batch_size,
                                       convert_to_numpy=True, show_progress_bar=False,
                                       activation_fn=torch.nn.Identity())
    run: dict[str, dict[str, float]] = {}
    for (q, d), score in zip(pairs, np.asarray(scores).ravel()):
        run.setdefault(q, {})[d] = float(score)
    out = ir_metrics(run, qrels)
    out["rerank_depth"] = depth
    return out


def train_cross_encoder(base: str, data: str, out: str, *, epochs: float = 1.0, negatives: int = 3,
                        mine_k: int = 30, batch_size: int = 16, lr: float = 3e-5, max_length: int = 256,
                        eval_split: str | None = "test", rerank_depth: int = 20, time_budget_s: float | None = None,
                        device: str | None = None, settings=None, progress: bool = True) -> dict:
    """Fine-tune a one-logit CrossEncoder from `base` on (query, positive, mined negatives); save to `out`."""
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from embedkd.text_encoder import default_device, load_sentence_transformer
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    from .pipeline import _VectorTable, mining_candidates

    t0 = time.perf_counter()
    device = device or default_device()
    settings = settings or load_settings()
    out_dir = output_folder(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"output folder {out} exists and is not empty; choose a new --out")
    beir = load_beir(data)
    train_qrels, dev_qrels = split_dev(beir.require("train", purpose="training a cross-encoder"), 0.1, 0)
    miner = BiEncoderTeacher(load_sentence_transformer(base, device), base)
    miner.use_cache(settings.cache_dir / "distill")
    doc_texts = list(beir.corpus.values())
    table = _VectorTable(doc_texts, miner.encode(doc_texts))
    qids = sorted(q for q in train_qrels if q in beir.queries)
    qtexts = [beir.queries[q] for q in qids]
    qtable = _VectorTable(qtexts, miner.encode_queries(qtexts))
    catalog = open_catalog(settings)
    try:
        candidates = mining_candidates(catalog, beir, miner, qids, mine_k, table, qtable)
    finally:
        catalog.close()
    rng = np.random.default_rng(0)
    queries, docs, labels = [], [], []
    for q in qids:
        positives = {d for d, g in train_qrels[q].items() if g > 0}
        pool = [d for d in candidates[q] if d not in positives]
        for pos in sorted(positives):
            picked = [pool[i] for i in rng.choice(len(pool), size=min(negatives, len(pool)), replace=False)]
            for d, label in [(pos, 1.0)] + [(n, 0.0) for n in picked]:
                queries.append(beir.queries[q])
                docs.append(beir.corpus[d])
                labels.append(label)
    if not queries:
        raise UserError("the train qrels give no (query, positive) pair found in the corpus")

    try:
        model = CrossEncoder(base, num_labels=1, max_length=max_length, device=device)
    except Exception as err:  # noqa: BLE001 - any load/score failure becomes one line for the user
        raise UserError(f"cannot make a cross-encoder from {base!r}: {str(err).splitlines()[0][:200]}") from None
    loss_fn = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(negatives)))
    n = len(queries)
    steps = max(1, math.ceil(epochs * n / batch_size))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm + 1))))
    per_epoch = math.ceil(n / batch_size)
    orders = [rng.permutation(n) for _ in range(math.ceil(steps / per_epoch))]
    model.train()
    bar = StepProgress(steps, "cross-encoder", enabled=progress)
    done, running, stopped = 0, None, "done"
    t_train = time.perf_counter()
    for step in range(steps):
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            stopped = "time budget"
            break
        order = orders[step // per_epoch]
        idx = order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
        loss = loss_fn([[queries[i] for i in idx], [docs[i] for i in idx]],
                       torch.tensor([labels[i] for i in idx], device=device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        done = step + 1
        bar.update({"loss": running})
    bar.close()
    model.eval()
    model.save(str(out_dir))
    result = {"cross_encoder": str(out_dir), "base": base, "data": str(beir.path), "pairs": n, "steps": done,
              "planned_steps": steps, "stopped": stopped, "train_seconds": round(time.perf_counter() - t_train, 1),
              "loss": running}
    metrics = {}
    splits = {"dev": dev_qrels}
    if eval_split:
        splits[eval_split] = beir.require(eval_split)
    for split, qrels in splits.items():
        metrics[split] = rerank_metrics(model, beir, qrels, miner, depth=rerank_depth)
        qids_s = [q for q in qrels if q in beir.queries]
        from .retrieval import evaluate_vectors

        metrics[f"{split} first stage"] = evaluate_vectors(
            qids_s, miner.encode_queries([beir.queries[q] for q in qids_s]), list(beir.corpus), table(doc_texts),
            qrels)
    result["metrics"] = metrics
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "teacher_train.json").write_text(json.dumps(result, indent=2))
    return result
