// Tensor-core and asynchronous-copy wrappers (sm_80 and later): one small function per PTX
// instruction the kernels use. On a GPU each is inline PTX; under the emulation build
// (SWALLOW_EMU) the same names resolve to the warp-collective C++ versions in emu/mma_emu.h,
// which implement the fragment layouts the PTX ISA documents, so a kernel written against these
// wrappers runs unchanged on CPU in tests.
//
// Fragment layouts of mma.m16n8k16 with bf16 inputs and f32 accumulators, for lane l of the
// warp, g = l / 4 (group) and t = l % 4 (thread in group); a 32-bit register holds two bf16
// values, the lower-indexed one in its low 16 bits:
//   A (16x16, row-major, 4 regs): a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
//                                  a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9]
//   B (16x8, k x n, 2 regs):      b[0] = B[2t..2t+1][g],   b[1] = B[2t+8..2t+9][g]
//   C, D (16x8 f32, 4 regs):      c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
// ldmatrix.m8n8.x4.b16: lanes 8i..8i+7 give the row addresses (16 bytes each) of 8x8 matrix i;
// r[i] = matrix i's row g, columns 2t..2t+1 (with .trans: rows 2t..2t+1 of column g, i.e. the
// transposed matrix's row g).
#pragma once
#include "common.cuh"

#ifdef SWALLOW_EMU
#include "emu/mma_emu.h"
#else

// Shared-memory address (32 bits) of a generic pointer into shared memory.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// D = A * B + C in place (c is C on entry, D on return): m16n8k16, bf16 inputs, f32 accumulation.
__device__ __forceinline__ void mma_bf16_16816(float c[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Four 8x8 bf16 matrices from shared memory; `row` is this lane's row address (see above).
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
}

// 16-byte asynchronous copy global -> shared (both 16-byte aligned); when `full` is false
// nothing is read and the destination is zero-filled.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool full) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(full ? 16 : 0));
}
// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `N` committed groups (the newest) are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Two floats as bf16 (round to nearest even) in one register, `lo` in the low half.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

#endif
