"""HTTP routes for ReID galleries: query by uploaded crop, upload crops, remove crops.

Mount into the product app with `app.include_router(gallery_router(catalog))`. The router keeps its
own `Searcher` whose encoders are ReID model folders (loaded once per folder, then cached); errors
are `indexer.errors.UserError`s, which the product app already turns into 4xx JSON.

Uploaded gallery crops are stored under `EMBEDKD_HOME/galleries/<gallery>/` (the index keeps their
paths, which `embedkd reid gallery upgrade` reads to fit an adapter).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile

from indexer.context import Catalog
from indexer.errors import UserError

from .data import IMAGE_SUFFIXES
from .uploads import safe_name, upload_dir

__all__ = ["gallery_router", "upload_dir", "MAX_SHOTS"]

MAX_SHOTS = 64  # crops in one tracklet query: enough for seconds of a track, bounded encoding per request


def gallery_router(catalog: Catalog) -> APIRouter:
    from indexer.search import Searcher, check_k
    from indexer.where import parse_where

    from .encoder import load_image_encoder
    from .gallery import add_to_gallery, drop_gallery, query_gallery, remove_from_gallery, require_gallery

    router = APIRouter(prefix="/reid/galleries", tags=["reid"])
    searcher = Searcher(catalog, encoder_for=load_image_encoder, registered_query_models_only=True)

    @router.post("/{gallery}/query")
    def query(
        gallery: str,
        image: Annotated[list[UploadFile], File(
            description=f"query person crop (JPEG or PNG); repeat the field with up to {MAX_SHOTS} crops of one person "
                        "(a tracklet) for one search by the mean of their embeddings")],
        k: Annotated[int, Query(description="number of results")] = 10,
        model: Annotated[str | None, Query(description="query model folder (through the gallery's adapter)")] = None,
        where: Annotated[list[str], Query(description="repeatable: camid=3, camid=[1,2], camid!=3, pid=42")] = [],  # noqa: B006
    ) -> dict[str, Any]:
        check_k(k)
        if len(image) > MAX_SHOTS:
            raise UserError(f"send at most {MAX_SHOTS} crops of one person a query, got {len(image)}")
        rows = query_gallery(catalog, gallery, [one.file.read() for one in image], k=k, model_dir=model,
                             searcher=searcher, where=parse_where(where), fuse=True)
        return {"results": rows[0], "shots": len(image)}

    uploading: dict[str, threading.Lock] = defaultdict(threading.Lock)

    @router.post("/{gallery}/crops")
    def add(
        gallery: str,
        images: Annotated[list[UploadFile], File(description="crops; the file name (without extension) is the id")],
    ) -> dict[str, Any]:
        require_gallery(catalog, gallery)  # before any file is written, so no folder is left for a wrong name
        # one upload to a gallery at a time, files and index write together: two uploads of one crop name
        # must not overwrite each other's file, nor restore it under the other's indexed vector
        with uploading[gallery]:
            return _upload(gallery, images)

    def _upload(gallery: str, images: list[UploadFile]) -> dict[str, Any]:
        folder = upload_dir(catalog, gallery)
        folder.mkdir(parents=True, exist_ok=True)
        paths, written, replaced = [], [], {}
        try:
            for upload in images:
                name = safe_name(Path(upload.filename or "").name)
                if not name or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    raise UserError(f"upload {upload.filename!r} needs a .jpg/.jpeg/.png file name (its id)")
                path = folder / name
                if path.exists():
                    replaced.setdefault(path, path.read_bytes())
                else:
                    written.append(path)
                path.write_bytes(upload.file.read())
                paths.append(path)
            return add_to_gallery(catalog, gallery, paths)
        except BaseException:
            # A refused upload leaves the folder as it was: new files go, replaced crops get their old
            # bytes back (the index still holds the old crop's vector and hash, and upgrades re-read them).
            for path in written:
                path.unlink(missing_ok=True)
            for path, data in replaced.items():
                path.write_bytes(data)
            raise

    @router.delete("/{gallery}/crops/{crop_id}")
    def remove(gallery: str, crop_id: str) -> dict[str, Any]:
        with uploading[gallery]:
            return remove_from_gallery(catalog, gallery, [crop_id])  # also deletes the crop's uploaded file

    @router.delete("/{gallery}")
    def drop(gallery: str) -> dict[str, Any]:
        with uploading[gallery]:
            return drop_gallery(catalog, gallery)

    return router
