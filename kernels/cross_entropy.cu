// Softmax cross-entropy over bf16 [rows, vocab] logits, in two forms.
// Fused (one rank holds the whole vocabulary), one block per row: a pass over the vocabulary in
// chunks keeps online (max, sum of exp) statistics per thread, merged over the block in a fixed
// order; then loss = lse - logit[target] and the logits are overwritten with
// grad_scale * (softmax - onehot). Columns >= valid_vocab (vocabulary padding) get probability 0
// and gradient 0.
// Vocab-parallel (each tensor-parallel rank holds the vocabulary slice [vocab_start,
// vocab_start + valid) of every row): cross_entropy_local_stats writes the slice's fp32
// (max, sum of exp(logit - max), target logit or 0 when the target is elsewhere) per row, the
// caller combines them over the ranks, and cross_entropy_finish writes the loss and overwrites
// the slice with its dlogits, one block per (row, vocabulary chunk).
#include "common.cuh"

__device__ __forceinline__ void maxsum_add(MaxSum& a, float x) {
    if (x > a.m) {
        a.s = a.s * __expf(a.m - x) + 1.0f;
        a.m = x;
    } else {
        a.s += __expf(x - a.m);
    }
}

// (max, sum of exp(x - max)) over the first `valid` columns of row `l`, for every thread of the
// block (-inf and 0 when valid == 0). `sm` is 2 * nwarps floats of shared memory; the barrier
// inside also orders the block's earlier reads of `l` before any write after the call.
__device__ __forceinline__ MaxSum block_row_maxsum(const bf16* l, int valid, bool vec, float* sm) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    MaxSum acc{SW_NEG_INF, 0.0f};
    if (vec) {
        for (int c = threadIdx.x * 8; c < valid; c += blockDim.x * 8) {
            float v[8];
            load8(l + c, v);
            for (int k = 0; k < 8 && c + k < valid; k++) maxsum_add(acc, v[k]);
        }
    } else {
        for (int c = threadIdx.x; c < valid; c += blockDim.x) maxsum_add(acc, bf2f(l[c]));
    }
    acc = warp_maxsum(acc);
    if (lane == 0) {
        sm[warp] = acc.m;
        sm[nwarps + warp] = acc.s;
    }
    __syncthreads();
    MaxSum tot{SW_NEG_INF, 0.0f};
    for (int w = 0; w < nwarps; w++) tot = maxsum_merge(tot, MaxSum{sm[w], sm[nwarps + w]});
    return tot;
}

// grad_scale * (exp(x - m) / s - [col == t]) for a real column, 0 for a padding column.
__device__ __forceinline__ float xent_grad(float x, int col, int valid, unsigned t, float m, float k, float grad_scale) {
    return col < valid ? __expf(x - m) * k - (col == (int)t ? grad_scale : 0.0f) : 0.0f;
}

extern "C" __global__ void cross_entropy_fwd_bwd(bf16* __restrict__ logits, float* __restrict__ losses,
                                                 const unsigned* __restrict__ targets, int vocab,
                                                 int valid_vocab, float grad_scale) {
    SW_DYN_SMEM(float, sm);  // [nwarps] maxima, then [nwarps] sums
    bf16* l = logits + (u64)blockIdx.x * vocab;
    const bool vec = vocab % 8 == 0 && aligned16(logits);
    const unsigned t = targets[blockIdx.x];
    const float xt = t < (unsigned)valid_vocab ? bf2f(l[t]) : __int_as_float(0x7fffffff);
    const MaxSum tot = block_row_maxsum(l, valid_vocab, vec, sm);  // its barrier orders the read of l[t] first
    const float lse = tot.m + __logf(tot.s);
    if (threadIdx.x == 0) losses[blockIdx.x] = lse - xt;
    const float k = grad_scale / tot.s;
    if (vec) {
        for (int c = threadIdx.x * 8; c < vocab; c += blockDim.x * 8) {
            float v[8];
            load8(l + c, v);
            for (int j = 0; j < 8; j++) v[j] = xent_grad(v[j], c + j, valid_vocab, t, tot.m, k, grad_scale);
            store8(l + c, v);
        }
    } else {
        for (int c = threadIdx.x; c < vocab; c += blockDim.x)
            l[c] = f2bf(xent_grad(bf2f(l[c]), c, valid_vocab, t, tot.m, k, grad_scale));
    }
}

// Phase 1 of the vocab-parallel form, one block per row of this rank's slice [rows, vocab]
// (first `valid` columns real, global column of column 0 = vocab_start): stats [rows, 3].
extern "C" __global__ void cross_entropy_local_stats(float* __restrict__ stats, const bf16* __restrict__ logits,
                                                     const unsigned* __restrict__ targets, int vocab, int valid,
                                                     int vocab_start) {
    SW_DYN_SMEM(float, sm);  // [nwarps] maxima, then [nwarps] sums
    const bf16* l = logits + (u64)blockIdx.x * vocab;
    const MaxSum tot = block_row_maxsum(l, valid, vocab % 8 == 0 && aligned16(logits), sm);
    if (threadIdx.x == 0) {
        const unsigned c = targets[blockIdx.x] - (unsigned)vocab_start;  // wraps when the target is below the slice
        float* st = stats + 3 * (u64)blockIdx.x;
        st[0] = tot.m;
        st[1] = tot.s;
        st[2] = c < (unsigned)valid ? bf2f(l[c]) : 0.0f;
    }
}

// Phase 2, from the combined global [rows, 3] = (max, sum of exp(logit - max), target logit):
// grid (rows, vocabulary chunks of 8 * blockDim.x columns). Block (row, 0) writes the row's loss;
// every block overwrites its chunk of the slice with grad_scale * (softmax - onehot).
extern "C" __global__ void cross_entropy_finish(bf16* __restrict__ logits, float* __restrict__ losses,
                                                const float* __restrict__ global, const unsigned* __restrict__ targets,
                                                int vocab, int valid, int vocab_start, float grad_scale) {
    const u64 row = blockIdx.x;
    const float m = global[3 * row], s = global[3 * row + 1];
    if (blockIdx.y == 0 && threadIdx.x == 0) losses[row] = m + __logf(s) - global[3 * row + 2];
    // The target's column in this slice; out of range (no onehot term) when it is on another rank.
    const unsigned t = targets[row] - (unsigned)vocab_start;
    const float k = grad_scale / s;
    bf16* l = logits + row * vocab;
    const int c = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
    if (c >= vocab) return;
    if (vocab % 8 == 0 && aligned16(logits)) {
        float v[8];
        load8(l + c, v);
        for (int j = 0; j < 8; j++) v[j] = xent_grad(v[j], c + j, valid, t, m, k, grad_scale);
        store8(l + c, v);
    } else {
        for (int j = 0; j < 8 && c + j < vocab; j++) l[c + j] = f2bf(xent_grad(bf2f(l[c + j]), c + j, valid, t, m, k, grad_scale));
    }
}
