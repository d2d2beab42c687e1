// Host SIMT emulation of the CUDA subset the kernels in kernels/*.cu use, so the same sources
// compile with g++ (`-x c++ -include kernels/emu/cuda_emu.h`) and run on CPU in tests.
//
// Model: a launch runs its blocks one after another; the threads of a block are fibers on the
// calling OS thread, each on its own stack (STACK), switched cooperatively. On x86-64 (System V,
// ELF) a switch is `swallow_fiber_switch` below: it saves the callee-saved registers, the x87
// control word and MXCSR on the current stack and loads the other stack, without the
// signal-mask system call of glibc's swapcontext; a fiber starts from a hand-built initial
// frame (no per-thread getcontext/makecontext). Elsewhere fibers are ucontext contexts.
// A fiber runs until it reaches a barrier (__syncthreads, or a warp collective: shuffle, vote,
// __syncwarp) or returns; when no fiber can run, the scheduler releases a warp whose live
// threads all wait at a warp barrier, else the block if all its live threads wait at
// __syncthreads, else reports a deadlock (divergent collective) and aborts. Exited threads no
// longer count, as on the GPU. Because one block runs at a time on one OS thread, `__shared__`
// variables are function statics, atomics are plain read-modify-writes, and launches are
// serialised by a mutex. Dynamic shared memory (SW_DYN_SMEM in common.cuh) is a per-launch
// buffer filled with 0xFF bytes (NaN) before every block, so a kernel that reads it before
// writing it fails tests.
#pragma once
#define SWALLOW_EMU 1

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>
#if !(defined(__x86_64__) && defined(__ELF__))
#include <ucontext.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};

// ---- bf16 ---------------------------------------------------------------------------------
struct __nv_bfloat16 {
    uint16_t bits;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.bits = uint16_t((u >> 16) | 0x40u);  // quiet NaN, sign kept
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
        b.bits = uint16_t(u >> 16);
    }
    return b;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = uint32_t(b.bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// ---- math intrinsics ----------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
using std::exp;
using std::fmax;
using std::log;
using std::sqrt;

// ---- fiber contexts -----------------------------------------------------------------------
#if defined(__x86_64__) && defined(__ELF__)
// swallow_fiber_switch(save_sp, load_sp): pushes rbp, rbx, r12-r15 and an 8-byte word holding
// MXCSR (low half) and the x87 control word onto the current stack, stores the stack pointer
// in *save_sp, switches to load_sp and pops the same frame from there, returning into the other
// fiber. Caller-saved registers need no saving: it is an ordinary call for the compiler. Weak
// and in a COMDAT group, so the header may be included by several translation units.
asm(R"(
    .pushsection .text.swallow_fiber_switch,"axG",@progbits,swallow_fiber_switch,comdat
    .weak swallow_fiber_switch
    .hidden swallow_fiber_switch
    .type swallow_fiber_switch, @function
    .p2align 4
swallow_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size swallow_fiber_switch, .-swallow_fiber_switch
    .popsection
)");
extern "C" __attribute__((visibility("hidden"))) void swallow_fiber_switch(void** save_sp, void* load_sp);

namespace emu {

struct Context {
    void* sp;  // the stack pointer swallow_fiber_switch saved, or the initial frame
};

inline void switch_context(Context& save, const Context& load) { swallow_fiber_switch(&save.sp, load.sp); }

// Builds the frame swallow_fiber_switch pops on a fresh stack: the caller's MXCSR and x87
// control word, zeroed callee-saved registers (rbp 0 ends frame-pointer backtraces), then
// `entry` as the return address, so the first switch to the fiber "returns" into entry with
// rsp % 16 == 8 as after a call. Above it a zero return address: entry must never return.
inline void start_context(Context& c, char* stack, size_t size, void (*entry)()) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
    uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 9;  // 1 + 6 registers + entry + 0
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fpcw));
    frame[0] = uint64_t(mxcsr) | uint64_t(fpcw) << 32;
    for (int r = 1; r <= 6; r++) frame[r] = 0;
    frame[7] = reinterpret_cast<uint64_t>(entry);
    frame[8] = 0;
    c.sp = frame;
}

}  // namespace emu
#else
namespace emu {

struct Context {
    ucontext_t uc;
};

inline void switch_context(Context& save, const Context& load) { swapcontext(&save.uc, &load.uc); }

// Not inlined into the caller: getcontext returns twice, which would clobber the caller's loop
// state.
__attribute__((noinline)) inline void start_context(Context& c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}

}  // namespace emu
#endif

// ---- the scheduler ------------------------------------------------------------------------
namespace emu {

enum State { RUN, WAIT_WARP, WAIT_BLOCK, DONE };

// One pending 16-byte cp.async copy (emu/mma_emu.h): done at the cp.async.wait_group that
// covers its group, so a kernel that reads the destination before waiting reads stale data.
struct AsyncCopy {
    void* dst;
    const void* src;  // nullptr: zero-fill
};

struct Fiber {
    Context ctx;
    State state;
    dim3 tid;
    unsigned gather_parity;                         // which half of `wide` the next gather uses
    std::vector<AsyncCopy> async_open;              // cp.async copies not yet committed
    std::vector<std::vector<AsyncCopy>> async_groups;  // committed groups, oldest first
};

// Gathers up to this many bytes per thread in one warp collective (warp_gather).
constexpr size_t WIDE = 64;

struct Launch {
    dim3 grid, block, bid;
    unsigned nthreads = 0, cur = 0;
    std::vector<Fiber> fibers;
    std::vector<std::vector<char>> stacks;
    std::vector<uint64_t> slots;  // one exchange word per thread, for warp collectives
    std::vector<unsigned char> wide;  // two WIDE-byte slots per thread, for warp_gather
    std::vector<unsigned char> dyn_smem;
    Context sched;
    void (*body)(void**) = nullptr;
    void** params = nullptr;
};

inline Launch& L() {
    static Launch l;
    return l;
}
inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline void yield(State s) {
    Launch& l = L();
    Fiber& f = l.fibers[l.cur];
    f.state = s;
    switch_context(f.ctx, l.sched);
}

// Completes this thread's committed cp.async groups until at most `keep` remain in flight.
inline void async_complete(Fiber& f, size_t keep) {
    while (f.async_groups.size() > keep) {
        for (const AsyncCopy& c : f.async_groups.front()) {
            if (c.src) std::memcpy(c.dst, c.src, 16);
            else std::memset(c.dst, 0, 16);
        }
        f.async_groups.erase(f.async_groups.begin());
    }
}

inline void fiber_main() {
    Launch& l = L();
    l.body(l.params);
    // A thread's outstanding copies still land when it exits, as on the GPU.
    Fiber& f = l.fibers[l.cur];
    if (!f.async_open.empty()) f.async_groups.push_back(std::move(f.async_open));
    async_complete(f, 0);
    f.state = DONE;
    switch_context(f.ctx, l.sched);
    std::abort();  // a finished fiber is never switched to again
}

// Releases the next group of waiting fibers; false when none can be released.
inline bool release(Launch& l) {
    unsigned n = l.nthreads;
    bool any_live = false;
    for (unsigned w0 = 0; w0 < n; w0 += 32) {
        unsigned w1 = w0 + 32 < n ? w0 + 32 : n;
        bool live = false, all_warp = true;
        for (unsigned i = w0; i < w1; i++) {
            if (l.fibers[i].state == DONE) continue;
            live = true;
            all_warp &= l.fibers[i].state == WAIT_WARP;
        }
        any_live |= live;
        if (live && all_warp) {
            for (unsigned i = w0; i < w1; i++)
                if (l.fibers[i].state == WAIT_WARP) l.fibers[i].state = RUN;
            return true;
        }
    }
    if (!any_live) return false;
    for (unsigned i = 0; i < n; i++)
        if (l.fibers[i].state != DONE && l.fibers[i].state != WAIT_BLOCK) {
            std::fprintf(stderr, "cuda_emu: deadlock in block (%u,%u,%u): divergent barrier or warp collective\n",
                         l.bid.x, l.bid.y, l.bid.z);
            std::abort();
        }
    for (unsigned i = 0; i < n; i++)
        if (l.fibers[i].state == WAIT_BLOCK) l.fibers[i].state = RUN;
    return true;
}

constexpr size_t STACK = 64 * 1024;

inline void init_fiber(Launch& l, unsigned i, dim3 tid) {
    Fiber& f = l.fibers[i];
    f.tid = tid;
    f.state = RUN;
    f.gather_parity = 0;
    f.async_open.clear();
    f.async_groups.clear();
    start_context(f.ctx, l.stacks[i].data(), STACK, fiber_main);
}

inline void run_block(Launch& l) {
    std::memset(l.dyn_smem.data(), 0xff, l.dyn_smem.size());
    unsigned i = 0;
    for (unsigned z = 0; z < l.block.z; z++)
        for (unsigned y = 0; y < l.block.y; y++)
            for (unsigned x = 0; x < l.block.x; x++, i++) {
                init_fiber(l, i, dim3{x, y, z});
            }
    do {
        for (unsigned t = 0; t < l.nthreads; t++) {
            if (l.fibers[t].state != RUN) continue;
            l.cur = t;
            switch_context(l.sched, l.fibers[t].ctx);
        }
    } while (release(l));
}

// Runs `body(params)` as every thread of a grid, blocks in order.
inline void launch(dim3 grid, dim3 block, size_t smem, void (*body)(void**), void** params) {
    std::lock_guard<std::mutex> guard(launch_mutex());
    Launch& l = L();
    l.grid = grid;
    l.block = block;
    l.nthreads = block.x * block.y * block.z;
    if (l.nthreads == 0 || l.nthreads > 1024) {
        std::fprintf(stderr, "cuda_emu: block of %u threads (must be 1..1024)\n", l.nthreads);
        std::abort();
    }
    l.fibers.resize(l.nthreads);
    while (l.stacks.size() < l.nthreads) l.stacks.emplace_back(STACK);
    l.slots.assign(l.nthreads, 0);
    l.wide.assign(2 * WIDE * l.nthreads, 0);
    l.dyn_smem.assign(smem, 0);
    l.body = body;
    l.params = params;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                l.bid = dim3{x, y, z};
                run_block(l);
            }
}

inline unsigned linear_tid() { return L().cur; }

// Warp exchange: publish `v`, wait for the warp, read lane `src` (own value when out of
// range), wait again so the slots can be reused.
template <class T>
inline T exchange(T v, int src) {
    static_assert(sizeof(T) <= 8, "warp collectives on values up to 8 bytes");
    Launch& l = L();
    unsigned me = l.cur, w0 = me & ~31u;
    std::memcpy(&l.slots[me], &v, sizeof(T));
    yield(WAIT_WARP);
    T r = v;
    if (src >= 0 && src < 32 && w0 + unsigned(src) < l.nthreads) std::memcpy(&r, &l.slots[w0 + src], sizeof(T));
    yield(WAIT_WARP);
    return r;
}

// Warp gather: every lane publishes `mine` and gets every lane's value in `all[32]` (lanes
// past the end of the block read as zero bytes). One barrier per call: the two slot halves
// alternate, and a lane cannot publish into a half again before the whole warp has passed the
// next gather, by which time every lane has read the half.
template <class T>
inline void warp_gather(const T& mine, T all[32]) {
    static_assert(sizeof(T) <= WIDE && std::is_trivially_copyable_v<T>, "warp_gather: value too large");
    Launch& l = L();
    unsigned me = l.cur, w0 = me & ~31u;
    Fiber& f = l.fibers[me];
    const unsigned half = f.gather_parity;
    f.gather_parity ^= 1;
    std::memcpy(&l.wide[(2 * me + half) * WIDE], &mine, sizeof(T));
    yield(WAIT_WARP);
    for (unsigned lane = 0; lane < 32; lane++) {
        if (w0 + lane < l.nthreads) std::memcpy(&all[lane], &l.wide[(2 * (w0 + lane) + half) * WIDE], sizeof(T));
        else std::memset(&all[lane], 0, sizeof(T));
    }
}

template <class F>
struct Unpack;
template <class... A>
struct Unpack<void (*)(A...)> {
    template <size_t... I>
    static void call(void (*k)(A...), void** p, std::index_sequence<I...>) {
        k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
    }
    static void run(void (*k)(A...), void** p) { call(k, p, std::index_sequence_for<A...>{}); }
};

// The launch body for kernel `K`: unpacks cuLaunchKernel-style params (an array of pointers
// to the argument values) into a call.
template <auto K>
void body(void** p) {
    Unpack<decltype(K)>::run(K, p);
}

}  // namespace emu

#define threadIdx (::emu::L().fibers[::emu::L().cur].tid)
#define blockIdx (::emu::L().bid)
#define blockDim (::emu::L().block)
#define gridDim (::emu::L().grid)
#define warpSize 32

inline void __syncthreads() { emu::yield(emu::WAIT_BLOCK); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::yield(emu::WAIT_WARP); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
    return emu::exchange(v, int(emu::linear_tid() & 31) ^ lane_mask);
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32) {
    return emu::exchange(v, int(emu::linear_tid() & 31) + int(delta));
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src, int = 32) {
    return emu::exchange(v, src);
}
inline unsigned __ballot_sync(unsigned, int pred) {
    unsigned r = 0;
    for (int lane = 0; lane < 32; lane++) {
        // Every lane reads every lane's flag; lanes that do not exist read their own.
        int v = emu::exchange(pred ? 1 : 0, lane);
        if (v && (emu::linear_tid() & ~31u) + lane < emu::L().nthreads) r |= 1u << lane;
    }
    return r;
}
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
inline int __all_sync(unsigned m, int pred) {
    unsigned w0 = emu::linear_tid() & ~31u, n = emu::L().nthreads - w0;
    unsigned full = n >= 32 ? 0xffffffffu : (1u << n) - 1;
    return __ballot_sync(m, pred) == full;
}

template <class T>
inline T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
    T old = *p;
    *p = old > v ? old : v;
    return old;
}
