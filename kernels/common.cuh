// Shared helpers for every kernel file: the bf16 type and conversions, 16-byte vector loads
// and stores of 8 bf16 values, warp and block reductions, and the dynamic shared memory macro.
// Compiles under NVRTC (real GPUs) and under g++ with kernels/emu/cuda_emu.h (tests on CPU).
#pragma once

#ifndef SWALLOW_EMU
#include <cuda_bf16.h>
#define SW_DYN_SMEM(type, name) extern __shared__ __align__(16) unsigned char sw_dyn_smem_[]; \
    type* name = reinterpret_cast<type*>(sw_dyn_smem_)
#else
#define SW_DYN_SMEM(type, name) type* name = reinterpret_cast<type*>(::emu::L().dyn_smem.data())
#endif

typedef __nv_bfloat16 bf16;
typedef unsigned long long u64;

#define SW_NEG_INF (-__int_as_float(0x7f800000))
#define SW_FULL_MASK 0xffffffffu

__device__ __forceinline__ float bf2f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ bf16 f2bf(float v) { return __float2bfloat16_rn(v); }

// True when `p` may be read or written with 16-byte vector accesses.
__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<u64>(p) & 15ull) == 0;
}

// 8 consecutive bf16 values through one 16-byte access (`p` must be 16-byte aligned).
__device__ __forceinline__ void load8(const bf16* p, float out[8]) {
    uint4 raw = *reinterpret_cast<const uint4*>(p);
    const bf16* h = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; i++) out[i] = bf2f(h[i]);
}
__device__ __forceinline__ void store8(bf16* p, const float in[8]) {
    uint4 raw;
    bf16* h = reinterpret_cast<bf16*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; i++) h[i] = f2bf(in[i]);
    *reinterpret_cast<uint4*>(p) = raw;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SW_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SW_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(SW_FULL_MASK, v, o));
    return v;
}

// Sum over a block whose size is a multiple of 32 (at most 1024); every thread gets the
// result. `scratch` is 32 floats of shared memory, reusable after the call.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// Online softmax statistics: running max `m` and sum of exp(x - m) `s`.
struct MaxSum {
    float m, s;
};
__device__ __forceinline__ MaxSum maxsum_merge(MaxSum a, MaxSum b) {
    float m = fmaxf(a.m, b.m);
    if (m == SW_NEG_INF) return a;
    return MaxSum{m, a.s * __expf(a.m - m) + b.s * __expf(b.m - m)};
}
__device__ __forceinline__ MaxSum warp_maxsum(MaxSum v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        MaxSum w{__shfl_xor_sync(SW_FULL_MASK, v.m, o), __shfl_xor_sync(SW_FULL_MASK, v.s, o)};
        v = maxsum_merge(v, w);
    }
    return v;
}

// Multi-tensor launches: tensor i of a table covers blocks [segs[i].block0, segs[i+1].block0).
// Returns the segment of block `b` (segments sorted by block0, the first at 0).
template <class Seg>
__device__ __forceinline__ int find_segment(const Seg* segs, int nseg, u64 b) {
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (segs[mid].block0 <= b) lo = mid; else hi = mid - 1;
    }
    return lo;
}
