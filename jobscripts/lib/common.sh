# shellcheck shell=bash
# Common launch code of the swallow job scripts, sourced by slurm/, pbs/, age/ and local/: the
# layout (jobscripts/layouts), the per-job log and hostfile, the NCCL/UCX environment, the
# `swallow train` command, and the launch itself, with the walltime warning turned into a
# checkpoint: swallow saves at the next step boundary on SIGUSR1 (or SIGTERM) and exits 0, so the
# job script forwards SIGUSR1/SIGTERM it receives, and its own timer's SIGUSR1, to the launcher
# (mpirun and srun pass SIGUSR1 on to every rank). Variables: jobscripts/README.md.

swallow_die() {
    echo "swallow job: error: $*" >&2
    exit 1
}

swallow_say() {
    echo "swallow job: $(date '+%F %T') $*"
}

# GPUs per node, the default of each scheduler's machines: ABCI 3.0 (PBS, rt_HF: 8 H200) and
# the usual Slurm H100 nodes have 8; TSUBAME 4.0 (AGE, node_f: 4 H100). SWALLOW_GPUS_PER_NODE wins.
swallow_gpus_per_node() {
    if [ -n "${SWALLOW_GPUS_PER_NODE:-}" ]; then
        echo "$SWALLOW_GPUS_PER_NODE"
    elif [ "$1" = age ]; then
        echo 4
    else
        echo 8
    fi
}

# The GPU kind the dry run plans memory for (`swallow train --gpu`; `swallow plan --gpu` lists
# them): ABCI 3.0's nodes carry H200s, TSUBAME 4.0's the 94 GB H100 (h100-94), the usual Slurm
# nodes 80 GB H100s. SWALLOW_GPU wins.
swallow_gpu_kind() {
    if [ -n "${SWALLOW_GPU:-}" ]; then
        echo "$SWALLOW_GPU"
    else
        case $1 in
            age) echo h100-94 ;;
            pbs) echo h200 ;;
            *) echo h100 ;;
        esac
    fi
}

# swallow_layout NAME: sets SWALLOW_CONFIG, SWALLOW_GPUS, SWALLOW_TP, SWALLOW_PP from the table;
# SWALLOW_TP and SWALLOW_PP set beforehand override the table's (SWALLOW_VPP adds --vpp).
swallow_layout() {
    local table="$SWALLOW_HOME/jobscripts/layouts" line tp pp
    [ -r "$table" ] || swallow_die "cannot read $table (SWALLOW_HOME=$SWALLOW_HOME should be the swallow checkout)"
    line=$(awk -v n="$1" '!/^#/ && $1 == n { print; exit }' "$table")
    [ -n "$line" ] || swallow_die "layout '$1' is not in $table (known: $(awk '!/^#/ && NF { printf "%s ", $1 }' "$table"))"
    read -r _ SWALLOW_CONFIG SWALLOW_GPUS tp pp <<< "$line"
    SWALLOW_TP=${SWALLOW_TP:-$tp} SWALLOW_PP=${SWALLOW_PP:-$pp}
}

# swallow_check_tp GPUS_PER_NODE: TP peers exchange activations every layer; they must share a node.
swallow_check_tp() {
    (( SWALLOW_TP <= $1 )) ||
        swallow_die "layout $SWALLOW_LAYOUT: tp $SWALLOW_TP is larger than the $1 GPUs of a node (TP peers must share a node's NVLink): use tp <= $1 (SWALLOW_TP) or nodes with more GPUs (SWALLOW_GPUS_PER_NODE)"
}

# "[[D-]HH:]MM:SS" or seconds -> seconds; empty stays empty.
swallow_seconds() {
    local t=$1 days=0 h=0 m=0 s
    [ -n "$t" ] || return 0
    [[ $t == *-* ]] && { days=${t%%-*}; t=${t#*-}; }
    IFS=: read -r -a parts <<< "$t"
    case ${#parts[@]} in
        1) s=${parts[0]} ;;
        2) m=${parts[0]}; s=${parts[1]} ;;
        3) h=${parts[0]}; m=${parts[1]}; s=${parts[2]} ;;
        *) swallow_die "walltime '$1': expected HH:MM:SS or seconds" ;;
    esac
    [[ "$days$h$m$s" =~ ^[0-9]+$ ]] || swallow_die "walltime '$1': expected HH:MM:SS or seconds"
    echo $(( ((10#$days * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$s ))
}

# swallow_init SCHEDULER JOB_ID: site modules (SWALLOW_MODULES), the layout, rank counts, run
# directory and per-job log (everything the job prints from here on also goes to
# $SWALLOW_RUN_DIR/logs/JOB_ID.log), and the environment.
swallow_init() {
    SWALLOW_JOB=$2
    if [ -n "${SWALLOW_MODULES:-}" ]; then
        local modules=()
        read -r -a modules <<< "$SWALLOW_MODULES"
        # shellcheck source=/dev/null
        type module > /dev/null 2>&1 || source /etc/profile.d/modules.sh
        module load "${modules[@]}"
    fi
    : "${SWALLOW_LAYOUT:?set SWALLOW_LAYOUT to a layout of jobscripts/layouts, e.g. swallow-7b}"
    : "${SWALLOW_DATA:?set SWALLOW_DATA to the training data spec (a shard prefix, a blend or a mix .toml)}"
    swallow_layout "$SWALLOW_LAYOUT"
    # The rank count: the layout's GPUs, or SWALLOW_RANKS for a scaled-down (dry) run.
    SWALLOW_NP=${SWALLOW_RANKS:-$SWALLOW_GPUS}
    SWALLOW_PER_NODE=$(swallow_gpus_per_node "$1")
    SWALLOW_GPU=$(swallow_gpu_kind "$1")
    swallow_check_tp "$SWALLOW_PER_NODE"
    (( SWALLOW_NP % (SWALLOW_TP * SWALLOW_PP) == 0 )) ||
        swallow_die "$SWALLOW_NP ranks do not divide into tp $SWALLOW_TP x pp $SWALLOW_PP"
    SWALLOW_NODES=$(( (SWALLOW_NP + SWALLOW_PER_NODE - 1) / SWALLOW_PER_NODE ))
    SWALLOW_RUN_DIR=${SWALLOW_RUN_DIR:-$SWALLOW_HOME/runs/$SWALLOW_LAYOUT}
    SWALLOW_LOG=$SWALLOW_RUN_DIR/logs/$SWALLOW_JOB.log
    mkdir -p "$SWALLOW_RUN_DIR/logs" || swallow_die "cannot create $SWALLOW_RUN_DIR/logs"
    exec > >(tee -a "$SWALLOW_LOG") 2>&1
    if [ -z "${SWALLOW_BIN:-}" ]; then
        SWALLOW_BIN=$SWALLOW_HOME/target/release/swallow
        [ -x "$SWALLOW_BIN" ] || SWALLOW_BIN=$(command -v swallow) || swallow_die "no swallow binary: build it (cargo build --release) or set SWALLOW_BIN"
    fi
    swallow_say "job $SWALLOW_JOB: layout $SWALLOW_LAYOUT (config $SWALLOW_CONFIG, tp $SWALLOW_TP x pp $SWALLOW_PP x dp $(( SWALLOW_NP / (SWALLOW_TP * SWALLOW_PP) )) = $SWALLOW_NP ranks on $SWALLOW_NODES nodes of $SWALLOW_PER_NODE GPUs); log $SWALLOW_LOG"
    swallow_network_env
    # One hardware work queue per GPU: kernels start in the order they were issued across
    # streams, so a collective issued to a side stream (the TP input-gradient reduction, a DP
    # bucket) gets its SMs before the GEMMs issued after it take them all (Megatron-LM asks for
    # the same setting for the same reason).
    export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
    # CPU threads per rank (the CPU backend's rayon pool): the node's cores shared by its ranks.
    SWALLOW_CPUS_PER_RANK=$(( $(nproc) / SWALLOW_PER_NODE ))
    export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-$(( SWALLOW_CPUS_PER_RANK > 0 ? SWALLOW_CPUS_PER_RANK : 1 ))}
}

# NCCL and UCX for InfiniBand NDR H100/H200 nodes (ConnectX-7, one HCA per GPU or per GPU pair);
# every value can be overridden by exporting it before submitting.
swallow_network_env() {
    # NCCL data traffic on the InfiniBand HCAs: "mlx5" matches every mlx5_* port; list them
    # (e.g. mlx5_0,mlx5_1,...) or exclude one (^mlx5_bond_0) where a storage/Ethernet HCA shares the prefix.
    export NCCL_IB_HCA=${NCCL_IB_HCA:-mlx5}
    # NCCL's bootstrap and TCP fallback: any interface but loopback and container bridges.
    export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-^lo,docker}
    # Larger IB retry timeout (4.096 us x 2^22 ~ 17 s): fewer spurious failures at 256+ GPUs.
    export NCCL_IB_TIMEOUT=${NCCL_IB_TIMEOUT:-22}
    # Warnings only; set NCCL_DEBUG=INFO once to see the rings/trees and the HCAs chosen.
    export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
    # CUDA-aware OpenMPI over UCX (pml ucx, chosen by OpenMPI itself on IB nodes): RC verbs between
    # nodes, shared memory and CUDA IPC within a node, GDRCopy for small device buffers (drop
    # gdr_copy where the site has no GDRCopy module).
    export UCX_TLS=${UCX_TLS:-rc,sm,self,cuda_copy,cuda_ipc,gdr_copy}
}

# swallow_hostfile: reads host names on stdin (the first word of each line, repeats allowed:
# PBS_NODEFILE, PE_HOSTFILE, a Slurm node list, a plain list), writes the job's OpenMPI hostfile
# (each host with SWALLOW_PER_NODE slots, in first-seen order) to SWALLOW_HOSTFILE and checks
# that the allocation holds the layout.
swallow_hostfile() {
    SWALLOW_HOSTFILE=$SWALLOW_RUN_DIR/logs/$SWALLOW_JOB.hosts
    awk -v slots="$SWALLOW_PER_NODE" 'NF && !seen[$1]++ { print $1 " slots=" slots }' > "$SWALLOW_HOSTFILE"
    local nodes
    nodes=$(wc -l < "$SWALLOW_HOSTFILE")
    (( nodes >= SWALLOW_NODES )) ||
        swallow_die "layout $SWALLOW_LAYOUT needs $SWALLOW_NP GPUs = $SWALLOW_NODES nodes x $SWALLOW_PER_NODE, but the job has $nodes node(s) ($SWALLOW_HOSTFILE); submit with jobscripts/submit.sh"
    (( nodes == SWALLOW_NODES )) || swallow_say "note: $nodes nodes allocated, the layout uses the first $SWALLOW_NODES"
}

# The rank's command: bound to its node-local GPU, then `swallow train` (fills SWALLOW_CMD).
# Checkpoints: --load auto resumes from the newest one in the save directory; while it has none,
# SWALLOW_INIT (e.g. the `swallow import` of the base model) is loaded instead.
swallow_train_command() {
    local save=${SWALLOW_SAVE:-$SWALLOW_RUN_DIR/checkpoints} load=auto extra=()
    read -r -a extra <<< "${SWALLOW_TRAIN_ARGS:-}"
    if [ -n "${SWALLOW_INIT:-}" ] && ! compgen -G "$save/step-*.h5" > /dev/null; then
        load=$SWALLOW_INIT
        swallow_say "no checkpoint in $save yet: starting from $SWALLOW_INIT"
    fi
    SWALLOW_CMD=("$SWALLOW_HOME/jobscripts/lib/bind-gpu.sh" "$SWALLOW_BIN" train
        --config "$SWALLOW_CONFIG" --tp "$SWALLOW_TP" --pp "$SWALLOW_PP"
        --data "$SWALLOW_DATA" --device "${SWALLOW_DEVICE:-cuda}" --gpu "$SWALLOW_GPU"
        --save "$save" --save-every "${SWALLOW_SAVE_EVERY:-500}" --load "$load"
        --metrics "$SWALLOW_RUN_DIR/metrics.jsonl")
    [ -z "${SWALLOW_VPP:-}" ] || SWALLOW_CMD+=(--vpp "$SWALLOW_VPP")
    if [ "${SWALLOW_DRY_RUN:-0}" = 1 ]; then
        SWALLOW_CMD+=(--dry-run)
    fi
    SWALLOW_CMD+=("${extra[@]}")
}

# The OpenMPI launcher over SWALLOW_HOSTFILE (fills SWALLOW_LAUNCH): one rank per GPU, ranks
# packed node by node (Megatron's order puts TP peers on one node), each bound to its share of the
# node's cores (consecutive, so ranks 0-3 sit on the socket of GPUs 0-3), the environment exported.
swallow_mpirun_command() {
    local map="ppr:$SWALLOW_PER_NODE:node" bind=none vars=() extra=() v
    if (( SWALLOW_CPUS_PER_RANK > 0 )); then
        map+=":PE=$SWALLOW_CPUS_PER_RANK"
        bind=core
    fi
    for v in $(compgen -e); do
        case $v in
            NCCL_* | UCX_* | CUDA_DEVICE_MAX_CONNECTIONS | SWALLOW_* | RAYON_* | OMP_* | HDF5_* | RUST_* | PATH | LD_LIBRARY_PATH) vars+=(-x "$v") ;;
        esac
    done
    read -r -a extra <<< "${SWALLOW_MPIRUN_ARGS:-}"
    SWALLOW_LAUNCH=(mpirun -np "$SWALLOW_NP" --hostfile "$SWALLOW_HOSTFILE" --map-by "$map" --bind-to "$bind"
        "${vars[@]}" "${extra[@]}" "${SWALLOW_CMD[@]}")
}

swallow_forward() {
    swallow_say "$1 received: asking every rank to save a checkpoint at the next step boundary and stop"
    kill -USR1 "$SWALLOW_LAUNCHER_PID" 2>/dev/null || true
}

# swallow_launch WALLTIME_SECONDS (empty: no timer): runs SWALLOW_LAUNCH, forwarding SIGUSR1/SIGTERM as SIGUSR1;
# with a walltime, a timer sends this script SIGUSR1 SWALLOW_SAVE_MARGIN seconds (600) before it.
# Returns the launcher's exit code.
swallow_launch() {
    local limit=$1 margin=${SWALLOW_SAVE_MARGIN:-600} timer='' rc=0
    swallow_say "launching: ${SWALLOW_LAUNCH[*]}"
    "${SWALLOW_LAUNCH[@]}" &
    SWALLOW_LAUNCHER_PID=$!
    trap 'swallow_forward SIGUSR1' USR1
    trap 'swallow_forward SIGTERM' TERM
    if [ -n "$limit" ]; then
        local delay=$(( limit - margin ))
        (( delay > 0 )) || delay=1
        swallow_say "walltime $limit s: checkpoint-and-stop signal in $delay s"
        # The sleep is killed with the timer, so nothing outlives the job script.
        ( trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM; sleep "$delay" & sleeper=$!; wait "$sleeper" && kill -USR1 "$$" ) &
        timer=$!
    fi
    # `wait` returns early when a trapped signal arrives: wait again until the launcher has ended.
    while :; do
        if wait "$SWALLOW_LAUNCHER_PID"; then rc=0; else rc=$?; fi
        kill -0 "$SWALLOW_LAUNCHER_PID" 2>/dev/null || break
    done
    if [ -n "$timer" ]; then
        kill "$timer" 2>/dev/null || true
    fi
    trap - USR1 TERM
    swallow_say "finished with exit code $rc"
    return "$rc"
}
