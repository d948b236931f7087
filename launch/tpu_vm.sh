#!/usr/bin/env bash
# TPU pod slice: the same command on every worker; jax.distributed.initialize() finds the TPU topology.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/h16.py /mnt/BUCKET/workdirs/h16 [--config.key=value ...]
# The workdir must be one filesystem path that every worker sees (multi-host checkpoints are written by all
# workers into it): mount the bucket on every worker first, e.g.
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone=ZONE --worker=all \
#     --command="sudo mkdir -p /mnt/BUCKET && sudo chown \$USER /mnt/BUCKET &&
#                gcsfuse --implicit-dirs BUCKET /mnt/BUCKET"
# (a gs:// URL as the workdir is refused: the metrics, evaluation and picture writers use local file calls).
set -euo pipefail
tpu=${1:?tpu name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}; shift 4
cmd="cd ~/posebh_jax && .venv/bin/python -m posebh_jax.main --config=$config --workdir=$workdir $*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$cmd"
