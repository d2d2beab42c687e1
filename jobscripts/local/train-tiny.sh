#!/usr/bin/env bash
# Train the tiny preset on the bundled sample shards with plain mpirun on this machine.
# Usage: jobscripts/local/train-tiny.sh [extra swallow train flags...]
# (Cluster job scripts for Slurm, PBS and Grid Engine arrive with the supercomputer issue.)
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec mpirun -np 1 target/release/swallow train --config tiny \
  --data out/sample/sample_text_document --metrics out/local/metrics.jsonl "$@"
