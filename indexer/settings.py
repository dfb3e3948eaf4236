"""Where the catalog and index files live. Read once at the edge (CLI, HTTP app)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings", "load_settings"]


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str

    @property
    def index_dir(self) -> Path:
        return self.home / "indexes"

    @property
    def job_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def adapter_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def load_settings(home: str | os.PathLike | None = None, database_url: str | None = None) -> Settings:
    """EMBEDKD_HOME (default ~/.embedkd) holds catalog.db and index files;
    EMBEDKD_DATABASE_URL overrides the catalog database (e.g. postgresql+psycopg://...)."""
    root = Path(home or os.environ.get("EMBEDKD_HOME") or Path.home() / ".embedkd").expanduser().resolve()
    url = database_url or os.environ.get("EMBEDKD_DATABASE_URL") or f"sqlite:///{root / 'catalog.db'}"
    return Settings(home=root, database_url=url)
