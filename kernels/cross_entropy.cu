// Fused softmax cross-entropy over bf16 [rows, vocab] logits, one block per row: a pass over
// the vocabulary in chunks keeps online (max, sum of exp) statistics per thread, merged over
// the block in a fixed order; then loss = lse - logit[target] and the logits are overwritten
// with grad_scale * (softmax - onehot). Columns >= valid_vocab (vocabulary padding) get
// probability 0 and gradient 0.
#include "common.cuh"

__device__ __forceinline__ void maxsum_add(MaxSum& a, float x) {
    if (x > a.m) {
        a.s = a.s * __expf(a.m - x) + 1.0f;
        a.m = x;
    } else {
        a.s += __expf(x - a.m);
    }
}

extern "C" __global__ void cross_entropy_fwd_bwd(bf16* __restrict__ logits, float* __restrict__ losses,
                                                 const unsigned* __restrict__ targets, int vocab,
                                                 int valid_vocab, float grad_scale) {
    SW_DYN_SMEM(float, sm_m);  // [nwarps] maxima, then [nwarps] sums
    bf16* l = logits + (u64)blockIdx.x * vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float* sm_s = sm_m + nwarps;
    const bool vec = vocab % 8 == 0 && aligned16(logits);
    MaxSum acc{SW_NEG_INF, 0.0f};
    if (vec) {
        for (int c = threadIdx.x * 8; c < valid_vocab; c += blockDim.x * 8) {
            float v[8];
            load8(l + c, v);
            for (int k = 0; k < 8 && c + k < valid_vocab; k++) maxsum_add(acc, v[k]);
        }
    } else {
        for (int c = threadIdx.x; c < valid_vocab; c += blockDim.x) maxsum_add(acc, bf2f(l[c]));
    }
    acc = warp_maxsum(acc);
    if (lane == 0) {
        sm_m[warp] = acc.m;
        sm_s[warp] = acc.s;
    }
    const unsigned t = targets[blockIdx.x];
    const float xt = t < (unsigned)valid_vocab ? bf2f(l[t]) : __int_as_float(0x7fffffff);
    __syncthreads();  // also orders every read of l[t] before the overwrite below
    MaxSum tot{SW_NEG_INF, 0.0f};
    for (int w = 0; w < nwarps; w++) tot = maxsum_merge(tot, MaxSum{sm_m[w], sm_s[w]});
    const float lse = tot.m + __logf(tot.s);
    if (threadIdx.x == 0) losses[blockIdx.x] = lse - xt;
    if (vec) {
        for (int c = threadIdx.x * 8; c < vocab; c += blockDim.x * 8) {
            float v[8];
            load8(l + c, v);
            for (int k = 0; k < 8; k++) {
                const int col = c + k;
                v[k] = col < valid_vocab ? grad_scale * (__expf(v[k] - lse) - (col == (int)t ? 1.0f : 0.0f)) : 0.0f;
            }
            store8(l + c, v);
        }
    } else {
        for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
            const float g = c < valid_vocab ? grad_scale * (__expf(bf2f(l[c]) - lse) - (c == (int)t ? 1.0f : 0.0f)) : 0.0f;
            l[c] = f2bf(g);
        }
    }
}
