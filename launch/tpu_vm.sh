#!/usr/bin/env bash
# TPU pod slice: the same command on every worker; jax.distributed.initialize() finds the TPU topology.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/h16.py gs://bucket/workdirs/h16 [--config.key=value ...]
set -euo pipefail
tpu=${1:?tpu name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}; shift 4
cmd="cd ~/posebh_jax && .venv/bin/python -m posebh_jax.main --config=$config --workdir=$workdir $*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$cmd"
