// Global gradient norm: sum of squares of many fp32 tensors (a segment table, as in adamw.cu)
// in two deterministic launches: sumsq_partials writes one fp32 partial per block, then a
// single block of sumsq_reduce adds the partials in double in a fixed order. sum_partials is
// the same without squaring (`Backend::sum` of fp32 losses), reduced by the same sumsq_reduce.
// sumsq_reduce_each adds each segment's partials alone (LAMB's per-tensor norms), one block each.
#include "common.cuh"

struct NormSeg {
    const float* x;
    u64 n;
    u64 block0;
};

// One fp32 partial per block of the sum of x^2 (SQUARE) or of x over the block's elements.
template <bool SQUARE>
__device__ __forceinline__ void partials(const NormSeg* __restrict__ segs, int nseg, u64 block_elems,
                                         float* __restrict__ out) {
    __shared__ float scratch[32];
    const NormSeg s = segs[find_segment(segs, nseg, blockIdx.x)];
    const u64 start = (blockIdx.x - s.block0) * block_elems;
    float acc = 0.0f;
    for (u64 k = threadIdx.x; k < block_elems && start + k < s.n; k += blockDim.x) {
        const float v = s.x[start + k];
        acc += SQUARE ? v * v : v;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

extern "C" __global__ void sumsq_partials(const NormSeg* __restrict__ segs, int nseg, u64 block_elems,
                                          float* __restrict__ partials_out) {
    partials<true>(segs, nseg, block_elems, partials_out);
}

extern "C" __global__ void sum_partials(const NormSeg* __restrict__ segs, int nseg, u64 block_elems,
                                        float* __restrict__ partials_out) {
    partials<false>(segs, nseg, block_elems, partials_out);
}

extern "C" __global__ void sumsq_reduce(double* __restrict__ out, const float* __restrict__ partials, int parts) {
    __shared__ double scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    double acc = 0.0;
    for (int p = threadIdx.x; p < parts; p += blockDim.x) acc += (double)partials[p];
    acc = warp_sum_f64(acc);
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0.0;
        for (int w = 0; w < nwarps; w++) tot += scratch[w];
        out[0] = tot;
    }
}

// One block per segment: out[b] = the sum in double of segment b's partials, in a fixed order.
extern "C" __global__ void sumsq_reduce_each(double* __restrict__ out, const float* __restrict__ partials,
                                             const NormSeg* __restrict__ segs, u64 block_elems) {
    __shared__ double scratch[32];
    const NormSeg s = segs[blockIdx.x];
    const u64 parts = (s.n + block_elems - 1) / block_elems;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    double acc = 0.0;
    for (u64 p = threadIdx.x; p < parts; p += blockDim.x) acc += (double)partials[s.block0 + p];
    acc = warp_sum_f64(acc);
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0.0;
        for (int w = 0; w < nwarps; w++) tot += scratch[w];
        out[blockIdx.x] = tot;
    }
}
