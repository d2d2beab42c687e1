#!/bin/bash
# swallow training on Altair Grid Engine as on TSUBAME 4.0 (node_f: whole nodes of 4 H100 GPUs):
# one rank per GPU, OpenMPI's mpirun over the hosts of $PE_HOSTFILE.
#   SWALLOW_DATA=PREFIX SWALLOW_PROJECT=tgXXXXXX jobscripts/submit.sh age swallow-7b
#   qsub -g tgXXXXXX -l node_f=8 -l h_rt=24:00:00 -v SWALLOW_LAYOUT=swallow-7b,SWALLOW_DATA=PREFIX jobscripts/age/train.sh
# Walltime: at h_rt Grid Engine kills the job (SIGKILL), so a timer in this script sends SIGUSR1
# to mpirun SWALLOW_SAVE_MARGIN (600) s before it (h_rt read from SWALLOW_WALLTIME, else from
# qstat -j); every rank saves after its current step and exits 0. Where the site allows a soft
# limit, `-l s_rt=...` makes Grid Engine itself send SIGUSR1 at s_rt, which is forwarded the same way.
# Other variables: jobscripts/README.md.
#$ -cwd
#$ -N swallow
#$ -j y
#$ -l h_rt=24:00:00
set -euo pipefail
SWALLOW_HOME=${SWALLOW_HOME:-$PWD}
# shellcheck source=jobscripts/lib/common.sh
source "$SWALLOW_HOME/jobscripts/lib/common.sh"
[ -n "${PE_HOSTFILE:-}" ] || swallow_die "PE_HOSTFILE is not set: submit this script with qsub -l node_f=N"
swallow_init age "$JOB_ID"
# PE_HOSTFILE lines: host slots queue processor-range (the first word is the host).
swallow_hostfile < "$PE_HOSTFILE"
swallow_train_command
swallow_mpirun_command
walltime=${SWALLOW_WALLTIME:-$(qstat -j "$JOB_ID" 2> /dev/null | sed -n 's/.*h_rt=\([0-9:]*\).*/\1/p' | head -n 1 || true)}
limit=$(swallow_seconds "$walltime")
[ -n "$limit" ] || swallow_say "warning: walltime unknown (set SWALLOW_WALLTIME): no checkpoint before it"
swallow_launch "$limit"
