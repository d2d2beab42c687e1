// Token embedding: forward gathers bf16 rows of the [vocab, dim] table; backward accumulates
// into an fp32 [vocab, dim] gradient deterministically: every element is summed in token order
// on every run (no float atomics), parallel over distinct ids and columns.
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

// Backward, in two steps, deterministic: every element of the table gradient is the sum, in
// token order, of its tokens' rows added to what it held, exactly as one thread walking all
// tokens would add them, but in parallel over distinct ids and columns.
// 1. embedding_bwd_links (after `links` [2n] is zeroed): links[i] = n - j for the next token
//    j > i with the same id (0: none), links[n + i] = 1 when an earlier token has it. Blocks
//    cover (256 tokens i) x (a tile of EMB_LINK_TILE tokens j); integer atomicMax merges the
//    tiles, whose order does not change a maximum.
// 2. embedding_bwd: one block row per token, columns across threads; a token that is the first
//    of its id in the shard walks its chain of links and writes the row once.
#define EMB_LINK_TILE 1024

extern "C" __global__ void embedding_bwd_links(int* __restrict__ links, const unsigned* __restrict__ ids, int n,
                                               int vocab, int vocab_start) {
    __shared__ unsigned tile[EMB_LINK_TILE];
    const int j0 = blockIdx.y * EMB_LINK_TILE, len = min(EMB_LINK_TILE, n - j0);
    for (int k = threadIdx.x; k < len; k += blockDim.x) tile[k] = ids[j0 + k];
    __syncthreads();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned mine = ids[i];
    if (mine - (unsigned)vocab_start >= (unsigned)vocab) return;  // another shard's id
    int earlier = 0, next = -1;
    for (int k = 0; k < len; k++) {
        if (tile[k] != mine) continue;
        const int j = j0 + k;
        if (j < i) earlier = 1;
        else if (j > i) { next = j; break; }  // ascending: the first later match is the next
    }
    if (earlier) atomicMax(&links[n + i], 1);
    if (next >= 0) atomicMax(&links[i], n - next);
}

extern "C" __global__ void embedding_bwd(float* __restrict__ dtable, const bf16* __restrict__ dout,
                                         const unsigned* __restrict__ ids, const int* __restrict__ links,
                                         int n, int dim, int vocab, int vocab_start) {
    const int i = blockIdx.x;
    const unsigned id = ids[i] - (unsigned)vocab_start;
    if (id >= (unsigned)vocab || links[n + i] != 0) return;  // another shard's, or not its id's first
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    float* g = dtable + (u64)id * dim + c;
    float acc = *g;
    for (int j = i;;) {
        acc += bf2f(dout[(u64)j * dim + c]);
        const int later = links[j];
        if (later == 0) break;
        j = n - later;
    }
    *g = acc;
}
