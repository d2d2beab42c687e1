#!/usr/bin/env bash
# The GPU check (issue 7), for a bare x86-64 GPU machine without a Rust toolchain, MPI or HDF5:
# runs the two binaries `make gpu-check-bin` built elsewhere into out/gpu/ (both link only
# libc/libstdc++ and open CUDA at run time):
#   1. kernel_conformance with SWALLOW_CONFORMANCE_DEVICE=cuda: every kernel and the cuBLASLt
#      GEMM on the GPU against the CPU backend;
#   2. swallow-gpu-bench --compare-cpu: the tiny model (2 layers, 2 heads of 64) trained 2 steps
#      on the GPU and on the CPU backend, losses and gradient norms within the bf16 tolerances;
#   3. swallow-gpu-bench: Llama-2-7B-shaped layers at seq 4096, TP 1, as many as fit, trained
#      through the CUDA backend: tokens/s, TFLOP/s, MFU, each kernel's share, a closing table.
# Logs go to $OUT (when set) or out/gpu/logs; the summary table ends the output.
# Each stage runs under a time limit (seconds; SWALLOW_GPU_CHECK_LIMITS="conformance equivalence
# bench", default "150 90 210": 7.5 minutes in all), so that a hung kernel or collective costs
# one stage, not the machine's whole lease, and the summary still prints.
#
# It finds what the binaries open at run time and says which files it uses:
# - NVRTC: $SWALLOW_NVRTC, else the CUDA toolkit's ($CUDA_HOME or /usr/local/cuda; libnvrtc.so.13
#   on CUDA 13), else PyTorch's CUDA wheel (site-packages/nvidia/cu13/lib), else the 12.9 wheel of
#   `make kernels` (out/cuda-tools);
# - cuda_bf16.h: $SWALLOW_CUDA_INCLUDE, else the toolkit's include/, else those wheels';
# - cuBLASLt: $SWALLOW_CUBLASLT_FILE, else libcublasLt.so.* inside python3's site-packages (PyTorch's
#   nvidia-cublas wheel).
# The binaries' cudarc looks libraries up by CUDA 12 names, the unversioned name first
# (libnvrtc.so, libcublasLt.so), so a directory of unversioned links to the files found is put
# first on LD_LIBRARY_PATH: that is how a CUDA 13 libnvrtc.so.13 / libcublasLt.so.13 is used.
# Usage: scripts/gpu-check.sh [conformance|equivalence|bench|all] [ARGS for that binary ...]
# (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
case "$stage" in conformance|equivalence|bench|all) shift || true ;; *) echo "error: stage $stage: expected conformance, equivalence, bench or all" >&2; exit 2 ;; esac
if [ "$stage" = all ] && [ $# -gt 0 ]; then
    echo "error: arguments go to one binary: name its stage (conformance TEST-FILTER..., bench --layers N ...)" >&2
    exit 2
fi
for bin in out/gpu/kernel_conformance out/gpu/swallow-gpu-bench; do
    [ -x "$bin" ] || { echo "error: $bin is not an executable (build it with make gpu-check-bin)" >&2; exit 1; }
done
logs=${OUT:-out/gpu/logs}
mkdir -p "$logs"
cuda_home=${CUDA_HOME:-/usr/local/cuda}
# The first of its arguments (glob results) that exists.
first() { local f; for f in "$@"; do if [ -e "$f" ]; then echo "$f"; return; fi; done; }

# Candidates in order of preference: the toolkit, PyTorch's CUDA wheels, the wheels of `make kernels`.
mapfile -t sites < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null || true)
nvrtc_at=("$cuda_home"/lib64/libnvrtc.so.1[0-9])
include_at=("$cuda_home"/include/cuda_bf16.h)
cublaslt_at=()
for sp in "${sites[@]}"; do
    nvrtc_at+=("$sp"/nvidia/cu1[0-9]/lib/libnvrtc.so.1[0-9])
    include_at+=("$sp"/nvidia/cu1[0-9]/include/cuda_bf16.h)
    cublaslt_at+=("$sp"/nvidia/cu1[0-9]/lib/libcublasLt.so.1[0-9] "$sp"/nvidia/cublas/lib/libcublasLt.so.1[0-9])
done
nvrtc_at+=(out/cuda-tools/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12)
cublaslt_at+=("$cuda_home"/lib64/libcublasLt.so.1[0-9])
include_at+=(out/cuda-tools/lib/python3*/site-packages/nvidia/cuda_runtime/include/cuda_bf16.h)

nvrtc=${SWALLOW_NVRTC:-$(first "${nvrtc_at[@]}")}
if [ -d "$nvrtc" ]; then nvrtc=$(first "$nvrtc"/libnvrtc.so.1[0-9]); fi
[ -n "$nvrtc" ] || { echo "error: no libnvrtc in $cuda_home/lib64, python3's site-packages nor out/cuda-tools (set SWALLOW_NVRTC)" >&2; exit 1; }
include=${SWALLOW_CUDA_INCLUDE:-$(dirname "$(first "${include_at[@]}")")}
[ -f "$include/cuda_bf16.h" ] || { echo "error: no cuda_bf16.h (set SWALLOW_CUDA_INCLUDE)" >&2; exit 1; }
cublaslt=${SWALLOW_CUBLASLT_FILE:-$(first "${cublaslt_at[@]}")}
[ -n "$cublaslt" ] || { echo "error: no libcublasLt.so.* in python3's site-packages nor $cuda_home/lib64 (set SWALLOW_CUBLASLT_FILE)" >&2; exit 1; }

shim=$(mktemp -d)
cache=$(mktemp -d)
trap 'rm -rf "$shim" "$cache"' EXIT
ln -s "$(realpath "$nvrtc")" "$shim/libnvrtc.so"
ln -s "$(realpath "$cublaslt")" "$shim/libcublasLt.so"
echo "gpu-check: NVRTC $nvrtc, headers $include, cuBLASLt $cublaslt, logs in $logs"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt" || true
fi
libdirs="$(dirname "$(realpath "$nvrtc")"):$(dirname "$(realpath "$cublaslt")")"
export LD_LIBRARY_PATH="$shim:$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# One kernel cache for both binaries: the bench reuses what the conformance run compiled.
export SWALLOW_CUDA_INCLUDE="$include" SWALLOW_KERNEL_CACHE="$cache"
read -r limit_conformance limit_equivalence limit_bench <<<"${SWALLOW_GPU_CHECK_LIMITS:-150 90 210}"
for l in "$limit_conformance" "$limit_equivalence" "$limit_bench"; do
    [[ "$l" =~ ^[0-9]+$ ]] || { echo "error: SWALLOW_GPU_CHECK_LIMITS=\"${SWALLOW_GPU_CHECK_LIMITS:-}\": expected three whole numbers of seconds" >&2; exit 2; }
done
# Runs a stage's command under `limit` seconds (then TERM, and KILL 10 s later), its output also
# in `log`; returns its exit status (124 or 137: stopped at the limit).
limited() {
    local limit=$1 log=$2
    shift 2
    set +e
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}
# Why a stage failed: stopped at its limit, or its exit status.
failure() {
    case $1 in 124|137) echo "TIMED OUT after $2 s" ;; *) echo "FAILED (exit $1)" ;; esac
}
status=0 summary=()
if [ "$stage" = all ] || [ "$stage" = conformance ]; then
    echo "== kernel conformance on the GPU (limit ${limit_conformance} s)"
    # Synchronous launches: a faulting kernel is named by its own test, not by a later copy.
    if SWALLOW_CUDA_SYNC=1 SWALLOW_CONFORMANCE_DEVICE=cuda limited "$limit_conformance" "$logs/conformance.log" out/gpu/kernel_conformance --test-threads 1 "$@"; then
        summary+=("conformance: passed")
    else
        rc=$? status=1
        summary+=("conformance: $(failure $rc "$limit_conformance") ($(grep -c '\.\.\. FAILED' "$logs/conformance.log" || true) tests failed; $logs/conformance.log)")
    fi
fi
if [ "$stage" = all ] || [ "$stage" = equivalence ]; then
    echo "== the tiny model on the GPU against the CPU backend (limit ${limit_equivalence} s)"
    tiny=(--compare-cpu --config tiny --layers 2 --seq 32 --micro-batch 2 --accumulation 2 --steps 2
          --set model.num_heads=2 --set model.num_kv_heads=1 --set train.lr=1e-2 --set train.warmup_steps=1)
    if limited "$limit_equivalence" "$logs/equivalence.log" out/gpu/swallow-gpu-bench "${tiny[@]}" "$@"; then
        summary+=("equivalence: $(tail -n 1 "$logs/equivalence.log")")
    else
        rc=$? status=1
        summary+=("equivalence: $(failure $rc "$limit_equivalence") ($logs/equivalence.log)")
    fi
fi
if [ "$stage" = all ] || [ "$stage" = bench ]; then
    echo "== training benchmark (limit ${limit_bench} s)"
    if limited "$limit_bench" "$logs/bench.log" out/gpu/swallow-gpu-bench "$@"; then
        summary+=("benchmark: done (table above; $logs/bench.log)")
    else
        rc=$? status=1
        summary+=("benchmark: $(failure $rc "$limit_bench") ($logs/bench.log)")
    fi
fi
printf 'gpu-check: %s\n' "${summary[@]}"
exit $status
