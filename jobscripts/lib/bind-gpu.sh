#!/bin/bash
# Runs one rank on its node-local GPU, then execs the command (swallow train ...): the rank's
# node-local index comes from the launcher (OpenMPI: OMPI_COMM_WORLD_LOCAL_RANK, srun:
# SLURM_LOCALID, MPICH/Hydra: MPI_LOCALRANKID, PMI: PMI_LOCAL_RANK) and picks the device.
# SWALLOW_BIND_VERBOSE=1 prints each rank's choice on stderr.
set -euo pipefail
local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-${MPI_LOCALRANKID:-${PMI_LOCAL_RANK:-}}}}
if [ -z "$local_rank" ]; then
    echo "bind-gpu.sh: no node-local rank in the environment (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID or PMI_LOCAL_RANK): run it under mpirun or srun" >&2
    exit 1
fi
# The scheduler may already have narrowed the node's GPUs (Slurm gres, PBS/AGE cgroups): choose
# within that list; a single visible GPU means the scheduler bound this task itself.
IFS=, read -r -a visible <<< "${CUDA_VISIBLE_DEVICES:-}"
if [ "${#visible[@]}" -gt 1 ]; then
    if [ "$local_rank" -ge "${#visible[@]}" ]; then
        echo "bind-gpu.sh: node-local rank $local_rank but only ${#visible[@]} GPUs visible (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES)" >&2
        exit 1
    fi
    device=${visible[$local_rank]}
elif [ "${#visible[@]}" -eq 1 ]; then
    device=${visible[0]}
else
    device=$local_rank
fi
export CUDA_VISIBLE_DEVICES=$device
if [ "${SWALLOW_BIND_VERBOSE:-0}" = 1 ]; then
    echo "bind-gpu: $(hostname) local rank $local_rank -> CUDA_VISIBLE_DEVICES=$device" >&2
fi
exec "$@"
