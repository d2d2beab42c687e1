// AdamW (torch.optim.AdamW formulation, decoupled decay first) over many tensors in one
// launch: a table of segments, each an fp32 master weight with its fp32 gradient and moments
// and an optional bf16 copy of the weight that the forward pass reads. Each block updates
// block_elems elements of one segment. The host (src/backend/cuda/launch.rs) precomputes the
// step constants exactly as the CPU backend does.
#include "common.cuh"

struct AdamSeg {
    float* master;
    const float* grad;
    float* m;
    float* v;
    bf16* weight;  // may be null
    u64 n;
    u64 block0;
};

extern "C" __global__ void adamw(const AdamSeg* __restrict__ segs, int nseg, u64 block_elems, float decay,
                                 float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                                 float step_size, float bc2_sqrt, float eps) {
    const AdamSeg s = segs[find_segment(segs, nseg, blockIdx.x)];
    const u64 start = (blockIdx.x - s.block0) * block_elems;
    for (u64 k = threadIdx.x; k < block_elems; k += blockDim.x) {
        const u64 i = start + k;
        if (i >= s.n) return;
        const float g = s.grad[i];
        const float m = beta1 * s.m[i] + one_minus_beta1 * g;
        const float v = beta2 * s.v[i] + one_minus_beta2 * g * g;
        s.m[i] = m;
        s.v[i] = v;
        const float p = s.master[i] * decay - step_size * (m / (sqrtf(v) / bc2_sqrt + eps));
        s.master[i] = p;
        if (s.weight) s.weight[i] = f2bf(p);
    }
}
