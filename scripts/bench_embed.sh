#!/usr/bin/env bash
# CPU throughput: Rust pipeline (benches/embed_cpu.rs) vs the Python reference
# (scripts/reference_embed.py --bench: Pillow + onnxruntime), same images, same model, same machine.
#
#   scripts/bench_embed.sh [IMAGES_DIR] [MODEL]     (default .cache/data/gcompris efficientnet_lite0)
#   JPEG=1 scripts/bench_embed.sh                   also bench a JPEG copy of the photos
#                                                   (.cache/data/gcompris_jpeg, made with Pillow q90)
# Env: IMGSIM_ORT_LIB, IMGSIM_MODEL_DIR (default .cache/...), PYTHON (default .cache/venv/bin/python),
#      SECONDS_PER_ROW (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.cache/venv/bin/python}
MODEL_DIR=${IMGSIM_MODEL_DIR:-$PWD/.cache/models}
MODEL=${2:-efficientnet_lite0}
SECS=${SECONDS_PER_ROW:-3}

run_pair() {
  local images
  images=$(cd "$1" && pwd)   # cargo runs benches from the crate directory: pass absolute paths
  echo "== $images, model $MODEL =="
  local rust py
  rust=$(cargo bench -q -p imgsim-pipeline --bench embed_cpu -- --images "$images" --model "$MODEL" --seconds "$SECS")
  py=$("$PY" scripts/reference_embed.py --model-dir "$MODEL_DIR" --images "$images" --model "$MODEL" --bench)
  echo "-- Rust (imgsim-pipeline)"; echo "$rust"
  echo "-- Python reference (Pillow + onnxruntime)"; echo "$py"
  echo "-- ratio Rust / Python (images/s; >1 means Rust is faster)"
  RUST="$rust" PYOUT="$py" "$PY" - <<'PYEOF'
import os, re
rust, py = os.environ["RUST"], os.environ["PYOUT"]
def rust_rate(pattern):
    for line in rust.splitlines():
        if re.search(pattern, line):
            return float(line.split()[-2])
def py_rate(pattern):
    for line in py.splitlines():
        if re.search(pattern, line):
            return float(re.search(r":\s+([0-9.]+) images/s", line).group(1))
rows = [("decode+preprocess, 1 thread (jpeg dct scaling on)", r"decode\+preprocess .*scaling on", r"decode\+preprocess"),
        ("decode+preprocess, 1 thread (jpeg dct scaling off)", r"decode\+preprocess .*scaling off", r"decode\+preprocess")]
for bs in sorted({1, 32}):
    rows.append((f"inference batch {bs}, 1 thread", rf"batch +{bs}, 1 thread", rf"batch +{bs}, 1 thread"))
    rows.append((f"inference batch {bs}, default threads", rf"batch +{bs}, default threads", rf"batch +{bs}, default threads"))
print(f"{'stage':<52} {'Rust':>9} {'Python':>9} {'ratio':>7}")
for label, rp, pp in rows:
    r, p = rust_rate(rp), py_rate(pp)
    if r and p:
        print(f"{label:<52} {r:9.1f} {p:9.1f} {r / p:7.2f}")
PYEOF
}

run_pair "${1:-.cache/data/gcompris}"
if [ "${JPEG:-0}" = 1 ] && [ -z "${1:-}" ]; then
  if [ ! -d .cache/data/gcompris_jpeg ]; then
    "$PY" - <<'PYEOF'
from pathlib import Path
from PIL import Image
src, dst = Path(".cache/data/gcompris"), Path(".cache/data/gcompris_jpeg")
for p in src.rglob("*.webp"):
    out = dst / p.relative_to(src).with_suffix(".jpg")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(p).convert("RGB").save(out, quality=90)
PYEOF
  fi
  run_pair .cache/data/gcompris_jpeg
fi
