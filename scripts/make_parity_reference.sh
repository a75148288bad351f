#!/usr/bin/env bash
# Regenerate tests/fixtures/parity_reference.json: embeddings of tests/fixtures/parity/* computed by
# the Python reference pipeline (scripts/reference_embed.py: Pillow + onnxruntime CPU), which the
# Rust pipeline's parity test compares against (cosine >= 0.995).
#   scripts/make_parity_reference.sh [model_dir]      (default .cache/models)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.cache/venv/bin/python}
MODEL_DIR=${1:-.cache/models}
MODELS=${PARITY_MODELS:-"efficientnet_lite0 resnet34_random"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in $MODELS; do
  "$PY" scripts/reference_embed.py --model-dir "$MODEL_DIR" --images tests/fixtures/parity --model "$m" \
    --threads 1 --out "$tmp/$m.npy" >/dev/null
done
"$PY" - "$tmp" "$MODELS" <<'PYEOF'
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime, PIL
tmp, models = Path(sys.argv[1]), sys.argv[2].split()
out = {"generator": f"scripts/reference_embed.py (onnxruntime {onnxruntime.__version__}, Pillow {PIL.__version__})",
       "images": "tests/fixtures/parity", "models": {}}
for m in models:
    emb = np.load(tmp / f"{m}.npy")
    meta = json.loads((tmp / f"{m}.json").read_text())
    out["models"][m] = {"files": meta["files"],
                        "embeddings": [[float(f"{v:.6g}") for v in row] for row in emb.tolist()]}
Path("tests/fixtures/parity_reference.json").write_text(json.dumps(out) + "\n")
print("wrote tests/fixtures/parity_reference.json:", {m: len(v["files"]) for m, v in out["models"].items()})
PYEOF
