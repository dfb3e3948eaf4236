"""Encoding spread over a Ray cluster: an `Encoder` whose batches run on Ray actors.

Past one machine the cost of a build is the encoder, not FAISS. Each worker (a Ray actor with its own
CPUs or GPU) holds one copy of the model and turns batches of items into vectors; the driver keeps
everything that needs a single writer (the job's checkpoints, the FAISS file, the catalog), so a
distributed build resumes, fails and switches exactly like a local one. Encoding is a pure function of
its items, so Ray may rerun a batch on a restarted worker without duplicating anything.

`indexer` never imports a model: the caller passes `factory`, a picklable zero-argument callable that
builds the `Encoder` on the worker (`embedkd.text_encoder.worker_text_encoder` for text). Ray is an
optional dependency (`pip install 'embedkd[ray]'`), imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from .encoder import Encoder, ModelRecord
from .errors import UserError

__all__ = ["RayEncoder", "check_same_model", "check_resources"]


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("encoding on Ray needs the ray package: pip install 'embedkd[ray]'") from None
    return ray


class _Worker:
    """One copy of the model on one Ray worker."""

    def __init__(self, factory: Callable[[], Encoder]) -> None:
        self.encoder, self.error = None, None
        try:
            self.encoder = factory()
        except Exception as err:  # noqa: BLE001 - raised from record(): Ray keeps a task's exception, not a dead actor's
            self.error = err

    def record(self) -> ModelRecord:
        if self.error is not None:
            raise self.error
        return self.encoder.record

    def encode(self, items: list[Any]) -> np.ndarray:
        return np.ascontiguousarray(self.encoder(items), dtype=np.float32)


def check_same_model(records: Sequence[ModelRecord]) -> ModelRecord:
    """Every worker must have loaded the same weights: nodes with different copies of a model would
    write vectors of two spaces into one index."""
    fingerprints = sorted({r.fingerprint for r in records})
    if len(fingerprints) > 1:
        raise UserError(
            f"the Ray workers loaded {len(fingerprints)} different models for {records[0].name!r} (fingerprints "
            f"{', '.join(f[:12] for f in fingerprints)}); put the same model files on every node"
        )
    return records[0]


def check_resources(available: dict[str, float], workers: int, cpus: float, gpus: float) -> None:
    """Refuse a request the cluster cannot place (Ray would wait for it forever)."""
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        need, have = workers * each, float(available.get(name, 0.0))
        if need > have + 1e-9:
            flag = "--worker-cpus" if name == "CPU" else "--worker-gpus"
            raise UserError(f"{workers} workers x {each:g} {name}s need {need:g} {name}s but the Ray cluster has "
                            f"{have:g}; lower --workers or {flag}")


def _last_line(err: BaseException) -> str:
    """The error itself: Ray puts the worker's traceback first."""
    text = str(err).strip()
    return text.splitlines()[-1][:300] if text else type(err).__name__


@contextmanager
def _worker_errors(ray) -> Iterator[None]:
    """A worker's failure as one line; a worker's own UserError (a bad model path, say) as it was."""
    try:
        yield
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, UserError):
            raise type(cause)(str(cause)) from None
        what = f"{type(cause).__name__}: {_last_line(cause)}" if cause is not None else _last_line(err)
        raise UserError(f"a Ray worker failed: {what}") from None
    except ray.exceptions.RayActorError as err:
        raise UserError(f"a Ray worker died and could not be restarted: {_last_line(err)}") from None


class RayEncoder:
    """An `Encoder` whose calls are cut into batches of `batch_items` and run on `workers` Ray actors,
    results in input order. `address`: "local" starts Ray on this machine for the job, "auto" joins
    the running cluster (RAY_ADDRESS), or a cluster address; where this process has already called
    `ray.init`, that Ray is used and left running. Close it (or use `with`) when done."""

    def __init__(self, factory: Callable[[], Encoder], workers: int = 2, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, batch_items: int = 256, address: str = "local") -> None:
        if workers < 1 or batch_items < 1 or cpus_per_worker <= 0 or gpus_per_worker < 0:
            raise UserError("--workers and --worker-cpus must be positive and --worker-gpus at least 0")
        ray = _ray()
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            self._init(address, workers * cpus_per_worker)
        self._actors: list = []
        try:
            check_resources(ray.cluster_resources(), workers, cpus_per_worker, gpus_per_worker)
            # Restarted workers rerun lost batches: encoding has no side effects.
            actor = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=2,
                               max_task_retries=2)(_Worker)
            self._actors = [actor.remote(factory) for _ in range(workers)]
            self.record = check_same_model(self._get([a.record.remote() for a in self._actors]))
        except BaseException:
            self.close()
            raise
        self.batch_items = batch_items
        # The build asks for this many items per call, so every worker has batches queued.
        self.preferred_call_size = 2 * workers * batch_items

    def _init(self, address: str, cpus: float) -> None:
        try:
            if address == "local":
                self._ray.init(address="local", num_cpus=max(1, int(np.ceil(cpus))), include_dashboard=False,
                               logging_level=logging.WARNING, log_to_driver=False)
            else:
                self._ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"cannot start or join Ray at {address!r} ({_last_line(err)}); give 'local', "
                            "'auto' (the cluster RAY_ADDRESS names) or the head node's address") from None

    def _get(self, refs: list) -> list:
        with _worker_errors(self._ray):
            return self._ray.get(refs)

    def __call__(self, items: Sequence[Any]) -> np.ndarray:
        items = list(items)
        if not items:
            return np.zeros((0, self.record.dimension), np.float32)
        pool = self._ray.util.ActorPool(self._actors)  # each batch to the next idle worker, results in order
        parts = [items[i : i + self.batch_items] for i in range(0, len(items), self.batch_items)]
        with _worker_errors(self._ray):
            return np.concatenate(list(pool.map(lambda a, part: a.encode.remote(part), parts)))

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False

    def __enter__(self) -> RayEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
