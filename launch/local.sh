#!/usr/bin/env bash
# Single-machine run on all local devices (GPUs, TPU cores or CPU).
#   launch/local.sh configs/b16.py workdirs/b16 [--config.key=value ...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}; workdir=${2:?missing WORKDIR}; shift 2
exec "${PYTHON:-.venv/bin/python}" -m posebh_jax.main --config="$config" --workdir="$workdir" "$@"
