"""An index moved between catalogs without re-embedding: exported to a folder (its FAISS files, its items,
its model record, its adapters and their files, each file with its sha256) and imported into another
catalog, e.g. from the embedded SQLite catalog to a PostgreSQL server, or from a backup.

An export is one generation, taken holding the index's write lock for moments: it reads the index's row,
starts the one statement that reads its items (which then sees the items as they were, however long it
streams), and hard-links the generation's files into a private folder beside the jobs' (`pins.py`). Index
files are never written in place (a write makes new ones and deletes the old names after its commit), so the
links keep that generation's bytes whatever is written next; the copies and the items are written after the
lock is released, so a large index is not held from its writers for minutes. Where the files cannot be linked
(another file system) they are copied holding the lock. The export is a copy, never a link to the live files:
a backup must not share their bytes. An import checks every
file against the export's checksums before it writes anything, copies the files, and commits the catalog
rows last, in one transaction; a failure removes the copied files, so the target catalog is as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from array import array
from collections.abc import Callable
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from . import carried, jobs, locks, pins, purges, text_log
from .adapters import adapter_path
from .build import check_index_name
from .catalog import ensure_model, get_index, insert_items
from .context import Catalog
from .encoder import ModelRecord
from .errors import Conflict, UserError
from .hashing import sha256_file
from .models import Adapter, EmbeddingModel, Index, Item
from .shards import manifest_files

__all__ = ["export_index", "import_index", "FORMAT"]

log = logging.getLogger(__name__)

FORMAT = "embedkd-index-export/1"
_MANIFEST = "embedkd-index.json"
_BATCH = 5000
_NOTHING_IMPORTED = "free space or fix permissions there, then import again; nothing was imported"


def export_index(catalog: Catalog, name: str, out: str | os.PathLike, attached: Path | None = None,
                 with_corpora: bool = False) -> dict[str, Any]:
    """Write index `name` to the new folder `out` (written beside it, renamed into place when complete).
    `attached`: a folder of EMBEDKD_HOME that holds files the items point to (`info["path"]`; a gallery's
    uploaded crops): the files of the exported items in it are exported too (`import_index` places them).
    `with_corpora`: the files its documents came from are copied too (`carried.py`)."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists; export into a new folder")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    pinned = pins.folder(catalog.settings.job_dir, "export")
    pinned.mkdir(parents=True)
    try:
        with catalog.session() as s:
            with locks.target_lock(catalog, name):  # one generation: its rows, and its files pinned or copied
                index = get_index(s, name)
                purges.finish(catalog, name)  # a purge that failed midway: its texts must not travel
                record = {"index": {c: getattr(index, c) for c in ("name", "factory", "metric", "dimension", "count",
                                                                     "file", "checksum", "generation", "next_id")},
                          "model": _model(index.model), "format": FORMAT}
                adapters = [{"kind": a.kind, "file": Path(a.file).name, "checksum": a.checksum, "metrics": a.metrics,
                             "active": a.active, "source_model": _model(a.source_model),
                             "path": str(adapter_path(catalog.settings.adapter_dir, a.file))}
                            for a in s.scalars(select(Adapter).where(Adapter.index_id == index.id))]
                # one statement, started here, reads the items as they are now however long it streams after
                rows = iter(s.execute(select(Item.external_id, Item.faiss_id, Item.content_hash, Item.info)
                                      .where(Item.index_id == index.id).order_by(Item.faiss_id)
                                      .execution_options(yield_per=_BATCH)))
                first = list(islice(rows, 1))
                folder = catalog.settings.index_dir / name
                names = manifest_files(folder / index.file)
                for file in names:
                    if not _link(folder / file, pinned / file):  # another file system: copied now
                        _copy(folder / file, tmp / "files" / file)
            for file in names:
                if (pinned / file).is_file():
                    _copy(pinned / file, tmp / "files" / file)
            inside: list[str] = []  # paths of the items' files in `attached`, relative to it
            held = array("q")  # the documents as the index holds them: what a carried corpus keeps
            with open(tmp / "items.jsonl", "w", encoding="utf-8") as fh:
                for e, f, h, info in chain(first, rows):
                    fh.write(json.dumps({"id": e, "faiss_id": f, "hash": h, "info": info}) + "\n")
                    if with_corpora:
                        held.append(carried.held_key(e, h))
                    if attached is not None and (rel := _relative(info, attached)) is not None:
                        inside.append(rel)
        files = [{"name": file, "sha256": sha256_file(tmp / "files" / file)} for file in names]
        found = jobs.sources(catalog, name)
        record["sources"] = {"paths": [[at, path] for at, path in found],
                             "texts": _export_texts(catalog, name, tmp / "texts")}
        if with_corpora:
            record["sources"]["corpora"] = carried.entries(found)
            keys = np.unique(np.frombuffer(held, dtype=np.int64))
            for f in record["sources"]["corpora"]:
                (tmp / "corpora").mkdir(exist_ok=True)
                try:
                    f["documents"] = carried.copy_held(Path(f["path"]), tmp / "corpora" / f["name"], keys)
                except OSError as err:
                    raise UserError(f"cannot copy {f['path']}: {err.strerror or err}; nothing was exported") from None
                f["sha256"] = sha256_file(tmp / "corpora" / f["name"])
        if attached is not None:
            record["attached"] = {"folder": str(attached), "files": _export_attached(attached, inside, tmp / "attached")}
        if adapters:
            (tmp / "adapters").mkdir()
        for a in adapters:
            _copy(Path(a.pop("path")), tmp / "adapters" / a["file"])
        record.update(files=files, adapters=adapters, items_sha256=sha256_file(tmp / "items.jsonl"))
        (tmp / _MANIFEST).write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(pinned, ignore_errors=True)
    return {"index": name, "out": str(out), "count": record["index"]["count"], "files": len(files),
            "adapters": len(adapters), "attached_files": len(record.get("attached", {}).get("files", [])),
            "corpora": len(record["sources"].get("corpora", [])), "bytes": jobs.disk_bytes(out)}


def _export_texts(catalog: Catalog, name: str, dest: Path) -> list[dict[str, str]]:
    """Copy the texts kept of the index's HTTP writes (`text_log`) to `dest`; their entries. With the paths of
    the files its other documents came from, they let the imported index be upgraded to a new model."""
    out = []
    with text_log.pinned(catalog, name) as paths:
        for path in paths:
            dest.mkdir(exist_ok=True)
            _copy(path, dest / path.name)
            out.append({"name": path.name, "sha256": sha256_file(dest / path.name)})
    return out


def _relative(info: Any, folder: Path) -> str | None:
    """The item's file (`info["path"]`) relative to `folder`, or None where it has none there."""
    path = info.get("path") if isinstance(info, dict) else None
    if not isinstance(path, str):
        return None
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return None


def _export_attached(folder: Path, inside: list[str], dest: Path) -> list[dict[str, str]]:
    """Copy the files `inside` (relative to `folder`) to `dest`; their entries. A file removed since the items
    were read (its crop removed meanwhile) is left out: the import then has no file for an item that is gone."""
    out = []
    for rel in dict.fromkeys(inside):
        if not (folder / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        _copy(folder / rel, dest / rel)
        out.append({"name": rel, "sha256": sha256_file(dest / rel)})
    return out


def import_index(catalog: Catalog, src: str | os.PathLike, name: str | None = None,
                 attach_to: Callable[[str], Path] | None = None) -> dict[str, Any]:
    """Import the export in folder `src` as index `name` (default: its own name). Files exported with the
    items (`export_index`'s `attached`) go to the folder `attach_to(name)`, and the items' paths to them follow."""
    src = Path(src)
    record = _read_manifest(src)
    attached = record.get("attached")
    sources = record.get("sources", {})  # absent from exports made before sources were carried
    if attached and attach_to is None:
        raise UserError(f"{src} holds files its items point to (a gallery's crops); import it with "
                        "`embedkd index import`, which places them; nothing was imported")
    for part, sha in [(Path("files") / f["name"], f["sha256"]) for f in record["files"]] + [
            (Path("items.jsonl"), record["items_sha256"])] + [(Path("adapters") / a["file"], a["checksum"])
                                                              for a in record["adapters"]] + [
            (Path("attached") / f["name"], f["sha256"]) for f in (attached or {}).get("files", [])] + [
            (Path("texts") / f["name"], f["sha256"]) for f in sources.get("texts", [])] + [
            (Path("corpora") / f["name"], f["sha256"]) for f in sources.get("corpora", [])]:
        path = src / part
        if not path.is_file() or sha256_file(path) != sha:
            raise UserError(f"{path} is missing or does not match the export's checksum; export the index again; "
                            "nothing was imported")
    meta = record["index"]
    name = check_index_name(name or meta["name"])
    folder, adapter_folder = catalog.settings.index_dir / name, catalog.settings.adapter_dir / name
    with locks.target_lock(catalog, name):
        with catalog.session() as s:
            if s.scalar(select(Index.id).where(Index.name == name)) is not None:
                raise Conflict(f"index {name!r} already exists; import under another name with --index NEW_NAME")
        # what an import killed midway left (or a dropped index's files): no row names them, and the lock held
        # keeps any other writer of this name out, so a rerun of the import clears them and goes on
        for leftover in (folder, adapter_folder, text_log.log_folder(catalog, name), carried.folder(catalog, name)):
            if leftover.exists():
                log.warning("index %r: removing %s, which no index holds (an import or a build stopped midway)",
                            name, leftover)
                shutil.rmtree(leftover)
        copied: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _place(src / "files", [f["name"] for f in record["files"]], folder, copied)
            _place(src / "adapters", [a["file"] for a in record["adapters"]], adapter_folder, copied)
            _place(src / "texts", [f["name"] for f in sources.get("texts", [])], text_log.log_folder(catalog, name), copied)
            corpora = sources.get("corpora", [])
            _place(src / "corpora", [f["name"] for f in corpora], carried.folder(catalog, name), copied)
            moved = {f["path"]: str((carried.folder(catalog, name) / f["name"]).resolve()) for f in corpora}
            relocate = None
            if attached:
                assert attach_to is not None
                target = attach_to(name)
                copied += _import_attached(src / "attached", attached["files"], target)
                relocate = (Path(attached["folder"]), target)
            with catalog.session() as s:
                model = ensure_model(s, ModelRecord(**record["model"]))
                gen = int(meta["generation"])
                row = Index(name=name, model_id=model.id, factory=meta["factory"], metric=meta["metric"],
                            dimension=meta["dimension"], count=meta["count"], file=meta["file"],
                            checksum=meta["checksum"], generation=gen, next_id=meta["next_id"], state="ready",
                            history_from=gen)
                s.add(row)
                s.flush()
                _insert_items(s, row.id, src / "items.jsonl", gen, relocate)
                found = [(int(at), moved.get(path, path)) for at, path in sources.get("paths", [])]
                if found:  # where its documents live, for an upgrade of the imported index
                    s.add(jobs.sources_job(name, found, origin=str(src)))
                for a in record["adapters"]:
                    source = ensure_model(s, ModelRecord(**a["source_model"]))
                    s.add(Adapter(index_id=row.id, source_model_id=source.id, target_model_id=model.id,
                                  kind=a["kind"], file=f"{name}/{a['file']}", checksum=a["checksum"],
                                  metrics=a["metrics"], active=a["active"]))
        except BaseException:
            for path in copied:
                path.unlink(missing_ok=True)
            raise
    return {"index": name, "count": meta["count"], "generation": meta["generation"], "model": record["model"]["name"],
            "adapters": len(record["adapters"]), "attached_files": len((attached or {}).get("files", [])),
            "kept_text_files": len(sources.get("texts", [])), "source_paths": len(sources.get("paths", [])),
            "corpora": len(sources.get("corpora", [])),
            "imported": True}


def _import_attached(src: Path, files: list[dict[str, str]], target: Path) -> list[Path]:
    """Copy the exported files into `target`; the paths it wrote. A file already there with the same bytes is
    kept (an import beside the export's own catalog); one with other bytes is refused, nothing written."""
    clash = next((f["name"] for f in files if (target / f["name"]).is_file()
                  and sha256_file(target / f["name"]) != f["sha256"]), None)
    if clash is not None:
        raise Conflict(f"{target / clash} exists with other content; import under another name with --index "
                       "NEW_NAME, or move that folder away; nothing was imported")
    written = []
    for f in files:
        if (target / f["name"]).is_file():
            continue
        (target / f["name"]).parent.mkdir(parents=True, exist_ok=True)
        written.append(target / f["name"])
        _copy(src / f["name"], target / f["name"], _NOTHING_IMPORTED)
    return written


def _link(src: Path, dst: Path) -> bool:
    """Hard-link `src` at `dst`; False where that cannot be done (another file system)."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        return False


def _place(src: Path, names: list[str], dest: Path, copied: list[Path]) -> None:
    """Copy the files `names` of the export's folder `src` into `dest`, each added to `copied` before it is
    written (an import that fails removes them)."""
    for name in names:
        dest.mkdir(parents=True, exist_ok=True)
        copied.append(dest / name)
        _copy(src / name, dest / name, _NOTHING_IMPORTED)


def _copy(src: Path, dst: Path, advice: str = "check the index with `embedkd index verify`; nothing was exported") -> None:
    """Copy whole or not at all: a process killed midway leaves no part of a file under its name (a rerun would find
    it there with other bytes), only a hidden temporary file."""
    tmp = dst.with_name(f".{dst.name}.copying")
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot copy {src} to {dst.parent}: {err.strerror}; {advice}") from None


def _model(row: EmbeddingModel) -> dict[str, Any]:
    return {"name": row.name, "source": row.source, "kind": row.kind, "dimension": row.dimension,
            "normalized": row.normalized, "fingerprint": row.fingerprint, "info": row.info or {}}


def _read_manifest(src: Path) -> dict[str, Any]:
    path = src / _MANIFEST
    if not path.is_file():
        raise UserError(f"{src} is not an index export (no {_MANIFEST}); give a folder written by `embedkd index export`")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg}); export the index again") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UserError(f"{path} is not an {FORMAT} export; export the index again with this version")
    return record


def _insert_items(s, index_id: int, path: Path, generation: int, relocate: tuple[Path, Path] | None = None) -> None:
    """The exported items; `relocate` (old folder, new folder): paths in the old folder now point to the new."""
    with open(path, encoding="utf-8") as fh:
        batch: list[dict[str, Any]] = []
        for line in fh:
            row = json.loads(line)
            if relocate is not None and (rel := _relative(row["info"], relocate[0])) is not None:
                row["info"] = {**row["info"], "path": str(relocate[1] / rel)}
            batch.append(row)
            if len(batch) == _BATCH:
                _flush(s, index_id, batch, generation)
                batch = []
        _flush(s, index_id, batch, generation)


def _flush(s, index_id: int, batch: list[dict[str, Any]], generation: int) -> None:
    if batch:
        insert_items(s, index_id, [r["id"] for r in batch], [r["faiss_id"] for r in batch],
                     [r["hash"] for r in batch], [r["info"] for r in batch], generation)
