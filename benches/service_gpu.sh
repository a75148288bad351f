#!/usr/bin/env bash
# The inference service's GPU check (issue 13), for a device machine (a GPU, no PostgreSQL, no registry).
#
# Here (any machine with this repository and its caches):
#   bash benches/service_gpu.sh prepare      # builds the benches, stages them in .gpucheck/ (git-ignored)
#   bash ../shared/gpu/prepare-ort-cuda.sh    # stages the CUDA ONNX Runtime in .gpucarry/c0..cN
# On the device, one `run` per piece, back to back, carry [".gpucarry/c0", ".gpucarry/cK"], command
# `bash .gpucarry/c0/unpack.sh`; then one more `run` with carry [".gpucheck"] and command
# `bash .gpucheck/run.sh` (this script copied there as run.sh), which prints:
#   - embed_gpu: CUDA inference at batch 1 / 32 / 256 and CUDA vs CPU agreement (min cosine >= 0.999);
#   each with TF32 off, on (ONNX Runtime's default) and on with NHWC kernels (about 2 minutes in all);
#   - service_sim: N = 1, 16, 64, 256 client threads sending single images through the service protocol
#     (slots, bincode frames, dynamic batching) against N threads calling batch-1 inference.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = prepare ]; then
  root=$(cd "$here/.." && pwd)
  cd "$root" || exit 1
  out=.gpucheck
  rm -rf "$out" && mkdir -p "$out/models"
  grep -qx '/.gpucheck/' .gitignore || { echo "add /.gpucheck/ to .gitignore first"; exit 1; }
  cargo bench -p imgsim-pipeline --no-run --bench service_sim --bench embed_gpu --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("service_sim", "embed_gpu"):
        print(m["target"]["name"], m["executable"])' |
    while read -r name exe; do cp "$exe" "$out/$name"; done
  [ -x "$out/service_sim" ] && [ -x "$out/embed_gpu" ] || { echo "build failed"; exit 1; }
  cp .cache/models/efficientnet_lite0.onnx .cache/models/efficientnet_lite0.json "$out/models/"
  cp "$here/service_gpu.sh" "$out/run.sh"
  du -sh "$out"
  exit 0
fi

# On the device (from .gpucheck/run.sh).
d=$(cd "$here" && pwd)
[ -f /root/ort-cuda/env.sh ] || { echo "no /root/ort-cuda/env.sh: unpack the CUDA ONNX Runtime first"; exit 2; }
. /root/ort-cuda/env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
# FP32 (TF32 off), then ONNX Runtime's default TF32, then TF32 + NHWC kernels.
for opts in "--tf32 off" "--tf32 on" "--tf32 on --nhwc on"; do
  echo "=== $opts"
  # shellcheck disable=SC2086
  "$d/embed_gpu" --lib "$ORT_CUDA_LIB" --model-dir "$d/models" --model efficientnet_lite0 --seconds 3 $opts
  # shellcheck disable=SC2086
  "$d/service_sim" --lib "$ORT_CUDA_LIB" --model-dir "$d/models" --provider cuda --clients 1,16,64,256 \
    --seconds 4 --max-batch 256 --max-wait-us 2000 $opts
done
