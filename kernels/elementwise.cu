// The backend's small elementwise ops: `dst += src` and `x *= s` for bf16 activations and fp32
// gradients/statistics, and byte-wise zero fill and copy (any dtype). One thread per 16 bytes of
// the output (8 bf16, 4 fp32, 16 bytes), one 16-byte vector access per buffer when the chunk
// is whole and every buffer is 16-byte aligned, element by element otherwise (the tail).
// Arithmetic in fp32, rounded once to the stored type (nearest even), as the CPU backend's f32
// arithmetic followed by one rounding.
#include "common.cuh"

// 4 consecutive floats through one 16-byte access (`p` must be 16-byte aligned).
__device__ __forceinline__ void load4f(const float* p, float out[4]) {
    uint4 raw = *reinterpret_cast<const uint4*>(p);
    const float* f = reinterpret_cast<const float*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) out[i] = f[i];
}
__device__ __forceinline__ void store4f(float* p, const float in[4]) {
    uint4 raw;
    float* f = reinterpret_cast<float*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) f[i] = in[i];
    *reinterpret_cast<uint4*>(p) = raw;
}

extern "C" __global__ void add_assign_bf16(bf16* __restrict__ dst, const bf16* __restrict__ src, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i0 >= n) return;
    if (i0 + 8 <= n && aligned16(dst) && aligned16(src)) {
        float d[8], s[8];
        load8(dst + i0, d);
        load8(src + i0, s);
        for (int k = 0; k < 8; k++) d[k] += s[k];
        store8(dst + i0, d);
    } else {
        for (u64 i = i0; i < n && i < i0 + 8; i++) dst[i] = f2bf(bf2f(dst[i]) + bf2f(src[i]));
    }
}

extern "C" __global__ void add_assign_f32(float* __restrict__ dst, const float* __restrict__ src, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i0 >= n) return;
    if (i0 + 4 <= n && aligned16(dst) && aligned16(src)) {
        float d[4], s[4];
        load4f(dst + i0, d);
        load4f(src + i0, s);
        for (int k = 0; k < 4; k++) d[k] += s[k];
        store4f(dst + i0, d);
    } else {
        for (u64 i = i0; i < n && i < i0 + 4; i++) dst[i] += src[i];
    }
}

extern "C" __global__ void scale_bf16(bf16* __restrict__ x, float s, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i0 >= n) return;
    if (i0 + 8 <= n && aligned16(x)) {
        float v[8];
        load8(x + i0, v);
        for (int k = 0; k < 8; k++) v[k] *= s;
        store8(x + i0, v);
    } else {
        for (u64 i = i0; i < n && i < i0 + 8; i++) x[i] = f2bf(bf2f(x[i]) * s);
    }
}

extern "C" __global__ void scale_f32(float* __restrict__ x, float s, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i0 >= n) return;
    if (i0 + 4 <= n && aligned16(x)) {
        float v[4];
        load4f(x + i0, v);
        for (int k = 0; k < 4; k++) v[k] *= s;
        store4f(x + i0, v);
    } else {
        for (u64 i = i0; i < n && i < i0 + 4; i++) x[i] *= s;
    }
}

// `bytes` zero bytes at `dst` (all-zero bits are +0 in bf16 and fp32 alike).
extern "C" __global__ void fill_zero_bytes(unsigned char* __restrict__ dst, u64 bytes) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 16;
    if (i0 >= bytes) return;
    if (i0 + 16 <= bytes && aligned16(dst)) {
        *reinterpret_cast<uint4*>(dst + i0) = uint4{0u, 0u, 0u, 0u};
    } else {
        for (u64 i = i0; i < bytes && i < i0 + 16; i++) dst[i] = 0;
    }
}

// `bytes` bytes from `src` to `dst` (distinct buffers).
extern "C" __global__ void copy_bytes(unsigned char* __restrict__ dst, const unsigned char* __restrict__ src, u64 bytes) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 16;
    if (i0 >= bytes) return;
    if (i0 + 16 <= bytes && aligned16(dst) && aligned16(src)) {
        *reinterpret_cast<uint4*>(dst + i0) = *reinterpret_cast<const uint4*>(src + i0);
    } else {
        for (u64 i = i0; i < bytes && i < i0 + 16; i++) dst[i] = src[i];
    }
}
