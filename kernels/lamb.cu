// LAMB (You et al. 2019) over many tensors in two launches per step, around the per-tensor norms
// the host combines into trust ratios (src/optim/lamb.rs). A table of segments, each an fp32
// master weight with its fp32 gradient and moments, an optional bf16 copy of the weight, its
// weight decay and (second phase) its step, the learning rate times its trust ratio. Each block
// covers block_elems elements of one segment. The host (src/backend/cuda/launch.rs) computes the
// step constants exactly as the CPU backend does.
#include "common.cuh"

struct LambSeg {
    float* master;
    float* grad;  // the gradient; the update direction after lamb_moments
    float* m;
    float* v;
    bf16* weight;  // may be null
    u64 n;
    u64 block0;
    float decay;  // weight decay
    float step;   // lr * trust ratio (lamb_apply)
};

// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; g = inv_bc1 * m / (sqrt(v) / bc2_sqrt + eps) + decay * w.
extern "C" __global__ void lamb_moments(const LambSeg* __restrict__ segs, int nseg, u64 block_elems, float beta1,
                                        float one_minus_beta1, float beta2, float one_minus_beta2, float inv_bc1,
                                        float bc2_sqrt, float eps) {
    const LambSeg s = segs[find_segment(segs, nseg, blockIdx.x)];
    const u64 start = (blockIdx.x - s.block0) * block_elems;
    for (u64 k = threadIdx.x; k < block_elems; k += blockDim.x) {
        const u64 i = start + k;
        if (i >= s.n) return;
        const float g = s.grad[i];
        const float m = beta1 * s.m[i] + one_minus_beta1 * g;
        const float v = beta2 * s.v[i] + one_minus_beta2 * g * g;
        s.m[i] = m;
        s.v[i] = v;
        s.grad[i] = inv_bc1 * (m / (sqrtf(v) / bc2_sqrt + eps)) + s.decay * s.master[i];
    }
}

// w -= step * u (the update direction lamb_moments left in grad), and the bf16 copy.
extern "C" __global__ void lamb_apply(const LambSeg* __restrict__ segs, int nseg, u64 block_elems) {
    const LambSeg s = segs[find_segment(segs, nseg, blockIdx.x)];
    const u64 start = (blockIdx.x - s.block0) * block_elems;
    for (u64 k = threadIdx.x; k < block_elems; k += blockDim.x) {
        const u64 i = start + k;
        if (i >= s.n) return;
        const float p = s.master[i] - s.step * s.grad[i];
        s.master[i] = p;
        if (s.weight) s.weight[i] = f2bf(p);
    }
}
