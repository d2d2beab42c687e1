// Causal flash attention with GQA on tensor cores (mma.sync m16n8k16 bf16, fp32 accumulation,
// ldmatrix, cp.async; wrappers in mma.cuh). bf16 queries / outputs [B, T, H, D] and keys /
// values [B, T, Hkv, D], head dims 64 and 128 (template D, one entry point each), score scale
// 1/sqrt(D) passed in, fp32 logsumexp [B, H, T] saved by the forward. No T x T buffer: every
// kernel walks tiles at or below the diagonal; rows past T are zero-filled by cp.async and
// masked, so any T works. Blocks are 4 warps; a warp owns 16 rows of its block's tile and keeps
// them in mma fragments (the score tile's C fragments are reused, rounded to bf16, as the A
// fragments of the next product, as in FlashAttention-2). Shared-memory rows are padded by 16
// bytes so ldmatrix rows fall in distinct banks.
//
// Backward, deterministic (no atomics): flash_attn_bwd_dot saves D_i = dout_i . out_i;
// flash_attn_bwd_dkdv_* owns a 64-key tile of one kv head and loops over the group's query heads
// and the query tiles at or below the diagonal in a fixed order (dK, dV in registers);
// flash_attn_bwd_dq_* owns a 64-query tile and loops over its key tiles (dQ in registers).
// Probabilities are recomputed from lse in both.
#include "mma.cuh"

#define FA_THREADS 128
#define FA_LOG2E 1.4426950408889634f

// Rows [r0, r0 + ROWS) of one head of a [B, T, heads, D] tensor into a shared tile with row
// stride D + 8 (cp.async; rows >= T zero-filled). `base` points at row 0 of that batch and head.
template <int D, int ROWS>
__device__ __forceinline__ void fa_load_tile(bf16* s, const bf16* base, u64 row_stride, int r0, int T) {
    constexpr int CHUNKS = D / 8;
    for (int i = threadIdx.x; i < ROWS * CHUNKS; i += FA_THREADS) {
        const int r = i / CHUNKS, c = (i % CHUNKS) * 8;
        const bool ok = r0 + r < T;
        cp_async16(s + r * (D + 8) + c, base + (ok ? (u64)(r0 + r) * row_stride + c : 0), ok);
    }
}

// Lane addresses for ldmatrix_x4 on a row-major shared tile (stride LD) at (row0, col0):
// A operand (16 rows x 16 columns, registers a[0..3]).
template <int LD>
__device__ __forceinline__ const bf16* fa_a_rows(const bf16* s, int row0, int col0) {
    const int lane = threadIdx.x & 31;
    return s + (row0 + (lane & 15)) * LD + col0 + 8 * (lane >> 4);
}
// B operand of two n-tiles from a tile stored [n][k] (B = tile^T): rows n0..n0+15, k0..k0+15;
// registers {0, 1} are n-tile n0, {2, 3} n-tile n0 + 8.
template <int LD>
__device__ __forceinline__ const bf16* fa_bt_rows(const bf16* s, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    return s + (n0 + (lane & 7) + 8 * (lane >> 4)) * LD + k0 + 8 * ((lane >> 3) & 1);
}
// B operand of two n-tiles from a tile stored [k][n] (with ldmatrix .trans): k0..k0+15,
// columns n0..n0+15; registers {0, 1} are n-tile n0, {2, 3} n-tile n0 + 8.
template <int LD>
__device__ __forceinline__ const bf16* fa_b_rows(const bf16* s, int k0, int n0) {
    const int lane = threadIdx.x & 31;
    return s + (k0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * LD + n0 + 8 * (lane >> 4);
}

// The A fragment (16 x 16, k-step kk) of a 16 x N score-like tile held as C fragments x[N/8][4].
__device__ __forceinline__ void fa_c_to_a(unsigned a[4], const float (*x)[4], int kk) {
    a[0] = pack_bf16x2(x[2 * kk][0], x[2 * kk][1]);
    a[1] = pack_bf16x2(x[2 * kk][2], x[2 * kk][3]);
    a[2] = pack_bf16x2(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[3] = pack_bf16x2(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

// acc[D/8][4] += A (16 x 16K, as C fragments x) * tile rows [k0, k0 + 16K) (stored [k][n], D wide).
template <int D, int K>
__device__ __forceinline__ void fa_mma_cb(float (*acc)[4], const float (*x)[4], const bf16* tile) {
#pragma unroll
    for (int kk = 0; kk < K; kk++) {
        unsigned a[4];
        fa_c_to_a(a, x, kk);
#pragma unroll
        for (int np = 0; np < D / 16; np++) {
            unsigned f[4];
            ldmatrix_x4_trans(f, fa_b_rows<D + 8>(tile, kk * 16, np * 16));
            mma_bf16_16816(acc[2 * np], a, f);
            mma_bf16_16816(acc[2 * np + 1], a, f + 2);
        }
    }
}

// s[N/8][4] = A (16 x D) * tile^T (tile stored [n][d], N rows), where A is given as fragments
// a[D/16][4] in registers, or (a == nullptr) as rows [a_row0, a_row0 + 16) of the shared tile
// `a_tile`, loaded one k-step at a time (fewer live registers).
template <int D, int N>
__device__ __forceinline__ void fa_mma_abt(float (*s)[4], const unsigned (*a)[4], const bf16* tile,
                                           const bf16* a_tile = nullptr, int a_row0 = 0) {
#pragma unroll
    for (int i = 0; i < N / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        unsigned af[4];
        if (!a) ldmatrix_x4(af, fa_a_rows<D + 8>(a_tile, a_row0, kk * 16));
        const unsigned* ak = a ? a[kk] : af;
#pragma unroll
        for (int np = 0; np < N / 16; np++) {
            unsigned f[4];
            ldmatrix_x4(f, fa_bt_rows<D + 8>(tile, np * 16, kk * 16));
            mma_bf16_16816(s[2 * np], ak, f);
            mma_bf16_16816(s[2 * np + 1], ak, f + 2);
        }
    }
}

// ---- forward --------------------------------------------------------------------------------
// Grid (ceil(T/64), H, B), the heaviest query tiles first; 64 queries x 64 keys per step.
// Shared: K and V tiles, 2 x 64 x (D + 8) bf16 (the Q tile passes through the K tile once).
// cp.async pipeline: K of the next step loads during the softmax and P V, V of the next step
// during the next Q K^T.
template <int D>
__device__ __forceinline__ void flash_fwd(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                                          const bf16* __restrict__ k, const bf16* __restrict__ v, int T, int H, int HKV,
                                          float scale) {
    constexpr int BR = 64, BC = 64, LD = D + 8;
    SW_DYN_SMEM(bf16, smem);
    bf16* sK = smem;
    bf16* sV = smem + BC * LD;
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (H / HKV);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u64 qs = (u64)H * D, ks = (u64)HKV * D;
    const bf16* qb = q + (u64)b * T * qs + (u64)h * D;
    const bf16* kb = k + (u64)b * T * ks + (u64)hk * D;
    const bf16* vb = v + (u64)b * T * ks + (u64)hk * D;
    const int q0 = qt * BR, wr0 = q0 + warp * 16;

    fa_load_tile<D, BR>(sK, qb, qs, q0, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(qf[kk], fa_a_rows<LD>(sK, warp * 16, kk * 16));
    __syncthreads();

    const int ntiles = min(q0 + BR - 1, T - 1) / BC + 1;
    fa_load_tile<D, BC>(sK, kb, ks, 0, T);
    cp_async_commit();
    fa_load_tile<D, BC>(sV, vb, ks, 0, T);
    cp_async_commit();

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m[2] = {SW_NEG_INF, SW_NEG_INF}, l[2] = {0.0f, 0.0f};
    const float sl2 = scale * FA_LOG2E;

    for (int j = 0; j < ntiles; j++) {
        cp_async_wait<1>();  // K_j
        __syncthreads();
        float s[BC / 8][4];
        fa_mma_abt<D, BC>(s, qf, sK);
        __syncthreads();
        if (j + 1 < ntiles) fa_load_tile<D, BC>(sK, kb, ks, (j + 1) * BC, T);
        cp_async_commit();

        const int c0 = j * BC;
        if (c0 + BC - 1 > wr0 || c0 + BC > T) {
#pragma unroll
            for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int col = c0 + nt * 8 + 2 * t + (i & 1), row = wr0 + g + 8 * (i >> 1);
                    if (col > row || col >= T) s[nt][i] = SW_NEG_INF;
                }
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = m[r];
#pragma unroll
            for (int nt = 0; nt < BC / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(SW_FULL_MASK, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(SW_FULL_MASK, mx, 2));
            const float ms = mx == SW_NEG_INF ? 0.0f : mx * sl2;
            const float corr = exp2f(m[r] * sl2 - ms);
            m[r] = mx;
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float p = exp2f(s[nt][2 * r + e] * sl2 - ms);
                    s[nt][2 * r + e] = p;
                    sum += p;
                }
            l[r] = l[r] * corr + sum;  // this lane's columns; the quad is summed at the end
#pragma unroll
            for (int nt = 0; nt < D / 8; nt++) {
                o[nt][2 * r] *= corr;
                o[nt][2 * r + 1] *= corr;
            }
        }

        cp_async_wait<1>();  // V_j
        __syncthreads();
        fa_mma_cb<D, BC / 16>(o, s, sV);
        __syncthreads();
        if (j + 1 < ntiles) fa_load_tile<D, BC>(sV, vb, ks, (j + 1) * BC, T);
        cp_async_commit();
    }
    cp_async_wait<0>();

    bf16* ob = out + (u64)b * T * qs + (u64)h * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(SW_FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(SW_FULL_MASK, l[r], 2);
        const int row = wr0 + g + 8 * r;
        if (row >= T) continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++)
            *reinterpret_cast<unsigned*>(ob + (u64)row * qs + nt * 8 + 2 * t) = pack_bf16x2(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
        if (t == 0) lse[((u64)b * H + h) * T + row] = m[r] * scale + __logf(l[r]);
    }
}

extern "C" __global__ void flash_attn_fwd_d64(bf16* __restrict__ out, float* __restrict__ lse,
                                                                           const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                                           const bf16* __restrict__ v, int seq, int heads,
                                                                           int kv_heads, float scale) {
    flash_fwd<64>(out, lse, q, k, v, seq, heads, kv_heads, scale);
}
extern "C" __global__ void flash_attn_fwd_d128(bf16* __restrict__ out, float* __restrict__ lse,
                                                                            const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                                            const bf16* __restrict__ v, int seq, int heads,
                                                                            int kv_heads, float scale) {
    flash_fwd<128>(out, lse, q, k, v, seq, heads, kv_heads, scale);
}

// ---- backward ---------------------------------------------------------------------------------
// dsum [B, H, T] = rowwise dout . out (fp32); one warp per (b, t, h) row.
extern "C" __global__ void flash_attn_bwd_dot(float* __restrict__ dsum, const bf16* __restrict__ dout,
                                              const bf16* __restrict__ out, int batch, int seq, int heads, int dim) {
    const u64 w = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (w >= (u64)batch * seq * heads) return;
    const int h = (int)(w % heads), t = (int)(w / heads % seq), b = (int)(w / heads / seq);
    const bf16* x = dout + w * dim;
    const bf16* y = out + w * dim;
    float acc = 0.0f;
    for (int c = threadIdx.x & 31; c < dim; c += 32) acc += bf2f(x[c]) * bf2f(y[c]);
    acc = warp_sum(acc);
    if ((threadIdx.x & 31) == 0) dsum[((u64)b * heads + h) * seq + t] = acc;
}

// Grid (ceil(T/64), Hkv, B): 64 keys of one kv head per block (16 per warp), looping over the
// group's query heads, then over BQ-query tiles from the diagonal to T. Per tile, per warp:
// S^T = K Q^T, P^T = exp(S^T scale - lse), dV += P^T dO, dP^T = V dO^T,
// dS^T = P^T (dP^T - D), dK += dS^T Q. Shared: K, V (64 rows), Q, dO (BQ rows), lse, D.
template <int D, int BQ>
__device__ __forceinline__ void flash_bwd_dkdv(bf16* __restrict__ dk, bf16* __restrict__ dv, const bf16* __restrict__ dout,
                                               const bf16* __restrict__ q, const bf16* __restrict__ k,
                                               const bf16* __restrict__ v, const float* __restrict__ lse,
                                               const float* __restrict__ dsum, int T, int H, int HKV, float scale) {
    constexpr int BK = 64, LD = D + 8;
    SW_DYN_SMEM(bf16, smem);
    bf16* sK = smem;
    bf16* sV = sK + BK * LD;
    bf16* sQ = sV + BK * LD;
    bf16* sO = sQ + BQ * LD;  // dO
    float* sL = reinterpret_cast<float*>(sO + BQ * LD);  // lse * log2(e)
    float* sD = sL + BQ;
    const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, group = H / HKV;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u64 qs = (u64)H * D, ks = (u64)HKV * D;
    const int k0 = kt * BK, wk0 = k0 + warp * 16;
    fa_load_tile<D, BK>(sK, k + (u64)b * T * ks + (u64)hk * D, ks, k0, T);
    fa_load_tile<D, BK>(sV, v + (u64)b * T * ks + (u64)hk * D, ks, k0, T);
    cp_async_commit();

    float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) dka[i][0] = dka[i][1] = dka[i][2] = dka[i][3] = dva[i][0] = dva[i][1] = dva[i][2] = dva[i][3] = 0.0f;
    const float sl2 = scale * FA_LOG2E;
    const int nq = (T + BQ - 1) / BQ;

    for (int h = hk * group; h < (hk + 1) * group; h++) {
        const bf16* qb = q + (u64)b * T * qs + (u64)h * D;
        const bf16* ob = dout + (u64)b * T * qs + (u64)h * D;
        const float* lb = lse + ((u64)b * H + h) * T;
        const float* db = dsum + ((u64)b * H + h) * T;
        for (int qt = k0 / BQ; qt < nq; qt++) {
            const int q0 = qt * BQ;
            fa_load_tile<D, BQ>(sQ, qb, qs, q0, T);
            cp_async_commit();
            fa_load_tile<D, BQ>(sO, ob, qs, q0, T);
            cp_async_commit();
            for (int i = threadIdx.x; i < BQ; i += FA_THREADS) {
                const bool ok = q0 + i < T;
                sL[i] = ok ? lb[q0 + i] * FA_LOG2E : 0.0f;
                sD[i] = ok ? db[q0 + i] : 0.0f;
            }
            cp_async_wait<1>();  // K, V and Q
            __syncthreads();

            float st[BQ / 8][4];
            fa_mma_abt<D, BQ>(st, nullptr, sQ, sK, warp * 16);
            const bool edge = q0 < wk0 + 15 || q0 + BQ > T;
#pragma unroll
            for (int nt = 0; nt < BQ / 8; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int qc = q0 + nt * 8 + 2 * t + (i & 1), kr = wk0 + g + 8 * (i >> 1);
                    const float p = exp2f(st[nt][i] * sl2 - sL[qc - q0]);
                    st[nt][i] = (edge && (kr > qc || qc >= T)) ? 0.0f : p;
                }
            cp_async_wait<0>();  // dO
            __syncthreads();
            fa_mma_cb<D, BQ / 16>(dva, st, sO);

            float dpt[BQ / 8][4];
            fa_mma_abt<D, BQ>(dpt, nullptr, sO, sV, warp * 16);
#pragma unroll
            for (int nt = 0; nt < BQ / 8; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) st[nt][i] *= dpt[nt][i] - sD[nt * 8 + 2 * t + (i & 1)];
            fa_mma_cb<D, BQ / 16>(dka, st, sQ);
            __syncthreads();  // before the next tile overwrites Q, dO, lse, D
        }
    }

    const u64 base = (u64)b * T * ks + (u64)hk * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = wk0 + g + 8 * r;
        if (row >= T) continue;
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
            const u64 off = base + (u64)row * ks + nt * 8 + 2 * t;
            *reinterpret_cast<unsigned*>(dk + off) = pack_bf16x2(dka[nt][2 * r] * scale, dka[nt][2 * r + 1] * scale);
            *reinterpret_cast<unsigned*>(dv + off) = pack_bf16x2(dva[nt][2 * r], dva[nt][2 * r + 1]);
        }
    }
}

// Query tile 64 for D = 64; 16 for D = 128 (dK, dV take 128 registers per lane: a larger tile spills).
extern "C" __global__ void flash_attn_bwd_dkdv_d64(bf16* __restrict__ dk, bf16* __restrict__ dv, const bf16* __restrict__ dout,
                                           const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                           const float* __restrict__ lse, const float* __restrict__ dsum, int seq, int heads,
                                           int kv_heads, float scale) {
    flash_bwd_dkdv<64, 64>(dk, dv, dout, q, k, v, lse, dsum, seq, heads, kv_heads, scale);
}
extern "C" __global__ void flash_attn_bwd_dkdv_d128(bf16* __restrict__ dk, bf16* __restrict__ dv, const bf16* __restrict__ dout,
                                           const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                           const float* __restrict__ lse, const float* __restrict__ dsum, int seq, int heads,
                                           int kv_heads, float scale) {
    flash_bwd_dkdv<128, 16>(dk, dv, dout, q, k, v, lse, dsum, seq, heads, kv_heads, scale);
}

// Grid (ceil(T/64), H, B), heaviest first: 64 queries of one head per block (16 per warp, Q and
// dO held as A fragments), looping over BK-key tiles up to the diagonal, double-buffered with
// cp.async. Per tile, per warp: S = Q K^T, P = exp(S scale - lse), dP = dO V^T,
// dS = P (dP - D), dQ += dS K. Shared: 2 x (K, V) tiles of BK rows (Q and dO pass through the
// first pair once).
template <int D, int BK>
__device__ __forceinline__ void flash_bwd_dq(bf16* __restrict__ dq, const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                             const bf16* __restrict__ k, const bf16* __restrict__ v,
                                             const float* __restrict__ lse, const float* __restrict__ dsum, int T, int H,
                                             int HKV, float scale) {
    constexpr int BQ = 64, LD = D + 8;
    static_assert(2 * BK >= BQ, "the first K, V pair stages a Q tile");
    SW_DYN_SMEM(bf16, smem);
    const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (H / HKV);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u64 qs = (u64)H * D, ks = (u64)HKV * D;
    const bf16* kb = k + (u64)b * T * ks + (u64)hk * D;
    const bf16* vb = v + (u64)b * T * ks + (u64)hk * D;
    const int q0 = qt * BQ, wr0 = q0 + warp * 16;

    unsigned qf[D / 16][4], of[D / 16][4];
    fa_load_tile<D, BQ>(smem, q + (u64)b * T * qs + (u64)h * D, qs, q0, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(qf[kk], fa_a_rows<LD>(smem, warp * 16, kk * 16));
    __syncthreads();
    fa_load_tile<D, BQ>(smem, dout + (u64)b * T * qs + (u64)h * D, qs, q0, T);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(of[kk], fa_a_rows<LD>(smem, warp * 16, kk * 16));
    float lr[2], dr[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = wr0 + g + 8 * r;
        const u64 stat = ((u64)b * H + h) * T + row;
        lr[r] = row < T ? lse[stat] * FA_LOG2E : 0.0f;
        dr[r] = row < T ? dsum[stat] : 0.0f;
    }
    __syncthreads();

    float dqa[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;
    const float sl2 = scale * FA_LOG2E;
    const int ntiles = min(q0 + BQ - 1, T - 1) / BK + 1;
    fa_load_tile<D, BK>(smem, kb, ks, 0, T);
    fa_load_tile<D, BK>(smem + BK * LD, vb, ks, 0, T);
    cp_async_commit();

    for (int j = 0; j < ntiles; j++) {
        const bf16* sK = smem + (j & 1) * 2 * BK * LD;
        const bf16* sV = sK + BK * LD;
        if (j + 1 < ntiles) {
            bf16* nK = smem + ((j + 1) & 1) * 2 * BK * LD;
            fa_load_tile<D, BK>(nK, kb, ks, (j + 1) * BK, T);
            fa_load_tile<D, BK>(nK + BK * LD, vb, ks, (j + 1) * BK, T);
        }
        cp_async_commit();
        cp_async_wait<1>();  // tile j
        __syncthreads();

        float s[BK / 8][4], dp[BK / 8][4];
        fa_mma_abt<D, BK>(s, qf, sK);
        fa_mma_abt<D, BK>(dp, of, sV);
        const int c0 = j * BK;
        const bool edge = c0 + BK - 1 > wr0 || c0 + BK > T;
#pragma unroll
        for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int col = c0 + nt * 8 + 2 * t + (i & 1), row = wr0 + g + 8 * (i >> 1);
                const float p = (edge && (col > row || col >= T)) ? 0.0f : exp2f(s[nt][i] * sl2 - lr[i >> 1]);
                s[nt][i] = p * (dp[nt][i] - dr[i >> 1]);
            }
        fa_mma_cb<D, BK / 16>(dqa, s, sK);
        __syncthreads();  // before tile j + 2 overwrites this buffer
    }
    cp_async_wait<0>();

    bf16* qb = dq + (u64)b * T * qs + (u64)h * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = wr0 + g + 8 * r;
        if (row >= T) continue;
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++)
            *reinterpret_cast<unsigned*>(qb + (u64)row * qs + nt * 8 + 2 * t) = pack_bf16x2(dqa[nt][2 * r] * scale, dqa[nt][2 * r + 1] * scale);
    }
}

// Key tile 64 for D = 64; 32 for D = 128 (dQ takes 64 registers per lane, Q and dO another 64).
extern "C" __global__ void flash_attn_bwd_dq_d64(bf16* __restrict__ dq, const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                         const bf16* __restrict__ k, const bf16* __restrict__ v, const float* __restrict__ lse,
                                         const float* __restrict__ dsum, int seq, int heads, int kv_heads, float scale) {
    flash_bwd_dq<64, 64>(dq, dout, q, k, v, lse, dsum, seq, heads, kv_heads, scale);
}
extern "C" __global__ void flash_attn_bwd_dq_d128(bf16* __restrict__ dq, const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                         const bf16* __restrict__ k, const bf16* __restrict__ v, const float* __restrict__ lse,
                                         const float* __restrict__ dsum, int seq, int heads, int kv_heads, float scale) {
    flash_bwd_dq<128, 32>(dq, dout, q, k, v, lse, dsum, seq, heads, kv_heads, scale);
}
