// Warp-collective emulations of the wrappers in kernels/mma.cuh (mma.sync m16n8k16 bf16,
// ldmatrix m8n8.x4 with and without .trans, cp.async with zero-fill, commit / wait groups),
// with the fragment layouts of the PTX ISA (see mma.cuh for the table). Every lane of the warp
// must call them together, as on the GPU; each is one warp gather (cuda_emu.h) followed by each
// lane computing its own registers from everyone's. The layouts here are written from the PTX
// ISA independently of the kernels that use them; selftest_mma / selftest_ldmatrix in
// kernels/selftest.cu check them against plain loops, and against the hardware on a GPU.
#pragma once

namespace emu {

inline float bf16_lo(unsigned r) { return __bfloat162float(__nv_bfloat16{uint16_t(r & 0xffffu)}); }
inline float bf16_hi(unsigned r) { return __bfloat162float(__nv_bfloat16{uint16_t(r >> 16)}); }
inline float bf16_half(unsigned r, int hi) { return hi ? bf16_hi(r) : bf16_lo(r); }

// Element (row, col) of the m16n8k16 A fragment held across the warp: lane 4 (row % 8) +
// (col % 8) / 2, register (row >= 8) + 2 (col >= 8), half col % 2.
inline float mma_a_elem(const unsigned (*a)[4], int row, int col) {
    return bf16_half(a[4 * (row % 8) + (col % 8) / 2][(row >= 8) + 2 * (col >= 8)], col & 1);
}
// Element (k, n) of the B fragment: lane 4 n + (k % 8) / 2, register k >= 8, half k % 2.
inline float mma_b_elem(const unsigned (*b)[2], int k, int n) {
    return bf16_half(b[4 * n + (k % 8) / 2][k >= 8], k & 1);
}

// True when [p, p + bytes) lies in this launch's dynamic shared memory.
inline bool in_dyn_smem(const void* p, size_t bytes) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    const std::vector<unsigned char>& s = L().dyn_smem;
    return !s.empty() && c >= s.data() && c + bytes <= s.data() + s.size();
}

inline void check_row(const void* p, const char* what) {
    if (!in_dyn_smem(p, 16) || (reinterpret_cast<uintptr_t>(p) & 15) != 0) {
        std::fprintf(stderr, "cuda_emu: %s: address %p is not a 16-byte aligned row of dynamic shared memory\n", what, p);
        std::abort();
    }
}

// ldmatrix.x4 (trans = false) or .x4.trans: lane l's registers from the 32 row addresses.
inline void ldmatrix(unsigned r[4], const void* row, bool trans) {
    const unsigned short* rows[32];
    warp_gather(static_cast<const unsigned short*>(row), rows);
    const int lane = int(linear_tid() & 31), g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 8; j++) check_row(rows[8 * i + j], "ldmatrix");
        unsigned lo, hi;
        if (!trans) {  // row g of matrix i, columns 2t, 2t + 1
            lo = rows[8 * i + g][2 * t];
            hi = rows[8 * i + g][2 * t + 1];
        } else {  // column g of matrix i, rows 2t, 2t + 1
            lo = rows[8 * i + 2 * t][g];
            hi = rows[8 * i + 2 * t + 1][g];
        }
        r[i] = lo | hi << 16;
    }
}

}  // namespace emu

// D = A * B + C in place: each lane gathers the warp's A and B registers and computes its four
// C/D elements (rows g, g + 8, columns 2t, 2t + 1); the 16 exact products are summed in double
// and the sum rounded once to f32 before adding C (the hardware's internal order is not
// specified; the difference is far below the bf16 tolerance).
inline void mma_bf16_16816(float c[4], const unsigned a[4], const unsigned b[2]) {
    struct Regs {
        unsigned a[4], b[2];
    };
    Regs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}}, all[32];
    emu::warp_gather(mine, all);
    unsigned A[32][4], B[32][2];
    for (int l = 0; l < 32; l++) {
        std::memcpy(A[l], all[l].a, sizeof A[l]);
        std::memcpy(B[l], all[l].b, sizeof B[l]);
    }
    const int lane = int(emu::linear_tid() & 31), g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        double s = 0.0;
        for (int k = 0; k < 16; k++) s += double(emu::mma_a_elem(A, row, k)) * emu::mma_b_elem(B, k, col);
        c[i] += float(s);
    }
}

inline void ldmatrix_x4(unsigned r[4], const void* row) { emu::ldmatrix(r, row, false); }
inline void ldmatrix_x4_trans(unsigned r[4], const void* row) { emu::ldmatrix(r, row, true); }

// cp.async: queued per thread, performed (read and write) when a wait_group covers its group.
inline void cp_async16(void* dst, const void* src, bool full) {
    emu::check_row(dst, "cp.async destination");
    if (full && (reinterpret_cast<uintptr_t>(src) & 15) != 0) {
        std::fprintf(stderr, "cuda_emu: cp.async: source %p is not 16-byte aligned\n", src);
        std::abort();
    }
    emu::L().fibers[emu::linear_tid()].async_open.push_back(emu::AsyncCopy{dst, full ? src : nullptr});
}
inline void cp_async_commit() {
    emu::Fiber& f = emu::L().fibers[emu::linear_tid()];
    f.async_groups.push_back(std::move(f.async_open));
    f.async_open.clear();
}
template <int N>
inline void cp_async_wait() {
    emu::async_complete(emu::L().fibers[emu::linear_tid()], N);
}

inline unsigned pack_bf16x2(float lo, float hi) {
    return unsigned(__float2bfloat16_rn(lo).bits) | unsigned(__float2bfloat16_rn(hi).bits) << 16;
}
