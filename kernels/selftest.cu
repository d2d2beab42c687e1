// Known-answer kernels for the SIMT primitives themselves (warp shuffles, votes, block
// barriers, dynamic shared memory, atomics): the conformance suite checks the emulation in
// kernels/emu/ against the answers CUDA defines, and a GPU run checks the hardware agrees.
#include "common.cuh"

// Per thread t (lane l), 6 ints: shfl_xor(16), shfl_down(1), shfl from lane 3,
// ballot(l odd), any(l == 5), all(l < 31), where each thread's value is 10 t.
extern "C" __global__ void selftest_warp(int* out) {
    const int t = threadIdx.x, lane = t & 31, v = 10 * t;
    int* o = out + 6 * t;
    o[0] = __shfl_xor_sync(SW_FULL_MASK, v, 16);
    o[1] = __shfl_down_sync(SW_FULL_MASK, v, 1);
    o[2] = __shfl_sync(SW_FULL_MASK, v, 3);
    o[3] = (int)__ballot_sync(SW_FULL_MASK, lane & 1);
    o[4] = __any_sync(SW_FULL_MASK, lane == 5);
    o[5] = __all_sync(SW_FULL_MASK, lane < 31);
}

// Per block b: out[2b] = sum over threads of (t + 1) read back through dynamic shared memory
// by thread 0 after a barrier; out[2b + 1] += 1 by every thread (atomics).
extern "C" __global__ void selftest_block(int* out) {
    SW_DYN_SMEM(int, s);
    s[threadIdx.x] = threadIdx.x + 1;
    __syncthreads();
    if (threadIdx.x == 0) {
        int acc = 0;
        for (int i = 0; i < (int)blockDim.x; i++) acc += s[i];
        out[2 * blockIdx.x] = acc;
    }
    atomicAdd(&out[2 * blockIdx.x + 1], 1);
}
