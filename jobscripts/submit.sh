#!/bin/bash
# Submits a swallow training job with the resources of its layout (jobscripts/layouts):
#   SWALLOW_DATA=PREFIX jobscripts/submit.sh slurm|pbs|age LAYOUT [scheduler options...]
# The node count is the layout's GPUs / GPUs per node (8; 4 for age, TSUBAME 4.0's node_f);
# SWALLOW_WALLTIME (24:00:00) becomes the time limit and the checkpoint timer; SWALLOW_QUEUE
# (PBS -q, e.g. rt_HF on ABCI 3.0) and SWALLOW_PROJECT (PBS -P / AGE -g group) where the site
# needs them. The job inherits the SWALLOW_* environment. SWALLOW_SUBMIT_PRINT=1 prints the
# command instead of running it, and creates nothing. SWALLOW_TP / SWALLOW_PP / SWALLOW_VPP override
# the layout's; a TP larger than a node's GPUs is refused here. Other variables: jobscripts/README.md.
set -euo pipefail
SWALLOW_HOME=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=jobscripts/lib/common.sh
source "$SWALLOW_HOME/jobscripts/lib/common.sh"
[ $# -ge 2 ] || swallow_die "usage: jobscripts/submit.sh slurm|pbs|age LAYOUT [scheduler options...]"
scheduler=$1 layout=$2
shift 2
swallow_layout "$layout"
: "${SWALLOW_DATA:?set SWALLOW_DATA to the training data spec (a shard prefix, a blend or a mix .toml)}"
per_node=$(swallow_gpus_per_node "$scheduler")
SWALLOW_LAYOUT=$layout swallow_check_tp "$per_node"
(( SWALLOW_GPUS % per_node == 0 )) || swallow_die "layout $layout: $SWALLOW_GPUS GPUs is not a whole number of $per_node-GPU nodes"
nodes=$(( SWALLOW_GPUS / per_node ))
walltime=${SWALLOW_WALLTIME:-24:00:00}
swallow_seconds "$walltime" > /dev/null
logs=${SWALLOW_RUN_DIR:-$SWALLOW_HOME/runs/$layout}/logs
export SWALLOW_HOME SWALLOW_LAYOUT=$layout SWALLOW_WALLTIME=$walltime SWALLOW_GPUS_PER_NODE=$per_node
case $scheduler in
    slurm)
        cmd=(sbatch --job-name="$layout" --nodes="$nodes" --ntasks-per-node="$per_node" --gpus-per-node="$per_node"
            --time="$walltime" --signal="B:USR1@${SWALLOW_SAVE_MARGIN:-600}" --output="$logs/slurm-%j.out" --export=ALL
            "$@" "$SWALLOW_HOME/jobscripts/slurm/train.sbatch")
        ;;
    pbs)
        cmd=(qsub -N "$layout" -l "select=$nodes:ncpus=${SWALLOW_CPUS_PER_NODE:-96}:ngpus=$per_node:mpiprocs=$per_node"
            -l "walltime=$walltime" -j oe -V)
        [ -z "${SWALLOW_QUEUE:-}" ] || cmd+=(-q "$SWALLOW_QUEUE")
        [ -z "${SWALLOW_PROJECT:-}" ] || cmd+=(-P "$SWALLOW_PROJECT")
        cmd+=("$@" "$SWALLOW_HOME/jobscripts/pbs/train.pbs")
        ;;
    age)
        cmd=(qsub -N "$layout" -l "node_f=$nodes" -l "h_rt=$walltime" -o "$logs" -j y -V)
        [ -z "${SWALLOW_PROJECT:-}" ] || cmd+=(-g "$SWALLOW_PROJECT")
        cmd+=("$@" "$SWALLOW_HOME/jobscripts/age/train.sh")
        ;;
    *) swallow_die "scheduler '$scheduler': expected slurm, pbs or age (plain mpirun: jobscripts/local/train.sh)" ;;
esac
if [ "${SWALLOW_SUBMIT_PRINT:-0}" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
else
    mkdir -p "$logs"
    cd "$SWALLOW_HOME"
    "${cmd[@]}"
fi
