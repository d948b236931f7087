#!/usr/bin/env bash
# Single-machine run on all local devices (GPUs, TPU cores or CPU).
#   launch/local.sh configs/b16.py workdirs/b16 [--config.key=value ...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}; workdir=${2:?missing WORKDIR}; shift 2
# On CPU, huge pages for XLA's per-step temporary buffer (posebh_jax.metrics.cpu_allocator_hint); harmless elsewhere.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}"
exec "${PYTHON:-.venv/bin/python}" -m posebh_jax.main --config="$config" --workdir="$workdir" "$@"
