// Known-answer kernels for the SIMT primitives themselves (warp shuffles, votes, block
// barriers, dynamic shared memory, atomics, and the tensor-core / async-copy wrappers of
// mma.cuh): the conformance suite checks the emulation in kernels/emu/ against the answers CUDA
// and the PTX ISA define, and a GPU run checks the hardware agrees.
#include "mma.cuh"

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

// Two bf16 values in one register, `lo` in the low half (as the PTX fragments hold them).
__device__ __forceinline__ unsigned selftest_pack(bf16 lo, bf16 hi) {
    return unsigned(__bfloat16_as_ushort(lo)) | unsigned(__bfloat16_as_ushort(hi)) << 16;
}

// One warp: d = a * b + c with one mma.m16n8k16 (a 16x16, b 16x8 as [k][n], c and d 16x8 f32,
// all row-major in global memory), each lane loading its fragments straight from global memory
// by the PTX ISA's layout (g = lane / 4, t = lane % 4), independently of ldmatrix.
extern "C" __global__ void selftest_mma(float* d, const bf16* a, const bf16* b, const float* c) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    unsigned af[4], bf[2];
    float acc[4];
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
        af[i] = selftest_pack(a[row * 16 + col], a[row * 16 + col + 1]);
    }
    for (int i = 0; i < 2; i++) bf[i] = selftest_pack(b[(2 * t + 8 * i) * 8 + g], b[(2 * t + 8 * i + 1) * 8 + g]);
    for (int i = 0; i < 4; i++) acc[i] = c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    mma_bf16_16816(acc, af, bf);
    for (int i = 0; i < 4; i++) d[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}

// One warp: a 16x16 bf16 matrix (row-major) copied to shared memory (row stride 24) by cp.async,
// one 16-byte chunk per lane, row 5 zero-filled instead; then per lane 8 words: ldmatrix_x4
// and ldmatrix_x4_trans with lane l addressing row l % 16, column 8 (l / 16) (matrix i is
// rows 8 (i % 2).., columns 8 (i / 2)..).
extern "C" __global__ void selftest_ldmatrix(unsigned* out, const bf16* src) {
    SW_DYN_SMEM(bf16, s);
    const int lane = threadIdx.x & 31, row = lane >> 1, col = 8 * (lane & 1);
    cp_async16(s + row * 24 + col, src + row * 16 + col, row != 5);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    unsigned r[4];
    const bf16* p = s + (lane & 15) * 24 + 8 * (lane >> 4);
    ldmatrix_x4(r, p);
    for (int i = 0; i < 4; i++) out[8 * lane + i] = r[i];
    ldmatrix_x4_trans(r, p);
    for (int i = 0; i < 4; i++) out[8 * lane + 4 + i] = r[i];
}
