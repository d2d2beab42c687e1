// Token embedding: forward gathers bf16 rows of the [vocab, dim] table; backward accumulates
// into an fp32 [vocab, dim] gradient deterministically with no atomics: each thread owns one
// column and walks the ids in order, so every element is summed in id order on every run.
// The table is one vocab-parallel shard holding vocabulary rows [vocab_start, vocab_start + vocab):
// an id outside it (another shard's, or out of range) reads and writes nothing (zero row
// forward, skipped backward).
#include "common.cuh"

// One thread per 8 columns of one output row.
extern "C" __global__ void embedding_fwd(bf16* __restrict__ out, const bf16* __restrict__ table,
                                         const unsigned* __restrict__ ids, int n, int dim, int vocab,
                                         int vocab_start) {
    const int packs = (dim + 7) / 8;
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (u64)n * packs) return;
    const int row = (int)(i / packs), c0 = (int)(i % packs) * 8;
    const unsigned id = ids[row] - (unsigned)vocab_start;  // wraps past vocab below the shard
    bf16* o = out + (u64)row * dim;
    const bf16* src = table + (u64)id * dim;
    if (dim % 8 == 0 && aligned16(out) && aligned16(table)) {
        float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (id < (unsigned)vocab) load8(src + c0, v);
        store8(o + c0, v);
    } else {
        for (int c = c0; c < dim && c < c0 + 8; c++) o[c] = id < (unsigned)vocab ? src[c] : f2bf(0.0f);
    }
}

extern "C" __global__ void embedding_bwd(float* __restrict__ dtable, const bf16* __restrict__ dout,
                                         const unsigned* __restrict__ ids, int n, int dim, int vocab,
                                         int vocab_start) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    for (int i = 0; i < n; i++) {
        const unsigned id = ids[i] - (unsigned)vocab_start;
        if (id < (unsigned)vocab) dtable[(u64)id * dim + c] += bf2f(dout[(u64)i * dim + c]);
    }
}
