// Causal softmax attention with GQA, bf16 [B, T, H, D] queries / outputs and [B, T, Hkv, D]
// keys / values, fp32 statistics, scale 1/sqrt(D) passed in. First, reference-grade version:
// one warp per query row (lanes split the head dimension, D <= 32 * ATT_PER_LANE), online
// softmax over the keys, logsumexp [B, H, T] saved for the backward; no T x T buffer. The
// backward recomputes probabilities from lse: attention_bwd_dq (warp per query row, also saves
// D_i = dout_i . out_i) then attention_bwd_dkdv (warp per key row, summing over the queries
// and the query heads of its group in a fixed order: deterministic, no atomics).
// The tensor-core (mma.sync) flash version replaces these kernels later.
#include "common.cuh"

#define ATT_PER_LANE 8

struct AttDims {
    int batch, seq, heads, kv_heads, dim;
};

// Loads this lane's slice (columns lane, lane + 32, ...) of a bf16 row.
__device__ __forceinline__ void att_load(const bf16* row, int dim, float v[ATT_PER_LANE]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++) {
        const int c = lane + 32 * i;
        v[i] = c < dim ? bf2f(row[c]) : 0.0f;
    }
}
__device__ __forceinline__ void att_store(bf16* row, int dim, const float v[ATT_PER_LANE], float scale) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < dim) row[c] = f2bf(v[i] * scale);
    }
}
__device__ __forceinline__ float att_dot(const float a[ATT_PER_LANE], const float b[ATT_PER_LANE]) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++) s += a[i] * b[i];
    return warp_sum(s);
}
// Offset of row (b, t, head) in a [B, T, heads, D] tensor.
__device__ __forceinline__ u64 att_off(int b, int t, int head, int heads, const AttDims& d) {
    return (((u64)b * d.seq + t) * heads + head) * d.dim;
}

extern "C" __global__ void attention_fwd(bf16* __restrict__ out, float* __restrict__ lse,
                                         const bf16* __restrict__ q, const bf16* __restrict__ k,
                                         const bf16* __restrict__ v, int batch, int seq, int heads, int kv_heads, int dim, float scale) {
    const AttDims d{batch, seq, heads, kv_heads, dim};
    const u64 w = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (w >= (u64)d.batch * d.heads * d.seq) return;
    const int t = (int)(w % d.seq), h = (int)(w / d.seq % d.heads), b = (int)(w / d.seq / d.heads);
    const int g = h / (d.heads / d.kv_heads);
    float qv[ATT_PER_LANE], acc[ATT_PER_LANE], kv[ATT_PER_LANE];
    att_load(q + att_off(b, t, h, d.heads, d), d.dim, qv);
    for (int i = 0; i < ATT_PER_LANE; i++) acc[i] = 0.0f;
    float m = SW_NEG_INF, l = 0.0f;
    for (int j = 0; j <= t; j++) {
        att_load(k + att_off(b, j, g, d.kv_heads, d), d.dim, kv);
        const float s = att_dot(qv, kv) * scale;
        const float m1 = fmaxf(m, s), corr = __expf(m - m1), p = __expf(s - m1);
        l = l * corr + p;
        m = m1;
        att_load(v + att_off(b, j, g, d.kv_heads, d), d.dim, kv);
        for (int i = 0; i < ATT_PER_LANE; i++) acc[i] = acc[i] * corr + p * kv[i];
    }
    att_store(out + att_off(b, t, h, d.heads, d), d.dim, acc, 1.0f / l);
    if ((threadIdx.x & 31) == 0) lse[((u64)b * d.heads + h) * d.seq + t] = m + __logf(l);
}

// dq_i = scale * sum_j p_ij (dout_i . v_j - D_i) k_j; saves D_i = dout_i . out_i in dsum [B, H, T].
extern "C" __global__ void attention_bwd_dq(bf16* __restrict__ dq, float* __restrict__ dsum,
                                            const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                            const bf16* __restrict__ k, const bf16* __restrict__ v,
                                            const bf16* __restrict__ out, const float* __restrict__ lse,
                                            int batch, int seq, int heads, int kv_heads, int dim, float scale) {
    const AttDims d{batch, seq, heads, kv_heads, dim};
    const u64 w = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (w >= (u64)d.batch * d.heads * d.seq) return;
    const int t = (int)(w % d.seq), h = (int)(w / d.seq % d.heads), b = (int)(w / d.seq / d.heads);
    const int g = h / (d.heads / d.kv_heads);
    const u64 row = att_off(b, t, h, d.heads, d), stat = ((u64)b * d.heads + h) * d.seq + t;
    float qv[ATT_PER_LANE], dov[ATT_PER_LANE], x[ATT_PER_LANE], acc[ATT_PER_LANE];
    att_load(q + row, d.dim, qv);
    att_load(dout + row, d.dim, dov);
    att_load(out + row, d.dim, x);
    const float di = att_dot(dov, x), li = lse[stat];
    for (int i = 0; i < ATT_PER_LANE; i++) acc[i] = 0.0f;
    for (int j = 0; j <= t; j++) {
        att_load(k + att_off(b, j, g, d.kv_heads, d), d.dim, x);
        const float p = __expf(att_dot(qv, x) * scale - li);
        float vv[ATT_PER_LANE];
        att_load(v + att_off(b, j, g, d.kv_heads, d), d.dim, vv);
        const float ds = p * (att_dot(dov, vv) - di);
        for (int i = 0; i < ATT_PER_LANE; i++) acc[i] += ds * x[i];
    }
    att_store(dq + row, d.dim, acc, scale);
    if ((threadIdx.x & 31) == 0) dsum[stat] = di;
}

// For key row j of kv head g: dv_j = sum p_ij dout_i, dk_j = scale * sum p_ij (dout_i . v_j - D_i) q_i,
// over the group's query heads and the queries i >= j.
extern "C" __global__ void attention_bwd_dkdv(bf16* __restrict__ dk, bf16* __restrict__ dv,
                                              const float* __restrict__ dsum, const bf16* __restrict__ dout,
                                              const bf16* __restrict__ q, const bf16* __restrict__ k,
                                              const bf16* __restrict__ v, const float* __restrict__ lse,
                                              int batch, int seq, int heads, int kv_heads, int dim, float scale) {
    const AttDims d{batch, seq, heads, kv_heads, dim};
    const u64 w = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (w >= (u64)d.batch * d.kv_heads * d.seq) return;
    const int j = (int)(w % d.seq), g = (int)(w / d.seq % d.kv_heads), b = (int)(w / d.seq / d.kv_heads);
    const int group = d.heads / d.kv_heads;
    const u64 row = att_off(b, j, g, d.kv_heads, d);
    float kv[ATT_PER_LANE], vv[ATT_PER_LANE], dka[ATT_PER_LANE], dva[ATT_PER_LANE];
    att_load(k + row, d.dim, kv);
    att_load(v + row, d.dim, vv);
    for (int i = 0; i < ATT_PER_LANE; i++) dka[i] = dva[i] = 0.0f;
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int t = j; t < d.seq; t++) {
            const u64 qrow = att_off(b, t, h, d.heads, d), stat = ((u64)b * d.heads + h) * d.seq + t;
            float qv[ATT_PER_LANE], dov[ATT_PER_LANE];
            att_load(q + qrow, d.dim, qv);
            att_load(dout + qrow, d.dim, dov);
            const float p = __expf(att_dot(qv, kv) * scale - lse[stat]);
            const float ds = p * (att_dot(dov, vv) - dsum[stat]);
            for (int i = 0; i < ATT_PER_LANE; i++) {
                dva[i] += p * dov[i];
                dka[i] += ds * qv[i];
            }
        }
    }
    att_store(dv + row, d.dim, dva, 1.0f);
    att_store(dk + row, d.dim, dka, scale);
}
