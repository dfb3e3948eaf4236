"""General text: embedding distillation on unlabelled texts, as a stage before task distillation and as a
term beside it.

A pruned student distilled on one task's data keeps the teacher's space only where that data reaches
(docs/distill.md, *General text*): matching the teacher's vectors of varied texts gives back what the
task data cannot. The loss is `1 - cosine` to the teacher's normalised embedding of the same text, read
at the same token limit; the teacher's targets are computed per batch, so a large file is never encoded
whole.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from indexer.errors import UserError
from indexer.textfile import text_lines

from ..schedule import run_fraction
from .cache import texts_key
from .teachers import BiEncoderTeacher, Teacher

__all__ = ["PACKAGED", "GeneralTexts", "applies_by_default", "embedding_loss", "general_stage", "read_general_texts",
           "resumable_stage", "teacher_stream"]

log = logging.getLogger(__name__)

MIN_TEXTS = 64
# Texts that ship with embedkd, by name (texts/PROVENANCE.md): WordNet 3.0's glosses and example sentences.
PACKAGED = {"wordnet": Path(__file__).parent / "texts" / "wordnet.txt.gz"}


def read_general_texts(path: str | Path) -> list[str]:
    """Texts of a .txt file (one per line) or a .jsonl file ("title" + "text", BEIR corpus rows), optionally
    .gz, or of a packaged set by name (`PACKAGED`)."""
    path = PACKAGED.get(str(path), Path(path).expanduser())
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise UserError(f"--general-texts {path}: {what}; give a text file with one text per line")
    jsonl = path.name.removesuffix(".gz").endswith(".jsonl")
    texts: list[str] = []
    try:
        for n, line in text_lines(path):
            line = line.strip()
            if line and jsonl:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"--general-texts {path}, line {n}: not JSON ({e.msg}); "
                                    "give one JSON object per line or a .txt file") from None
                line = f"{row.get('title', '')} {row.get('text', '')}".strip()
            if line:
                texts.append(line)
    except (OSError, EOFError) as e:  # a truncated or non-gzip .gz
        raise UserError(f"--general-texts {path} cannot be read: {e}") from None
    if len(texts) < MIN_TEXTS:
        raise UserError(f"--general-texts {path} holds {len(texts)} texts; give at least {MIN_TEXTS} "
                        "(thousands help: one per line)")
    return texts


class GeneralTexts:
    """Batches of texts in a seeded order (passes reshuffled) with the teacher's targets for each."""

    def __init__(self, texts: list[str], teacher_encode: Callable[[list[str]], np.ndarray],
                 batch_size: int = 32, seed: int = 0) -> None:
        self.texts, self.encode, self.batch_size = texts, teacher_encode, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = np.empty(0, dtype=np.int64)
        self.seen = 0

    @property
    def fingerprint(self) -> str:
        return texts_key(self.texts)[:16]

    def next(self, device) -> tuple[list[str], Tensor]:
        idx = self._take()
        batch = [self.texts[i] for i in idx]
        self.seen += len(batch)
        target = torch.from_numpy(np.asarray(self.encode(batch), dtype=np.float32)).to(device)
        return batch, target

    def skip(self, batches: int) -> None:
        """Move past `batches` batches without encoding them: a resumed run continues the stream where the
        interrupted one stopped instead of seeing its first batches again."""
        for _ in range(batches):
            self._take()

    def _take(self) -> np.ndarray:
        while len(self.order) < self.batch_size:
            self.order = np.concatenate([self.order, self.rng.permutation(len(self.texts))])
        idx, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return idx


def embedding_loss(model, texts: list[str], target: Tensor) -> Tensor:
    """Mean `1 - cosine` between the student's embeddings of `texts` and the teacher's `target` rows."""
    from sentence_transformers.util import batch_to_device

    emb = model(dict(batch_to_device(model.preprocess(texts), target.device)))["sentence_embedding"]
    return (1 - torch.nn.functional.cosine_similarity(emb, target, dim=-1)).mean()


def general_stage(model, general: GeneralTexts, steps: int, lr: float = 1e-4, max_length: int = 64,
                  max_seconds: float | None = None, progress: bool = True) -> dict:
    """Train `model` in place on `general` for `steps` steps (fewer if `max_seconds` runs out first): AdamW,
    5% warm-up, then linear decay to 0 at the end of the steps or the time; word embeddings frozen (the
    student shares the teacher's)."""
    from ..progress import StepProgress

    for name, p in model.named_parameters():
        if "word_embeddings" in name:
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    saved_len, model.max_seq_length = model.max_seq_length, min(model.max_seq_length, max_length)
    model.train()
    bar = StepProgress(steps, "general text", enabled=progress)
    start, step, running, stopped = time.perf_counter(), 0, None, "done"
    try:
        while step < steps:
            frac = run_fraction(step, steps, time.perf_counter() - start, max_seconds)
            if frac >= 1:
                stopped = "time budget"
                break
            batch, target = general.next(model.device)
            for group in opt.param_groups:
                group["lr"] = lr * min(frac / 0.05, (1 - frac) / 0.95, 1.0) + 1e-7
            loss = embedding_loss(model, batch, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update({"general": running})
    finally:
        bar.close()
        model.max_seq_length = saved_len
        model.eval()
    log.info("general text: %d of %d steps, %d texts seen, loss %.4f", step, steps, general.seen,
             running or float("nan"))
    return {"steps": step, "planned_steps": steps, "stopped": stopped, "texts_seen": general.seen,
            "seconds": round(time.perf_counter() - start, 1),
            "final_loss": None if running is None else round(running, 5)}


def applies_by_default(teacher: Teacher, model, weights: dict[str, float]) -> bool:
    """`--general-texts auto`: a teacher that embeds in the student's space, and a run that distils from it
    (label-only fine-tuning stays label-only)."""
    return (isinstance(teacher, BiEncoderTeacher) and bool(set(weights) - {"labels", "previous"})
            and teacher.model.get_embedding_dimension() == model.get_embedding_dimension())


def teacher_stream(texts: list[str], teacher: Teacher, model, max_length: int, seed: int) -> GeneralTexts:
    """The general-text stream, with the teacher's targets read at `max_length` tokens as the student reads them."""
    if not isinstance(teacher, BiEncoderTeacher):
        raise UserError("--general-texts matches a bi-encoder teacher's embeddings; a cross-encoder "
                        "teacher has none, so drop --general-texts")
    dim, student_dim = teacher.model.get_embedding_dimension(), model.get_embedding_dimension()
    if dim != student_dim:
        raise UserError(f"--general-texts needs the student to embed in the teacher's dimension ({dim}), not {student_dim}")
    return GeneralTexts(texts, teacher_encoder(teacher.model, max_length), batch_size=32, seed=seed)


def teacher_encoder(st_model, max_length: int) -> Callable[[list[str]], np.ndarray]:
    """The teacher's normalised embeddings of a batch, read at `max_length` tokens as the student reads it."""
    def encode(texts: list[str]) -> np.ndarray:
        saved, st_model.max_seq_length = st_model.max_seq_length, min(st_model.max_seq_length, max_length)
        try:
            with torch.no_grad():
                return st_model.encode(texts, batch_size=len(texts), normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False)
        finally:
            st_model.max_seq_length = saved
    return encode


def resumable_stage(model, general: GeneralTexts, steps: int, max_seconds: float | None, info: dict, seed: int,
                    lr: float, checkpoint_dir: Path, progress: bool) -> dict:
    """Run the stage, or load its result from a rerun's checkpoint (`checkpoint_dir/general.pt`) with the same
    texts, steps, token limit, seed and learning rate."""
    key = json.dumps({k: info[k] for k in ("fingerprint", "steps", "max_length")} | {"seed": seed, "lr": lr},
                     sort_keys=True)
    path = checkpoint_dir / "general.pt"
    if path.is_file():
        state = torch.load(path, map_location=model.device, weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            log.info("general-text stage loaded from %s", path)
            general.skip(state["result"]["steps"])
            return state["result"]
    log.info("general-text stage: %d steps on %d texts", steps, len(general.texts))
    result = general_stage(model, general, steps, lr=lr, max_length=info["max_length"], max_seconds=max_seconds,
                           progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "model": model.state_dict(), "result": result}, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return result
