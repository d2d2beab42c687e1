#!/usr/bin/env bash
# The device runtime's GPU check, for a GPU machine without a Rust toolchain: runs the kernel
# conformance test binary built elsewhere (`make gpu-conformance-bin` -> out/gpu/kernel_conformance,
# which links only libc/libstdc++) with SWALLOW_CONFORMANCE_DEVICE=cuda, i.e. every kernel and
# the cuBLASLt GEMM on CUDA device 0 against the CPU backend.
#
# It finds what the binary opens at run time and says which files it uses:
# - NVRTC: $SWALLOW_NVRTC, else the CUDA toolkit's ($CUDA_HOME or /usr/local/cuda; libnvrtc.so.13
#   on CUDA 13), else PyTorch's CUDA wheel (site-packages/nvidia/cu13/lib), else the 12.9 wheel of
#   `make kernels` (out/cuda-tools);
# - cuda_bf16.h: $SWALLOW_CUDA_INCLUDE, else the toolkit's include/, else those wheels';
# - cuBLASLt: $SWALLOW_CUBLASLT_FILE, else libcublasLt.so.* inside python3's site-packages (PyTorch's
#   nvidia-cublas wheel).
# The binary's cudarc looks libraries up by CUDA 12 names, the unversioned name first
# (libnvrtc.so, libcublasLt.so), so a directory of unversioned links to the files found is put
# first on LD_LIBRARY_PATH: that is how a CUDA 13 libnvrtc.so.13 / libcublasLt.so.13 is used.
# Usage: scripts/gpu_conformance.sh [TEST FILTER ...]   ($SWALLOW_CONFORMANCE_BIN: another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SWALLOW_CONFORMANCE_BIN:-out/gpu/kernel_conformance}
[ -x "$bin" ] || { echo "error: $bin is not an executable (build it with make gpu-conformance-bin)" >&2; exit 1; }
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
include_at+=(out/cuda-tools/lib/python3*/site-packages/nvidia/cuda_runtime/include/cuda_bf16.h)

nvrtc=${SWALLOW_NVRTC:-$(first "${nvrtc_at[@]}")}
if [ -d "$nvrtc" ]; then nvrtc=$(first "$nvrtc"/libnvrtc.so.1[0-9]); fi
[ -n "$nvrtc" ] || { echo "error: no libnvrtc in $cuda_home/lib64, python3's site-packages nor out/cuda-tools (set SWALLOW_NVRTC)" >&2; exit 1; }
include=${SWALLOW_CUDA_INCLUDE:-$(dirname "$(first "${include_at[@]}")")}
[ -f "$include/cuda_bf16.h" ] || { echo "error: no cuda_bf16.h (set SWALLOW_CUDA_INCLUDE)" >&2; exit 1; }
cublaslt=${SWALLOW_CUBLASLT_FILE:-$(first "${cublaslt_at[@]}")}
[ -n "$cublaslt" ] || { echo "error: no libcublasLt.so.* in python3's site-packages (set SWALLOW_CUBLASLT_FILE)" >&2; exit 1; }

shim=$(mktemp -d)
cache=$(mktemp -d)
trap 'rm -rf "$shim" "$cache"' EXIT
ln -s "$(realpath "$nvrtc")" "$shim/libnvrtc.so"
ln -s "$(realpath "$cublaslt")" "$shim/libcublasLt.so"
echo "gpu_conformance: binary $bin"
echo "gpu_conformance: NVRTC $nvrtc, headers $include, cuBLASLt $cublaslt"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
libdirs="$(dirname "$(realpath "$nvrtc")"):$(dirname "$(realpath "$cublaslt")")"
export LD_LIBRARY_PATH="$shim:$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SWALLOW_CONFORMANCE_DEVICE=cuda SWALLOW_CUDA_INCLUDE="$include" SWALLOW_KERNEL_CACHE="$cache" \
    "$bin" --test-threads 1 "$@"
