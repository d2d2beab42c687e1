#!/bin/bash
# swallow training with plain mpirun on a list of hosts, no scheduler:
#   SWALLOW_LAYOUT=swallow-7b SWALLOW_DATA=PREFIX SWALLOW_HOSTS=hosts.txt jobscripts/local/train.sh
# SWALLOW_HOSTS: one host per line (repeats and OpenMPI "host slots=N" lines are fine: the first
# word counts), each with SWALLOW_GPUS_PER_NODE (8) GPUs. `kill -USR1 <this script's pid>` makes
# every rank save after its current step and stop (Ctrl-C ends mpirun at once, without saving);
# with SWALLOW_WALLTIME=HH:MM:SS a timer does the same SWALLOW_SAVE_MARGIN (600) s before it.
# Other variables: jobscripts/README.md.
set -euo pipefail
SWALLOW_HOME=${SWALLOW_HOME:-$(cd "$(dirname "$0")/../.." && pwd)}
# shellcheck source=jobscripts/lib/common.sh
source "$SWALLOW_HOME/jobscripts/lib/common.sh"
: "${SWALLOW_HOSTS:?set SWALLOW_HOSTS to a file listing the hosts, one per line}"
[ -r "$SWALLOW_HOSTS" ] || swallow_die "SWALLOW_HOSTS=$SWALLOW_HOSTS: cannot read it"
swallow_init local "local-$(date +%Y%m%d-%H%M%S)-$$"
swallow_hostfile < "$SWALLOW_HOSTS"
swallow_train_command
swallow_mpirun_command
limit=$(swallow_seconds "${SWALLOW_WALLTIME:-}")
swallow_launch "$limit"
