"""ReID embedding model: timm backbone + pooling (GeM or average) + BN-neck. It returns only the
embedding; the ID classifier and attribute heads live in `reid.heads.TrainingHeads`.

A model folder holds `reid_model.json` (architecture, input size, normalization) and `model.pt`
(state dict); `save_model` / `load_model` read and write it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from indexer.errors import UserError

__all__ = ["ModelSpec", "GeM", "ReIDModel", "build_model", "save_model", "load_model", "SPEC_FILE", "WEIGHTS_FILE"]

SPEC_FILE = "reid_model.json"
WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a model and feed it images."""

    backbone: str = "mobilenetv2_100"
    pool: str = "gem"  # "gem" or "avg"
    height: int = 128
    width: int = 64
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class GeM(nn.Module):
    """Generalized-mean pooling, p learned (Radenovic et al. 2018): p=1 is average, p->inf is max."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().clamp(min=self.eps)  # float32 even under AMP: x**p overflows in fp16
        return F.adaptive_avg_pool2d(x.pow(self.p), 1).pow(1.0 / self.p).flatten(1)


class ReIDModel(nn.Module):
    """`forward(images) -> (n, dim)` embedding (BN-neck output). `pooled(images)` gives the pre-neck
    feature, which the metric loss uses during training (BoT's BN-neck recipe)."""

    def __init__(self, spec: ModelSpec, backbone: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        if spec.pool not in ("gem", "avg"):
            raise UserError(f"unknown pooling {spec.pool!r}; use gem or avg")
        self.pool: nn.Module = GeM() if spec.pool == "gem" else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.dim = int(backbone.num_features)
        self.neck = nn.BatchNorm1d(self.dim)
        self.neck.bias.requires_grad_(False)
        nn.init.constant_(self.neck.weight, 1.0)
        nn.init.constant_(self.neck.bias, 0.0)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone.forward_features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.pooled(images))


def build_model(spec: ModelSpec, pretrained: bool = True) -> tuple[ReIDModel, str]:
    """Create the model; returns it and where its backbone weights came from."""
    import timm

    try:
        backbone = timm.create_model(spec.backbone, pretrained=False, num_classes=0, global_pool="")
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise UserError(f"{err}; pass a timm model name such as mobilenetv2_100 or tf_efficientnet_lite0") from None
    source = "random"
    if pretrained:
        from .weights import load_pretrained

        source = load_pretrained(backbone, spec.backbone)
    return ReIDModel(spec, backbone), source


def save_model(model: ReIDModel, folder: str | Path, info: dict | None = None) -> Path:
    """Write the model folder (spec + state dict; `info` goes into the json too). Atomic per file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(folder / WEIGHTS_FILE)
    meta = {"spec": asdict(model.spec), "dim": model.dim, "info": info or {}}
    tmp_json = folder / (SPEC_FILE + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2))
    tmp_json.replace(folder / SPEC_FILE)
    return folder


def load_model(folder: str | Path) -> tuple[ReIDModel, dict]:
    """Read a model folder written by `save_model` (eval mode). Returns the model and its json."""
    folder = Path(folder)
    spec_path, weights = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not spec_path.is_file() or not weights.is_file():
        raise UserError(
            f"{folder} is not a ReID model folder (needs {SPEC_FILE} and {WEIGHTS_FILE}); "
            "pass the --out folder of `embedkd reid train`"
        )
    meta = json.loads(spec_path.read_text())
    raw = meta["spec"]
    spec = ModelSpec(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})
    model, _ = build_model(spec, pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return model, meta
