// RMSNorm (HF LlamaRMSNorm) forward and backward over [rows, dim] bf16 activations with fp32
// statistics: rstd = 1/sqrt(mean(x^2) + eps), out = (x * rstd) * w, optionally fused with the
// residual add that precedes it in a Llama block. One warp per row.
// Backward accumulates dx (bf16) and dw (fp32) deterministically: each block owns a fixed
// range of rows and writes its dw partial sums, then rmsnorm_dw_reduce adds the partials in
// block order (no float atomics, same result on every run).
#include "common.cuh"

// One warp normalises row `row` of `src`. With `res` (the fused residual add), it first writes
// src = x + res (bf16) and normalises that stored value, so the backward sees the same input.
__device__ __forceinline__ void rmsnorm_row(bf16* out, float* rstd, bf16* src, const bf16* x, const bf16* res,
                                            const bf16* w, int row, int dim, float eps) {
    const int lane = threadIdx.x & 31;
    const u64 off = (u64)row * dim;
    const bool vec = dim % 8 == 0 && aligned16(src) && aligned16(x) && aligned16(out) && aligned16(w) &&
                     (!res || aligned16(res));
    float ss = 0.0f;
    if (vec) {
        for (int c = lane * 8; c < dim; c += 256) {
            float v[8];
            load8(x + off + c, v);
            if (res) {
                float r[8];
                load8(res + off + c, r);
                for (int k = 0; k < 8; k++) v[k] = bf2f(f2bf(v[k] + r[k]));
                store8(src + off + c, v);
            }
            for (int k = 0; k < 8; k++) ss += v[k] * v[k];
        }
    } else {
        for (int c = lane; c < dim; c += 32) {
            float v = bf2f(x[off + c]);
            if (res) {
                v = bf2f(f2bf(v + bf2f(res[off + c])));
                src[off + c] = f2bf(v);
            }
            ss += v * v;
        }
    }
    const float r = rsqrtf(warp_sum(ss) / dim + eps);
    if (lane == 0) rstd[row] = r;
    if (vec) {
        for (int c = lane * 8; c < dim; c += 256) {
            float v[8], g[8];
            load8(src + off + c, v);
            load8(w + c, g);
            for (int k = 0; k < 8; k++) v[k] = (v[k] * r) * g[k];
            store8(out + off + c, v);
        }
    } else {
        for (int c = lane; c < dim; c += 32) out[off + c] = f2bf((bf2f(src[off + c]) * r) * bf2f(w[c]));
    }
}

extern "C" __global__ void rmsnorm_fwd(bf16* __restrict__ out, float* __restrict__ rstd, const bf16* x,
                                       const bf16* __restrict__ w, int rows, int dim, float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    rmsnorm_row(out, rstd, const_cast<bf16*>(x), x, nullptr, w, row, dim, eps);
}

// Fused residual add: residual_out = x + res (may alias x or res), out = RMSNorm(residual_out).
extern "C" __global__ void rmsnorm_residual_fwd(bf16* residual_out, bf16* __restrict__ out,
                                                float* __restrict__ rstd, const bf16* x, const bf16* res,
                                                const bf16* __restrict__ w, int rows, int dim, float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    rmsnorm_row(out, rstd, residual_out, x, res, w, row, dim, eps);
}

// Block b covers rows [b * rows_per_block, ...): warps accumulate dx row by row, then every
// thread owns columns and writes dw_part[b, col] = sum over the block's rows of dy * x * rstd.
extern "C" __global__ void rmsnorm_bwd(bf16* __restrict__ dx, float* __restrict__ dw_part,
                                       const bf16* __restrict__ dout, const bf16* __restrict__ x,
                                       const bf16* __restrict__ w, const float* __restrict__ rstd,
                                       int rows, int dim, int rows_per_block) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int r0 = blockIdx.x * rows_per_block;
    const int r1 = min(rows, r0 + rows_per_block);
    const bool vec = dim % 8 == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) && aligned16(w);
    for (int row = r0 + warp; row < r1; row += nwarps) {
        const u64 off = (u64)row * dim;
        const float r = rstd[row];
        // y = w x r  =>  dx = r w dy - (r^3 / dim) x sum(w dy x)
        float dot = 0.0f;
        if (vec) {
            for (int c = lane * 8; c < dim; c += 256) {
                float a[8], b[8], g[8];
                load8(dout + off + c, a);
                load8(x + off + c, b);
                load8(w + c, g);
                for (int k = 0; k < 8; k++) dot += a[k] * g[k] * b[k];
            }
        } else {
            for (int c = lane; c < dim; c += 32) dot += bf2f(dout[off + c]) * bf2f(w[c]) * bf2f(x[off + c]);
        }
        const float k3 = warp_sum(dot) * r * r * r / dim;
        if (vec) {
            for (int c = lane * 8; c < dim; c += 256) {
                float a[8], b[8], g[8], d[8];
                load8(dout + off + c, a);
                load8(x + off + c, b);
                load8(w + c, g);
                load8(dx + off + c, d);
                for (int k = 0; k < 8; k++) d[k] += r * (g[k] * a[k]) - k3 * b[k];
                store8(dx + off + c, d);
            }
        } else {
            for (int c = lane; c < dim; c += 32) {
                const float g = r * (bf2f(w[c]) * bf2f(dout[off + c])) - k3 * bf2f(x[off + c]);
                dx[off + c] = f2bf(bf2f(dx[off + c]) + g);
            }
        }
    }
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float acc = 0.0f;
        for (int row = r0; row < r1; row++) {
            const u64 off = (u64)row * dim + c;
            acc += bf2f(dout[off]) * bf2f(x[off]) * rstd[row];
        }
        dw_part[(u64)blockIdx.x * dim + c] = acc;
    }
}

// dw[c] += sum over p of dw_part[p, c], in p order.
extern "C" __global__ void rmsnorm_dw_reduce(float* __restrict__ dw, const float* __restrict__ dw_part,
                                             int parts, int dim) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    float acc = 0.0f;
    for (int p = 0; p < parts; p++) acc += dw_part[(u64)p * dim + c];
    dw[c] += acc;
}
