"""Query-drift adapters: a fitted map from a new model's space (v2) into an index's model space (v1).

`indexer` applies adapters with numpy alone; `embedkd.upgrade` fits them (in torch where it trains).
Every adapter kind is one composition of optional parts, so one `apply` serves them all::

    z = x - center                                   (center: d_src, or 0)
    y = z @ linear            (d_src x d_tgt)         or y = z when linear is None (same dimension)
      + (z @ low_a) @ low_b   (d_src x r, r x d_tgt)  low-rank correction, optional
      + relu(z @ w1 + b1) @ w2 + b2                   residual MLP, optional
      + bias                                          (d_tgt, or 0)
    y = y / ||y||                                     when `normalize`

`doc_center` (d_src), optional, is not used on queries: it marks a *score map* (a kind that moves
queries so they score v1's stored vectors as v2 scores its own), whose documents need the inverse
map; see `Adapter.for_documents`.

`blend` (0 < blend < 1), optional: a *blended* adapter mixes the map above with the same query
encoded by the index's own model, q = normalize((1 - blend) v1(query) + blend y/|y|). A blend costs one
v1 encoding per query, so search encodes with both models; `upgrade fit` offers it only where labelled
queries find it clearly better (docs/upgrade.md, "Blending with v1's query").

File format (``.npz``, no pickles): the arrays above by name plus ``meta``, a UTF-8 JSON document
(uint8 array) with ``format``, ``kind``, the source/target fingerprints and dimensions, the fit's
figures and a sha256 of the arrays. The catalog keeps the sha256 of the whole file; `load_adapter`
checks both, and the fingerprints when the caller passes the models' fingerprints.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Conflict, NotFound, UserError
from .hashing import sha256_file as file_sha256

__all__ = [
    "ARRAY_NAMES",
    "FORMAT",
    "Adapter",
    "adapter_path",
    "file_sha256",
    "load_adapter",
    "load_registered",
    "save_adapter",
]

FORMAT = "embedkd-adapter/1"
ARRAY_NAMES = ("center", "linear", "low_a", "low_b", "w1", "b1", "w2", "b2", "bias", "doc_center")
QUERY_ONLY_MLP_KINDS = ("rank",)  # their MLP part is a query-side ranking correction (for_documents)


@dataclass
class Adapter:
    """A v2 -> v1 map. Arrays are float32; parts left as None are skipped by `apply`."""

    kind: str
    source_fingerprint: str
    target_fingerprint: str
    source_dim: int
    target_dim: int
    center: np.ndarray | None = None
    linear: np.ndarray | None = None
    low_a: np.ndarray | None = None
    low_b: np.ndarray | None = None
    w1: np.ndarray | None = None
    b1: np.ndarray | None = None
    w2: np.ndarray | None = None
    b2: np.ndarray | None = None
    bias: np.ndarray | None = None
    doc_center: np.ndarray | None = None
    normalize: bool = True
    blend: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.blend is not None and not 0.0 < float(self.blend) < 1.0:
            raise UserError(f"an adapter's blend weight must lie strictly between 0 and 1, got {self.blend}; refit it")
        for name in ARRAY_NAMES:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.ascontiguousarray(value, dtype=np.float32))
        self._check_shapes()

    def _check_shapes(self) -> None:
        ds, dt = self.source_dim, self.target_dim
        if self.linear is None and ds != dt:
            raise UserError(
                f"adapter kind {self.kind!r} maps {ds}-d to {dt}-d and needs a linear part; "
                "use procrustes, affine or mlp when the dimensions differ"
            )
        expect: dict[str, tuple[int, ...]] = {"center": (ds,), "linear": (ds, dt), "bias": (dt,), "doc_center": (ds,)}
        if self.doc_center is not None and (self.linear is None or self.center is not None or self.bias is not None
                                            or self.low_a is not None or self.w1 is not None):
            raise UserError("a score-map adapter (doc_center) must be purely linear; refit it")
        if self.low_a is not None or self.low_b is not None:
            if self.low_a is None or self.low_b is None:
                raise UserError("a low-rank adapter needs both low_a and low_b")
            r = self.low_a.shape[-1]
            expect.update(low_a=(ds, r), low_b=(r, dt))
        mlp = (self.w1, self.b1, self.w2, self.b2)
        if any(p is not None for p in mlp):
            if any(p is None for p in mlp):
                raise UserError("an MLP adapter needs w1, b1, w2 and b2")
            h = self.w1.shape[-1]
            expect.update(w1=(ds, h), b1=(h,), w2=(h, dt), b2=(dt,))
        for name, shape in expect.items():
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise UserError(
                    f"adapter part {name} has shape {value.shape}, expected {shape} for a "
                    f"{ds}-d -> {dt}-d adapter; refit it"
                )

    @property
    def needs_index_queries(self) -> bool:
        """True for a blend: `apply` then also needs the queries encoded by the index's own model."""
        return self.blend is not None

    def apply(self, vectors: np.ndarray, index_vectors: np.ndarray | None = None) -> np.ndarray:
        """Map (n, source_dim) float32 query vectors to (n, target_dim) float32. `index_vectors`: the same
        queries encoded by the index's model, needed by a blend and ignored otherwise."""
        y = self._map(vectors)
        if self.blend is None:
            return y
        if index_vectors is None:
            raise UserError(
                "this adapter blends the new model's query with the index model's; encode each query with "
                "both models (search by text does this), or refit with `embedkd upgrade fit --no-blend`"
            )
        v1 = np.asarray(index_vectors, dtype=np.float32).reshape(len(y), -1)
        if v1.shape[1] != self.target_dim:
            raise UserError(f"a blend needs {self.target_dim}-d query vectors from the index's model, got "
                            f"{v1.shape[1]}-d; encode the query with the index's model")
        v1 = v1 / np.maximum(np.linalg.norm(v1, axis=1, keepdims=True), 1e-12)
        y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)  # the weight mixes unit vectors
        out = (1.0 - self.blend) * v1 + self.blend * y
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)

    def with_blend(self, blend: float) -> Adapter:
        """The same map blended with the index model's queries at weight `blend` on the map (kind
        "procrustes+v1@0.3": 0.3 of the mapped v2 query, 0.7 of v1's)."""
        base = self.kind.split("+v1@")[0]  # re-blending an adapter replaces its weight
        return replace(self, kind=f"{base}+v1@{blend:g}", blend=float(blend), info=dict(self.info))

    def _map(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.source_dim:
            raise UserError(
                f"adapter expects {self.source_dim}-d query vectors, got shape {tuple(x.shape)}; "
                "encode the query with the adapter's source model"
            )
        z = x - self.center if self.center is not None else x
        y = z @ self.linear if self.linear is not None else z.copy()
        if self.low_a is not None:
            y += (z @ self.low_a) @ self.low_b
        if self.w1 is not None:
            y += np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        if self.bias is not None:
            y += self.bias
        if self.normalize:
            norms = np.linalg.norm(y, axis=1, keepdims=True)
            y /= np.maximum(norms, 1e-12)
        return np.ascontiguousarray(y, dtype=np.float32)

    __call__ = apply

    def for_documents(self) -> Adapter:
        """The map for new v2 *documents* written into the index's space.

        Every kind but the score map sends v2 toward v1's own vectors, so documents take the same
        map as queries. A score map sends a query q to q L with L = M^T, where v1 -> v2 content is
        d2 ~ d1 M + c; a new document d2 then goes to the s with s M = d2 - c (least squares:
        s = (d2 - c) pinv(M)), so mapped queries score it as v2 scores d2, like the stored ones.
        Not normalized: rescaling s would rescale its scores against the stored vectors'.

        A ranking adapter's MLP part moves queries to where they rank v1's vectors as a reindex
        would; it was never fitted on documents, which take its Procrustes part alone.

        A blend has no document map: it exists because v2 through the map is worse than v1, so new
        documents go in with the index's own model, which a blend keeps serving anyway.
        """
        if self.blend is not None:
            raise UserError(
                "the active adapter blends in the index's own model because no plain map was as good; "
                "add new documents with the index's model (`embedkd index add`), or run a backfill"
            )
        if self.kind in QUERY_ONLY_MLP_KINDS:
            return Adapter(kind=f"{self.kind}/documents", source_fingerprint=self.source_fingerprint,
                           target_fingerprint=self.target_fingerprint, source_dim=self.source_dim,
                           target_dim=self.target_dim, center=self.center, linear=self.linear, bias=self.bias,
                           normalize=self.normalize, info=self.info)
        if self.doc_center is None:
            return self
        inverse = np.linalg.pinv(self.linear.astype(np.float64)).T  # pinv(M) = pinv(L)^T: (d_src, d_tgt)
        return Adapter(kind=f"{self.kind}/documents", source_fingerprint=self.source_fingerprint,
                       target_fingerprint=self.target_fingerprint, source_dim=self.source_dim,
                       target_dim=self.target_dim, center=self.doc_center, linear=inverse,
                       normalize=False, info=self.info)

    @property
    def parameters(self) -> int:
        return int(sum(getattr(self, n).size for n in ARRAY_NAMES if getattr(self, n) is not None))

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, n).nbytes for n in ARRAY_NAMES if getattr(self, n) is not None))

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in ARRAY_NAMES if getattr(self, n) is not None}

    def arrays_sha256(self) -> str:
        h = hashlib.sha256()
        for name, value in sorted(self.arrays().items()):
            h.update(name.encode())
            h.update(str(value.shape).encode())
            h.update(np.ascontiguousarray(value, dtype="<f4").tobytes())
        return h.hexdigest()

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "source_fingerprint": self.source_fingerprint,
            "target_fingerprint": self.target_fingerprint,
            "source_dim": self.source_dim,
            "target_dim": self.target_dim,
            "normalize": self.normalize,
            **({"blend": self.blend} if self.blend is not None else {}),
            "arrays_sha256": self.arrays_sha256(),
            "info": self.info,
        }


def save_adapter(adapter: Adapter, path: str | os.PathLike) -> str:
    """Write the adapter to `path` atomically (temp file, fsync, rename); return the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(adapter.meta(), sort_keys=True, default=_json_default).encode("utf-8")
    buf = io.BytesIO()
    arrays = {n: np.ascontiguousarray(v, dtype="<f4") for n, v in adapter.arrays().items()}
    np.savez(buf, meta=np.frombuffer(meta, dtype=np.uint8), **arrays)
    data = buf.getvalue()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def load_adapter(
    path: str | os.PathLike,
    *,
    checksum: str | None = None,
    source_fingerprint: str | None = None,
    target_fingerprint: str | None = None,
) -> Adapter:
    """Read an adapter file. With `checksum` (the catalog's sha256 of the file) a changed file is
    refused; with fingerprints, an adapter fitted for other models is refused (`Conflict`)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"adapter file {path} does not exist; refit it with `embedkd upgrade fit`")
    if checksum is not None and file_sha256(path) != checksum:
        raise Conflict(
            f"adapter file {path} does not match its catalog checksum (changed or corrupt); "
            "refit it with `embedkd upgrade fit`"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["meta"]).decode("utf-8"))
            arrays = {n: np.array(npz[n]) for n in ARRAY_NAMES if n in npz.files}
    except (OSError, ValueError, KeyError) as err:
        raise Conflict(f"adapter file {path} is not a readable adapter ({err}); refit it") from err
    if meta.get("format") != FORMAT:
        raise Conflict(f"adapter file {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    adapter = Adapter(
        kind=meta["kind"],
        source_fingerprint=meta["source_fingerprint"],
        target_fingerprint=meta["target_fingerprint"],
        source_dim=int(meta["source_dim"]),
        target_dim=int(meta["target_dim"]),
        normalize=bool(meta.get("normalize", True)),
        blend=meta.get("blend"),
        info=meta.get("info", {}),
        **arrays,
    )
    if adapter.arrays_sha256() != meta.get("arrays_sha256"):
        raise Conflict(f"adapter file {path} failed its internal checksum (corrupt); refit it")
    if source_fingerprint is not None and adapter.source_fingerprint != source_fingerprint:
        raise Conflict(
            f"adapter {path.name} was fitted for query model {adapter.source_fingerprint[:12]}, "
            f"not {source_fingerprint[:12]}; run `embedkd upgrade fit` for this model"
        )
    if target_fingerprint is not None and adapter.target_fingerprint != target_fingerprint:
        raise Conflict(
            f"adapter {path.name} maps into model {adapter.target_fingerprint[:12]}, but the index "
            f"holds {target_fingerprint[:12]}; run `embedkd upgrade fit` for this index"
        )
    return adapter


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def adapter_path(adapter_dir: str | os.PathLike, file: str) -> Path:
    """Where a catalog row's `file` lives: relative names are under settings.adapter_dir."""
    p = Path(file)
    return p if p.is_absolute() else Path(adapter_dir) / p


def load_registered(adapter_dir: str | os.PathLike, row: Any) -> Adapter:
    """Load the file of an `indexer.models.Adapter` catalog row, checking its checksum and that it maps
    the row's source model into the row's target model (fingerprints)."""
    return load_adapter(
        adapter_path(adapter_dir, row.file),
        checksum=row.checksum,
        source_fingerprint=row.source_model.fingerprint,
        target_fingerprint=row.target_model.fingerprint,
    )
