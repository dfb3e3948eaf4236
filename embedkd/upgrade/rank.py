"""Ranking adapter: a query map trained to rank v1's stored vectors the way a reindex would.

Every other kind regresses v2 vectors onto v1 vectors of the same text, so it sends a v2 query to
where *v1* would have put it and inherits v1's mistakes; measured on SciFact, more flexible
regressions (affine, MLP) fit the pairs better and retrieve worse. This kind trains for what search
needs instead. For each fitting input x (a v2 query-like piece, document or logged query) the target
is the reindex's ranking, softmax(x . D2 / T) over the sampled documents' v2 vectors D2, and the
adapted query f(x) is scored against the *same documents' stored v1 vectors* D1:

    loss = KL( softmax(x D2^T / T) || softmax(f(x) D1^T / T) ),   T = 0.05 (sharp: the top matters)

f = Procrustes (fixed) + a residual MLP (Drift-Adapter's form, zero-initialised, so training starts at
Procrustes). No labels: the targets are v2's own scores. A logged query needs only its v2 vector.

Why it can work where regression cannot: per test query, the v1-space vector that best imitates the
reindex's ranking of all 5,183 SciFact documents reaches the reindex's own nDCG@10 (docs/upgrade.md,
"ceiling"): v1's stored vectors hold the information, only the query has to move somewhere v1 never
put a query. Early stopping on the validation inputs' KL; the MLP part is for queries only, so new
documents take the Procrustes part (`Adapter.for_documents`).
"""

from __future__ import annotations

import time

import numpy as np

from indexer.adapters import Adapter

from .linear import fit_procrustes
from .mlp import residual_adapter

__all__ = ["fit_rank"]


def fit_rank(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, doc_v2: np.ndarray,
             doc_v1: np.ndarray, *, hidden: int = 512, epochs: int = 8, batch_size: int = 128, lr: float = 1e-3,
             temperature: float = 0.05, patience: int = 2, seed: int = 0, max_seconds: float = 180.0) -> Adapter:
    """x, x_val: v2 inputs (y, y_val their v1 vectors, used for the Procrustes base); doc_v2/doc_v1: the
    same documents embedded by v2 and as stored by v1, the candidates both rankings are taken over."""
    import torch

    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast and does not thrash a busy machine
    try:
        base = fit_procrustes(np.vstack([x, x_val]), np.vstack([y, y_val]))
        return _train(base, x, x_val, doc_v2, doc_v1, hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
                      temperature=temperature, patience=patience, seed=seed, max_seconds=max_seconds)
    finally:
        torch.set_num_threads(threads)


def _train(base: Adapter, x, x_val, doc_v2, doc_v1, *, hidden, epochs, batch_size, lr, temperature, patience,
           seed, max_seconds) -> Adapter:
    import torch
    import torch.nn.functional as F

    mu = torch.from_numpy(base.center)
    lin = torch.from_numpy(base.linear)
    bias = torch.from_numpy(base.bias)
    d2 = F.normalize(torch.from_numpy(np.asarray(doc_v2, np.float32)), dim=-1)
    d1 = F.normalize(torch.from_numpy(np.asarray(doc_v1, np.float32)), dim=-1)
    l1 = torch.nn.Linear(base.source_dim, hidden)
    l2 = torch.nn.Linear(hidden, base.target_dim)
    torch.nn.init.zeros_(l2.weight)
    torch.nn.init.zeros_(l2.bias)
    params = list(l1.parameters()) + list(l2.parameters())
    opt = torch.optim.Adam(params, lr=lr)

    def adapted(v: torch.Tensor) -> torch.Tensor:
        z = v - mu
        return F.normalize(z @ lin + bias + l2(torch.relu(l1(z))), dim=-1)

    def kl(v: torch.Tensor) -> torch.Tensor:
        target = torch.softmax(F.normalize(v, dim=-1) @ d2.T / temperature, dim=-1)
        return F.kl_div(torch.log_softmax(adapted(v) @ d1.T / temperature, dim=-1), target, reduction="batchmean")

    xt = torch.from_numpy(np.asarray(x, np.float32))
    xv = torch.from_numpy(np.asarray(x_val, np.float32))

    def evaluate() -> float:
        with torch.no_grad():
            return float(sum(kl(xv[s : s + 1024]) * len(xv[s : s + 1024]) for s in range(0, len(xv), 1024)) / len(xv))

    gen = torch.Generator().manual_seed(seed)
    start_kl = best = evaluate()
    best_state, bad, done, start = None, 0, 0, time.perf_counter()
    for _epoch in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(xt), batch_size):
            loss = kl(xt[order[s : s + batch_size]])
            opt.zero_grad()
            loss.backward()
            opt.step()
        done += 1
        score = evaluate()
        if score < best - 1e-5:
            best, bad = score, 0
            best_state = [p.detach().clone() for p in params]
        else:
            bad += 1
        if bad >= patience or time.perf_counter() - start > max_seconds:
            break
    info = {"hidden": hidden, "temperature": temperature, "val_kl": best, "val_kl_procrustes": start_kl,
            "epochs": done, "candidates": len(d1)}
    return residual_adapter("rank", base, best_state, info)  # no state: Procrustes never beaten, ship it
