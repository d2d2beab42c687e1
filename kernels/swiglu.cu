// SwiGLU over bf16 buffers: forward out = silu(gate) * up; backward overwrites
// dgate = dout * up * silu'(gate) and dup = dout * silu(gate). One thread per 8 elements,
// 16-byte vector accesses when every buffer is aligned, scalar at the tail.
#include "common.cuh"

__device__ __forceinline__ float sigmoidf(float g) { return 1.0f / (1.0f + __expf(-g)); }

extern "C" __global__ void swiglu_fwd(bf16* __restrict__ out, const bf16* __restrict__ gate,
                                      const bf16* __restrict__ up, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i0 >= n) return;
    if (i0 + 8 <= n && aligned16(out) && aligned16(gate) && aligned16(up)) {
        float g[8], u[8];
        load8(gate + i0, g);
        load8(up + i0, u);
        for (int k = 0; k < 8; k++) g[k] = g[k] * sigmoidf(g[k]) * u[k];
        store8(out + i0, g);
    } else {
        for (u64 i = i0; i < n && i < i0 + 8; i++) {
            const float g = bf2f(gate[i]);
            out[i] = f2bf(g * sigmoidf(g) * bf2f(up[i]));
        }
    }
}

__device__ __forceinline__ void swiglu_grad(float d, float g, float u, float& dg, float& du) {
    const float s = sigmoidf(g), silu = g * s;
    du = d * silu;
    dg = d * u * (s + silu * (1.0f - s));
}

extern "C" __global__ void swiglu_bwd(bf16* __restrict__ dgate, bf16* __restrict__ dup,
                                      const bf16* __restrict__ dout, const bf16* __restrict__ gate,
                                      const bf16* __restrict__ up, u64 n) {
    const u64 i0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i0 >= n) return;
    if (i0 + 8 <= n && aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) &&
        aligned16(up)) {
        float d[8], g[8], u[8], dg[8], du[8];
        load8(dout + i0, d);
        load8(gate + i0, g);
        load8(up + i0, u);
        for (int k = 0; k < 8; k++) swiglu_grad(d[k], g[k], u[k], dg[k], du[k]);
        store8(dgate + i0, dg);
        store8(dup + i0, du);
    } else {
        for (u64 i = i0; i < n && i < i0 + 8; i++) {
            float dg, du;
            swiglu_grad(bf2f(dout[i]), bf2f(gate[i]), bf2f(up[i]), dg, du);
            dgate[i] = f2bf(dg);
            dup[i] = f2bf(du);
        }
    }
}
