"""The residual MLP adapter: trained in torch, applied by numpy with the same result."""

from __future__ import annotations

import numpy as np

from embedkd.upgrade.linear import fit_affine, mean_cosine
from embedkd.upgrade.mlp import fit_mlp


def test_mlp_learns_a_nonlinear_drift_and_exports_exactly():
    import torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 8)).astype(np.float32)
    y = (x[:, :4] + 0.8 * np.maximum(x[:, 4:], 0) ** 2).astype(np.float32)
    xt, yt, xv, yv = x[:1000], y[:1000], x[1000:], y[1000:]
    mlp = fit_mlp(xt, yt, xv, yv, hidden=32, epochs=30, lr=3e-3, contrastive=0.0)
    aff = fit_affine(xt, yt, xv, yv)
    assert mlp.info["mlp_used"]
    assert mean_cosine(mlp.apply(xv), yv) > mean_cosine(aff.apply(xv), yv) + 0.01
    # numpy apply == the torch computation it was exported from
    z = torch.from_numpy(xv - mlp.center)
    ref = z @ torch.from_numpy(mlp.linear) + torch.from_numpy(mlp.bias)
    ref = ref + torch.relu(z @ torch.from_numpy(mlp.w1) + torch.from_numpy(mlp.b1)) @ torch.from_numpy(mlp.w2)
    ref = torch.nn.functional.normalize(ref + torch.from_numpy(mlp.b2), dim=-1).numpy()
    np.testing.assert_allclose(mlp.apply(xv), ref, atol=1e-5)
