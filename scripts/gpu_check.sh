#!/usr/bin/env bash
# Verify and measure the GPU path on a CUDA machine, in the order that matters
# when device time is short: equivalence tests first, then the issue's target
# run and the same run without the fused fusion kernel, the 12 MP CPU-vs-GPU
# pair, the target run with the old float32 result, and last the long 45 MP
# CPU-vs-GPU pair. Each step has its own time limit and every
# bench prints its JSON as soon as it is measured, so a cut run still reports.
#
#   scripts/gpu_check.sh [OUT_DIR] [GT_PHOTO]
#
# OUT_DIR (default: $OUT or ./gpu-check) gets one log / JSON-lines file per
# step. Needs the project's Python packages and CuPy (see docs/gpu.md for a
# bare machine without network: wheels carried in, KERAS_BACKEND=jax).
set -u
out="${1:-${OUT:-gpu-check}}"
gt="${2:-../shared/data/photos/saw_2725x2225.jpg}"
py="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TERAPAN_THREADS="${TERAPAN_THREADS:-auto}"

if ! "$py" -c "from processing.device import backend; import sys; sys.exit(0 if backend.gpu_available() else 1)"; then
  echo "gpu_check: no CUDA device usable through CuPy on this machine" >&2
  exit 2
fi
"$py" - <<'PY' > "$out/device.txt" 2>&1
import os, cupy
p = cupy.cuda.runtime.getDeviceProperties(0)
print(p["name"].decode(), "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "| CuPy", cupy.__version__,
      "| cores", os.cpu_count(), "| KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
PY
cat "$out/device.txt"

step() {  # step NAME SECONDS COMMAND...
  local name="$1" limit="$2"
  shift 2
  echo "== $name (limit ${limit}s)" >&2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - t0))" | tee -a "$out/steps.txt" >&2
  grep -h '^{' "$out/$name.out" 2>/dev/null | cut -c1-400 >&2
}

bench=("$py" -m processing bench sr --gt "$gt" --frames 20 --no-write)
step tests 240 "$py" -m pytest -q -p no:cacheprovider tests/processing/stack/test_gpu.py tests/processing/stack/test_fuse_cuda.py tests/processing/io/test_jpeg_decode.py
step target_45mp_x4 300 "${bench[@]}" --device gpu --megapixels 45 --scale 4 --upscale-model --repeat 2
step unfused_45mp_x4 300 env TERAPAN_GPU_FUSED=0 "${bench[@]}" --device gpu --megapixels 45 --scale 4 --upscale-model --repeat 2
step pair_12mp_x2 300 "${bench[@]}" --device gpu,cpu --megapixels 12 --scale 2 --lib-threads one,native
step float32_45mp_x4 300 "${bench[@]}" --device gpu --megapixels 45 --scale 4 --upscale-model --repeat 2 --result-dtype float32
step pair_45mp_x2 420 "${bench[@]}" --device gpu,cpu --megapixels 45 --scale 2
