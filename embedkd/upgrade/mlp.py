"""Residual MLP adapter (Drift-Adapter): y = affine(x) + relu(z W1 + b1) W2 + b2, z = x - mean(x).

The affine part is the closed-form ridge fit (`linear.fit_affine`), kept fixed; the MLP learns what is
left, starting from zero output (W2 = 0) so training can only move away from the affine map where the
validation pairs say it helps. Loss: 1 - cosine to the v1 target plus an in-batch contrastive term (the
adapted query should be nearer its own v1 target than to the others in the batch), which keeps the
neighbourhood order that search depends on. Early stopping on validation cosine. Trained in torch on
CPU in seconds; exported as float32 numpy arrays for `indexer.adapters.Adapter`.
"""

from __future__ import annotations

import time

import numpy as np

from indexer.adapters import Adapter

from .linear import fit_affine, mean_cosine

__all__ = ["fit_mlp", "residual_adapter"]


def fit_mlp(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, hidden: int = 256,
            epochs: int = 40, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
            contrastive: float = 0.1, temperature: float = 0.05, patience: int = 4, seed: int = 0,
            max_seconds: float = 120.0) -> Adapter:
    import torch

    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast and does not thrash a busy machine
    try:
        return _train(x, y, x_val, y_val, hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, contrastive=contrastive, temperature=temperature,
                      patience=patience, seed=seed, max_seconds=max_seconds)
    finally:
        torch.set_num_threads(threads)


def _train(x, y, x_val, y_val, *, hidden, epochs, batch_size, lr, weight_decay, contrastive, temperature,
           patience, seed, max_seconds) -> Adapter:
    import torch

    base = fit_affine(x, y, x_val, y_val, refit=False)
    mu = base.center
    lin = torch.from_numpy(base.linear)
    bias = torch.from_numpy(base.bias)
    ds, dt = base.source_dim, base.target_dim

    l1 = torch.nn.Linear(ds, hidden)
    l2 = torch.nn.Linear(hidden, dt)
    torch.nn.init.zeros_(l2.weight)
    torch.nn.init.zeros_(l2.bias)
    drop = torch.nn.Dropout(0.1)
    params = list(l1.parameters()) + list(l2.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def forward(z: torch.Tensor, train: bool) -> torch.Tensor:
        h = torch.relu(l1(z))
        if train:
            h = drop(h)
        return z @ lin + bias + l2(h)

    zt = torch.from_numpy(np.asarray(x, np.float32) - mu)
    yt = torch.nn.functional.normalize(torch.from_numpy(np.asarray(y, np.float32)), dim=-1)
    zv = torch.from_numpy(np.asarray(x_val, np.float32) - mu)
    gen = torch.Generator().manual_seed(seed)

    def evaluate() -> float:
        with torch.no_grad():
            return mean_cosine(forward(zv, False).numpy(), np.asarray(y_val, np.float32))

    best_score, best_state, bad, start = evaluate(), None, 0, time.perf_counter()
    base_score = best_score
    for _epoch in range(epochs):
        order = torch.randperm(len(zt), generator=gen)
        for s in range(0, len(zt), batch_size):
            idx = order[s : s + batch_size]
            pred = torch.nn.functional.normalize(forward(zt[idx], True), dim=-1)
            target = yt[idx]
            loss = (1 - (pred * target).sum(-1)).mean()
            if contrastive > 0 and len(idx) > 1:
                logits = pred @ target.T / temperature
                loss = loss + contrastive * torch.nn.functional.cross_entropy(logits, torch.arange(len(idx)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        score = evaluate()
        if score > best_score + 1e-5:
            best_score, bad = score, 0
            best_state = [p.detach().clone() for p in params]
        else:
            bad += 1
        if bad >= patience or time.perf_counter() - start > max_seconds:
            break
    info = {"hidden": hidden, "val_cosine": best_score, "val_cosine_affine": base_score,
            "lambda": base.info.get("lambda")}
    return residual_adapter("mlp", base, best_state, info)


def residual_adapter(kind: str, base: Adapter, state: list | None, info: dict) -> Adapter:
    """`base`'s linear map plus the trained residual MLP `state` (torch [W1, b1, W2, b2] of two
    `nn.Linear`s), or `base`'s map alone when training never beat it (`state` None)."""
    parts = {}
    if state is not None:
        w1, b1, w2, b2 = (t.numpy() for t in state)
        parts = {"w1": w1.T, "b1": b1, "w2": w2.T, "b2": b2}
    return Adapter(kind=kind, source_fingerprint="", target_fingerprint="", source_dim=base.source_dim,
                   target_dim=base.target_dim, center=base.center, linear=base.linear, bias=base.bias, **parts,
                   info={**info, "mlp_used": state is not None})
