"""A model version's identity: sha256 over its parameter and buffer tensors, in name order."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["fingerprint_module"]


def fingerprint_module(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (num_batches_tracked) too
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
