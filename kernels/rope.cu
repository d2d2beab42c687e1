// Rotary position embedding, HF Llama rotate-half convention, in place on bf16 [B, T, H, D]
// with fp32 [T, D/2] cos/sin tables (Llama 3 frequency scaling lives in the tables):
// forward x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin; backward is the transpose rotation.
// One thread per rotated pair (x[j], x[j + D/2]).
#include "common.cuh"

__device__ __forceinline__ void rope_rotate(bf16* x, const float* cos_t, const float* sin_t, int rows,
                                            int seq, int heads, int half, float sign) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (u64)rows * heads * half) return;
    const int j = (int)(i % half);
    const u64 rh = i / half;  // row * heads + head
    const int t = (int)((rh / heads) % seq);
    bf16* p = x + rh * 2 * half;
    const float a = bf2f(p[j]), b = bf2f(p[j + half]);
    const float c = cos_t[(u64)t * half + j], s = sign * sin_t[(u64)t * half + j];
    p[j] = f2bf(a * c - b * s);
    p[j + half] = f2bf(b * c + a * s);
}

extern "C" __global__ void rope_fwd(bf16* x, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                    int rows, int seq, int heads, int half) {
    rope_rotate(x, cos_t, sin_t, rows, seq, heads, half, 1.0f);
}

extern "C" __global__ void rope_bwd(bf16* dx, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                    int rows, int seq, int heads, int half) {
    rope_rotate(dx, cos_t, sin_t, rows, seq, heads, half, -1.0f);
}
