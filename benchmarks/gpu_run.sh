#!/usr/bin/env bash
# One call on a lent GPU machine (its image has jax, flax, optax and orbax; the packages it lacks travel as wheels
# in .whl/, see README "GPU and TPU"): records the device and versions, then runs the train-step benchmark.
#   bash benchmarks/gpu_run.sh [train_step arguments]      (results also under $OUT, or /tmp/gpu_run)
# Budget one variant per call when comparing several runners with traces: each such variant takes minutes
# (docs/MEASUREMENTS.md).
# --trace_dir also writes each step's optimised HLO (for benchmarks.trace_attribution); tar the folder into $OUT,
# which brings back at most 8 files.
# Wheels for an offline machine with Python 3.12, fetched beforehand where pip can reach PyPI:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 -d .whl ml_collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker
set -o pipefail
OUT=${OUT:-/tmp/gpu_run}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/env.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
python3 -c "import sys, jax, flax, optax, orbax.checkpoint, grain, numpy; print('python', sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, jax.devices())" \
  | tee -a "$OUT/env.txt" || exit 1
PYTHONUNBUFFERED=1 python3 -m benchmarks.train_step "$@" 2>&1 | tee "$OUT/train_step.txt"
