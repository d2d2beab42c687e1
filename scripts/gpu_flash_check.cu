// Hardware check of the tensor-core kernels, for a GPU machine without a Rust toolchain:
//   nvcc -O2 -std=c++17 -arch=sm_90 -I kernels scripts/gpu_flash_check.cu -o out/gpu_flash_check && out/gpu_flash_check
// Runs selftest_mma and selftest_ldmatrix (the same known answers as tests/kernel_conformance.rs,
// which validates the emulation's fragment layouts against the hardware), the flash-attention
// forward and backward against a naive double-precision reference at the conformance shapes,
// and times forward and backward at Llama-2-7B shapes (B 1, T 4096, 32 heads, D 128).
// Launch geometry mirrors src/backend/cuda/launch.rs (grid (ceil(T/64), heads, B), 128 threads,
// shared bytes as computed there). Exits non-zero on any mismatch.
#include "selftest.cu"
#include "flash_attention.cu"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); std::exit(2); } } while (0)

static unsigned rng_state = 12345;
static float urand() { rng_state = rng_state * 1664525u + 1013904223u; return ((rng_state >> 8) / 16777216.0f) * 2.0f - 1.0f; }
static unsigned short f2b(float f) { bf16 b = __float2bfloat16_rn(f); return __bfloat16_as_ushort(b); }
static float b2f(unsigned short u) { unsigned x = unsigned(u) << 16; float f; std::memcpy(&f, &x, 4); return f; }

template <class T> static T* dev(const std::vector<T>& h) { T* p; CK(cudaMalloc(&p, h.size() * sizeof(T) + 16)); CK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); return p; }
template <class T> static std::vector<T> host(const T* p, size_t n) { std::vector<T> h(n); CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost)); return h; }

static int failures = 0;

static void check_mma() {
    std::vector<unsigned short> a(256), b(128);
    std::vector<float> af(256), bf(128), c(128);
    for (int i = 0; i < 256; i++) { af[i] = std::round(urand() * 8) / 2; a[i] = f2b(af[i]); }
    for (int i = 0; i < 128; i++) { bf[i] = std::round(urand() * 8) / 2; b[i] = f2b(bf[i]); c[i] = i - 64.0f; }
    float* d; CK(cudaMalloc(&d, 128 * 4));
    selftest_mma<<<1, 32>>>(d, (bf16*)dev(a), (bf16*)dev(b), dev(c));
    CK(cudaDeviceSynchronize());
    auto got = host(d, 128);
    int bad = 0;
    for (int i = 0; i < 16; i++) for (int j = 0; j < 8; j++) {
        float w = c[i * 8 + j];
        for (int k = 0; k < 16; k++) w += af[i * 16 + k] * bf[k * 8 + j];
        bad += got[i * 8 + j] != w;
    }
    std::printf("selftest_mma: %s (%d of 128 differ)\n", bad ? "FAIL" : "ok", bad);
    failures += bad != 0;
}

static void check_ldmatrix() {
    std::vector<unsigned short> m(256);
    for (auto& x : m) x = f2b(urand() * 4);
    unsigned* out; CK(cudaMalloc(&out, 256 * 4));
    selftest_ldmatrix<<<1, 32, 16 * 24 * 2>>>(out, (bf16*)dev(m));
    CK(cudaDeviceSynchronize());
    auto got = host(out, 256);
    for (int c = 0; c < 16; c++) m[5 * 16 + c] = 0;
    int bad = 0;
    for (int lane = 0; lane < 32; lane++) {
        int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; i++) {
            auto at = [&](int r, int c) { return unsigned(m[(8 * (i % 2) + r) * 16 + 8 * (i / 2) + c]); };
            bad += got[8 * lane + i] != (at(g, 2 * t) | at(g, 2 * t + 1) << 16);
            bad += got[8 * lane + 4 + i] != (at(2 * t, g) | at(2 * t + 1, g) << 16);
        }
    }
    std::printf("selftest_ldmatrix (+ cp.async zero-fill): %s (%d of 256 differ)\n", bad ? "FAIL" : "ok", bad);
    failures += bad != 0;
}

struct Shape { int B, T, H, HKV, D; };
static size_t tb(int rows, int d) { return size_t(rows) * (d + 8) * 2; }

struct Bufs { bf16 *q, *k, *v, *out, *dout, *dq, *dk, *dv; float *lse, *dsum; };

static void launch_fwd(const Shape& s, const Bufs& b) {
    dim3 grid((s.T + 63) / 64, s.H, s.B);
    float scale = 1.0f / std::sqrt(float(s.D));
    if (s.D == 64) flash_attn_fwd_d64<<<grid, 128, 2 * tb(64, 64)>>>(b.out, b.lse, b.q, b.k, b.v, s.T, s.H, s.HKV, scale);
    else flash_attn_fwd_d128<<<grid, 128, 2 * tb(64, 128)>>>(b.out, b.lse, b.q, b.k, b.v, s.T, s.H, s.HKV, scale);
}
static void launch_bwd(const Shape& s, const Bufs& b) {
    float scale = 1.0f / std::sqrt(float(s.D));
    int rows = s.B * s.T * s.H;
    flash_attn_bwd_dot<<<(rows + 7) / 8, 256>>>(b.dsum, b.dout, b.out, s.B, s.T, s.H, s.D);
    dim3 gk((s.T + 63) / 64, s.HKV, s.B), gq((s.T + 63) / 64, s.H, s.B);
    if (s.D == 64) {
        flash_attn_bwd_dkdv_d64<<<gk, 128, 2 * tb(64, 64) + 2 * tb(64, 64) + 8 * 64>>>(b.dk, b.dv, b.dout, b.q, b.k, b.v, b.lse, b.dsum, s.T, s.H, s.HKV, scale);
        flash_attn_bwd_dq_d64<<<gq, 128, 4 * tb(64, 64)>>>(b.dq, b.dout, b.q, b.k, b.v, b.lse, b.dsum, s.T, s.H, s.HKV, scale);
    } else {
        flash_attn_bwd_dkdv_d128<<<gk, 128, 2 * tb(64, 128) + 2 * tb(16, 128) + 8 * 16>>>(b.dk, b.dv, b.dout, b.q, b.k, b.v, b.lse, b.dsum, s.T, s.H, s.HKV, scale);
        flash_attn_bwd_dq_d128<<<gq, 128, 4 * tb(32, 128)>>>(b.dq, b.dout, b.q, b.k, b.v, b.lse, b.dsum, s.T, s.H, s.HKV, scale);
    }
}

static std::vector<float> tof(const std::vector<unsigned short>& v) { std::vector<float> f(v.size()); for (size_t i = 0; i < v.size(); i++) f[i] = b2f(v[i]); return f; }
static double relerr(const std::vector<float>& o, const std::vector<double>& r) {
    double d = 0, n = 0;
    for (size_t i = 0; i < o.size(); i++) { d += (o[i] - r[i]) * (o[i] - r[i]); n += r[i] * r[i]; }
    return std::sqrt(d / (n > 0 ? n : 1e-300));
}

static void check_attention(Shape s) {
    const size_t nq = size_t(s.B) * s.T * s.H * s.D, nk = size_t(s.B) * s.T * s.HKV * s.D, ns = size_t(s.B) * s.H * s.T;
    std::vector<unsigned short> q(nq), k(nk), v(nk), dout(nq);
    for (auto& x : q) x = f2b(urand() * 2);
    for (auto& x : k) x = f2b(urand() * 2);
    for (auto& x : v) x = f2b(urand());
    for (auto& x : dout) x = f2b(urand());
    Bufs b{(bf16*)dev(q), (bf16*)dev(k), (bf16*)dev(v), (bf16*)dev(std::vector<unsigned short>(nq, 0xffff)), (bf16*)dev(dout),
           (bf16*)dev(std::vector<unsigned short>(nq, 0xffff)), (bf16*)dev(std::vector<unsigned short>(nk, 0xffff)),
           (bf16*)dev(std::vector<unsigned short>(nk, 0xffff)), dev(std::vector<float>(ns, NAN)), dev(std::vector<float>(ns, NAN))};
    launch_fwd(s, b);
    launch_bwd(s, b);
    CK(cudaDeviceSynchronize());
    auto out = tof(host((unsigned short*)b.out, nq));
    auto lse = host(b.lse, ns);
    auto dq = tof(host((unsigned short*)b.dq, nq)), dk = tof(host((unsigned short*)b.dk, nk)), dv = tof(host((unsigned short*)b.dv, nk));
    auto Q = tof(q), K = tof(k), V = tof(v), dO = tof(dout);
    std::vector<double> ro(nq), rl(ns), rdq(nq), rdk(nk, 0), rdv(nk, 0);
    const double scale = 1.0 / std::sqrt(double(s.D));
    auto qi = [&](int bb, int t, int h) { return ((size_t(bb) * s.T + t) * s.H + h) * s.D; };
    auto ki = [&](int bb, int t, int h) { return ((size_t(bb) * s.T + t) * s.HKV + h) * s.D; };
    for (int bb = 0; bb < s.B; bb++) for (int h = 0; h < s.H; h++) {
        int hk = h / (s.H / s.HKV);
        for (int i = 0; i < s.T; i++) {
            std::vector<double> p(i + 1), dp(i + 1);
            double mx = -1e300, sum = 0;
            for (int j = 0; j <= i; j++) {
                double d = 0;
                for (int c = 0; c < s.D; c++) d += double(Q[qi(bb, i, h) + c]) * K[ki(bb, j, hk) + c];
                p[j] = d * scale; mx = std::fmax(mx, p[j]);
            }
            for (int j = 0; j <= i; j++) { p[j] = std::exp(p[j] - mx); sum += p[j]; }
            rl[(size_t(bb) * s.H + h) * s.T + i] = mx + std::log(sum);
            for (int c = 0; c < s.D; c++) { double a = 0; for (int j = 0; j <= i; j++) a += p[j] * V[ki(bb, j, hk) + c]; ro[qi(bb, i, h) + c] = a / sum; }
            // backward from the kernel's own bf16 output, as the Rust conformance test does
            double Di = 0;
            for (int c = 0; c < s.D; c++) Di += double(dO[qi(bb, i, h) + c]) * out[qi(bb, i, h) + c];
            for (int j = 0; j <= i; j++) {
                double pj = p[j] / sum, d = 0;
                for (int c = 0; c < s.D; c++) d += double(dO[qi(bb, i, h) + c]) * V[ki(bb, j, hk) + c];
                double ds = pj * (d - Di);
                for (int c = 0; c < s.D; c++) {
                    rdq[qi(bb, i, h) + c] += scale * ds * K[ki(bb, j, hk) + c];
                    rdk[ki(bb, j, hk) + c] += scale * ds * Q[qi(bb, i, h) + c];
                    rdv[ki(bb, j, hk) + c] += pj * dO[qi(bb, i, h) + c];
                }
            }
        }
    }
    double e[5] = {relerr(out, ro), relerr(lse, rl), relerr(dq, rdq), relerr(dk, rdk), relerr(dv, rdv)};
    bool ok = e[0] <= 1e-2 && e[1] <= 1e-5 && e[2] <= 1e-2 && e[3] <= 1e-2 && e[4] <= 1e-2;
    std::printf("flash attention B%d T%d H%d Hkv%d D%d: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e %s\n", s.B, s.T, s.H, s.HKV, s.D,
                e[0], e[1], e[2], e[3], e[4], ok ? "ok" : "FAIL");
    failures += !ok;
}

static void time_attention(Shape s) {
    const size_t nq = size_t(s.B) * s.T * s.H * s.D, nk = size_t(s.B) * s.T * s.HKV * s.D, ns = size_t(s.B) * s.H * s.T;
    std::vector<unsigned short> q(nq), k(nk);
    for (auto& x : q) x = f2b(urand());
    for (auto& x : k) x = f2b(urand());
    Bufs b{(bf16*)dev(q), (bf16*)dev(k), (bf16*)dev(k), (bf16*)dev(q), (bf16*)dev(q), (bf16*)dev(q), (bf16*)dev(k), (bf16*)dev(k),
           dev(std::vector<float>(ns)), dev(std::vector<float>(ns))};
    cudaEvent_t e0, e1, e2; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1)); CK(cudaEventCreate(&e2));
    for (int w = 0; w < 3; w++) { launch_fwd(s, b); launch_bwd(s, b); }
    const int iters = 20;
    CK(cudaEventRecord(e0));
    for (int i = 0; i < iters; i++) launch_fwd(s, b);
    CK(cudaEventRecord(e1));
    for (int i = 0; i < iters; i++) launch_bwd(s, b);
    CK(cudaEventRecord(e2));
    CK(cudaEventSynchronize(e2));
    CK(cudaGetLastError());
    float f, g; CK(cudaEventElapsedTime(&f, e0, e1)); CK(cudaEventElapsedTime(&g, e1, e2));
    f /= iters; g /= iters;
    double flop_f = 2.0 * s.B * s.H * double(s.T) * s.T * s.D;  // causal: half of 4 B H T^2 D
    std::printf("timing B%d T%d H%d Hkv%d D%d: forward %.3f ms (%.0f TFLOP/s), backward %.3f ms (%.0f TFLOP/s at 2.5x forward FLOPs)\n",
                s.B, s.T, s.H, s.HKV, s.D, f, flop_f / f / 1e9, g, 2.5 * flop_f / g / 1e9);
}

int main() {
    cudaDeviceProp p; CK(cudaGetDeviceProperties(&p, 0));
    std::printf("device: %s (sm_%d%d)\n", p.name, p.major, p.minor);
    check_mma();
    check_ldmatrix();
    for (Shape s : {Shape{2, 70, 2, 2, 64}, Shape{1, 130, 4, 1, 128}, Shape{1, 70, 8, 1, 64}, Shape{2, 70, 8, 1, 128}, Shape{1, 5, 4, 2, 64}, Shape{1, 1000, 8, 2, 128}})
        check_attention(s);
    time_attention(Shape{1, 4096, 32, 32, 128});
    time_attention(Shape{1, 4096, 32, 32, 64});
    std::printf("%s\n", failures ? "FAILED" : "all ok");
    return failures ? 1 : 0;
}
