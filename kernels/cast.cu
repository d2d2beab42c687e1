// Casts between fp32 and bf16 (round to nearest even), one thread per 8 elements with
// 16-byte bf16 accesses when aligned.
#include "common.cuh"

extern "C" __global__ void cast_f32_to_bf16(bf16* __restrict__ out, const float* __restrict__ in, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i0 >= n) return;
    if (i0 + 8 <= n && aligned16(out)) {
        float v[8];
        for (int k = 0; k < 8; k++) v[k] = in[i0 + k];
        store8(out + i0, v);
    } else {
        for (u64 i = i0; i < n && i < i0 + 8; i++) out[i] = f2bf(in[i]);
    }
}

extern "C" __global__ void cast_bf16_to_f32(float* __restrict__ out, const bf16* __restrict__ in, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i0 >= n) return;
    if (i0 + 8 <= n && aligned16(in)) {
        float v[8];
        load8(in + i0, v);
        for (int k = 0; k < 8; k++) out[i0 + k] = v[k];
    } else {
        for (u64 i = i0; i < n && i < i0 + 8; i++) out[i] = bf2f(in[i]);
    }
}
