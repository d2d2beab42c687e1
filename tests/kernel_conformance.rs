//! Kernel conformance: every CUDA kernel of kernels/*.cu, launched through a device runtime with
//! the geometry of src/backend/cuda/launch.rs, and the runtime's cuBLASLt-contract GEMM, against
//! the CPU backend on the same inputs (rounded to bf16 for bf16 paths). The runtime is the
//! emulation (host memory, the kernels' emulation build) unless `SWALLOW_CONFORMANCE_DEVICE=cuda`
//! selects the real one (CUDA driver, NVRTC-compiled modules, cuBLASLt; device 0), which fails
//! every test with the reason when there is no usable GPU. Outputs and scratch are poisoned with
//! NaN before each launch, so an element a kernel fails to write fails the test.
//! Tolerances: ‖out − ref‖/‖ref‖ ≤ 1e-2 for bf16 outputs, ≤ 1e-5 for fp32 paths.

use half::bf16;
use std::sync::{Arc, OnceLock};
use swallow::backend::cpu::CpuBackend;
use swallow::backend::cuda::driver::{DriverOptions, DriverRuntime};
use swallow::backend::cuda::emulated::EmulatedRuntime;
use swallow::backend::cuda::launch::{self, AdamSeg, DevPtr, Dtype, LambSeg, Launch, NormSeg};
use swallow::backend::cuda::runtime::{DeviceBuf, Gemm, GemmOut, Plain, Runtime};
use swallow::backend::{AdamWStep, AttnShape, Backend, LambStep, LambTensor};

const BF16_TOL: f64 = 1e-2;
const F32_TOL: f64 = 1e-5;

/// The shapes every op is checked at: (batch, seq, heads, head_dim, vocab, valid_vocab).
/// dim = heads * head_dim, rows = batch * seq. They cover rows that are not a multiple of the
/// warps per block or of the RMSNorm backward's 32-row blocks, dims and vocabularies that are
/// not multiples of 8 (scalar paths) and that are (16-byte vector paths), padded vocabularies.
const CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (2, 4, 2, 32, 512, 512),
    (1, 37, 3, 66, 1000, 990),
    (3, 11, 5, 128, 1003, 1001),
    (2, 35, 4, 64, 2053, 2048),
];

/// The runtime under test, one per test process: `SWALLOW_CONFORMANCE_DEVICE` = `emulated` (the
/// default) or `cuda`.
fn runtime() -> &'static Arc<dyn Runtime> {
    static RT: OnceLock<Arc<dyn Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt: Arc<dyn Runtime> = match std::env::var("SWALLOW_CONFORMANCE_DEVICE").as_deref() {
            Err(_) | Ok("") | Ok("emulated") => Arc::new(EmulatedRuntime::new()),
            Ok("cuda") => match DriverRuntime::new(&DriverOptions::default()) {
                Ok(rt) => Arc::new(rt),
                Err(e) => panic!("SWALLOW_CONFORMANCE_DEVICE=cuda: {e:#}"),
            },
            Ok(other) => panic!("SWALLOW_CONFORMANCE_DEVICE={other:?}: expected emulated or cuda"),
        };
        eprintln!("kernel conformance on: {}", rt.describe());
        rt
    })
}

/// A device buffer of the runtime under test (device memory is 256-byte aligned).
struct Dev<T: Plain>(DeviceBuf<T>);

impl<T: Plain> Dev<T> {
    fn new(v: &[T]) -> Self {
        Dev(DeviceBuf::from_slice(runtime(), v).unwrap_or_else(|e| panic!("upload: {e:#}")))
    }
    fn read(&self) -> Vec<T> {
        self.0.read().unwrap_or_else(|e| panic!("download: {e:#}"))
    }
    fn write(&mut self, v: &[T]) {
        self.0.write(v).unwrap_or_else(|e| panic!("upload: {e:#}"))
    }
    fn ptr(&mut self) -> DevPtr {
        self.0.ptr()
    }
}

fn poisoned<T: Plain>(len: usize, nan: T) -> Dev<T> {
    Dev::new(&vec![nan; len])
}
fn bf16_nan(len: usize) -> Dev<bf16> {
    poisoned(len, bf16::NAN)
}
fn f32_nan(len: usize) -> Dev<f32> {
    poisoned(len, f32::NAN)
}

fn run(l: &Launch) {
    // SAFETY: every pointer in the launches below comes from a live `Dev` buffer sized for it.
    unsafe { runtime().launch(l) }.unwrap_or_else(|e| panic!("{}: {e:#}", l.kernel))
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.uniform()).collect()
    }
    /// Values already representable in bf16, and their bf16 bits.
    fn bf(&mut self, n: usize, scale: f32) -> (Vec<f32>, Dev<bf16>) {
        let b: Vec<bf16> = self.vec(n, scale).into_iter().map(bf16::from_f32).collect();
        (b.iter().map(|x| x.to_f32()).collect(), Dev::new(&b))
    }
    fn below(&mut self, n: usize) -> u32 {
        ((self.uniform() * 0.5 + 0.5) * n as f32) as u32 % n as u32
    }
}

fn to_f32(b: &Dev<bf16>) -> Vec<f32> {
    b.read().iter().map(|x| x.to_f32()).collect()
}

/// ‖out − ref‖ / ‖ref‖ in f64 (NaN when `out` has a NaN).
fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len());
    let (mut d, mut r) = (0.0f64, 0.0f64);
    for (&o, &x) in out.iter().zip(reference) {
        d += (o as f64 - x as f64).powi(2);
        r += (x as f64).powi(2);
    }
    (d / r.max(1e-300)).sqrt()
}

fn check(what: &str, case: usize, out: &[f32], reference: &[f32], tol: f64) {
    let e = rel_err(out, reference);
    eprintln!("{what:<28} case {case}: rel err {e:.2e}");
    assert!(e <= tol, "{what} (case {case}): relative error {e:.3e} exceeds {tol:.0e}");
}

fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn cpu() -> CpuBackend<f32> {
    CpuBackend::new()
}

#[test]
fn rmsnorm_forward_and_backward() {
    let be = cpu();
    for (ci, &(b, t, h, hd, _, _)) in CASES.iter().enumerate() {
        let (rows, dim, eps) = (b * t, h * hd, 1e-5f32);
        let mut rng = Rng(ci as u64 + 1);
        let (x, mut xd) = rng.bf(rows * dim, 2.0);
        let (w, mut wd) = rng.bf(dim, 1.0);
        let (mut out_ref, mut rstd_ref) = (vec![0.0; rows * dim], vec![0.0; rows]);
        be.rmsnorm_fwd(&mut out_ref, &mut rstd_ref, &x, &w, dim, eps);
        let (mut out, mut rstd) = (bf16_nan(rows * dim), f32_nan(rows));
        run(&launch::rmsnorm_fwd(out.ptr(), rstd.ptr(), xd.ptr(), wd.ptr(), rows, dim, eps));
        check("rmsnorm_fwd out", ci, &to_f32(&out), &out_ref, BF16_TOL);
        check("rmsnorm_fwd rstd", ci, &rstd.read(), &rstd_ref, F32_TOL);

        // Backward accumulates: start both from the same small nonzero gradients.
        let (dy, mut dyd) = rng.bf(rows * dim, 1.0);
        let (dx0, mut dxd) = rng.bf(rows * dim, 0.1);
        let dw0 = rng.vec(dim, 0.1);
        let (mut dx_ref, mut dw_ref) = (dx0.clone(), dw0.clone());
        be.rmsnorm_bwd(&mut dx_ref, &mut dw_ref, &dy, &x, &w, &rstd_ref, dim);
        let mut dwd = Dev::new(&dw0);
        let mut scratch = f32_nan(launch::rmsnorm_bwd_scratch(rows, dim));
        for l in launch::rmsnorm_bwd(dxd.ptr(), dwd.ptr(), scratch.ptr(), dyd.ptr(), xd.ptr(), wd.ptr(), rstd.ptr(), rows, dim) {
            run(&l);
        }
        check("rmsnorm_bwd dx (delta)", ci, &diff(&to_f32(&dxd), &dx0), &diff(&dx_ref, &dx0), BF16_TOL);
        check("rmsnorm_bwd dw (delta)", ci, &diff(&dwd.read(), &dw0), &diff(&dw_ref, &dw0), F32_TOL);
    }
}

#[test]
fn rmsnorm_fused_residual_add() {
    let be = cpu();
    for (ci, &(b, t, h, hd, _, _)) in CASES.iter().enumerate() {
        let (rows, dim, eps) = (b * t, h * hd, 1e-6f32);
        let mut rng = Rng(ci as u64 + 81);
        let (x, mut xd) = rng.bf(rows * dim, 2.0);
        let (r, mut rd) = rng.bf(rows * dim, 2.0);
        let (w, mut wd) = rng.bf(dim, 1.0);
        // Reference: the sum stored in bf16, then RMSNorm of the stored sum.
        let mut sum = x.clone();
        be.add_assign(&mut sum, &r);
        let sum: Vec<f32> = sum.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
        let (mut out_ref, mut rstd_ref) = (vec![0.0; rows * dim], vec![0.0; rows]);
        be.rmsnorm_fwd(&mut out_ref, &mut rstd_ref, &sum, &w, dim, eps);
        // In place, as in a Llama block: the residual stream x becomes x + r.
        let (mut out, mut rstd) = (bf16_nan(rows * dim), f32_nan(rows));
        let xp = xd.ptr();
        run(&launch::rmsnorm_residual_fwd(xp, out.ptr(), rstd.ptr(), xp, rd.ptr(), wd.ptr(), rows, dim, eps));
        check("rmsnorm_residual residual", ci, &to_f32(&xd), &sum, 0.0);
        check("rmsnorm_residual out", ci, &to_f32(&out), &out_ref, BF16_TOL);
        check("rmsnorm_residual rstd", ci, &rstd.read(), &rstd_ref, F32_TOL);
    }
}

#[test]
fn rope_forward_and_backward() {
    let be = cpu();
    for (ci, &(b, t, h, hd, _, _)) in CASES.iter().enumerate() {
        let mut rng = Rng(ci as u64 + 11);
        let n = b * t * h * hd;
        let half = hd / 2;
        let theta: Vec<f32> = (0..t * half).map(|i| (i / half) as f32 * 10000f32.powf(-((i % half) as f32) / half as f32)).collect();
        let cos: Vec<f32> = theta.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = theta.iter().map(|a| a.sin()).collect();
        let (mut cd, mut sd) = (Dev::new(&cos), Dev::new(&sin));
        for inverse in [false, true] {
            let (x, mut xd) = rng.bf(n, 1.0);
            let mut want = x.clone();
            if inverse {
                be.rope_bwd(&mut want, &cos, &sin, b, t, h, hd);
            } else {
                be.rope_fwd(&mut want, &cos, &sin, b, t, h, hd);
            }
            run(&launch::rope(xd.ptr(), cd.ptr(), sd.ptr(), b, t, h, hd, inverse));
            check(if inverse { "rope_bwd" } else { "rope_fwd" }, ci, &to_f32(&xd), &want, BF16_TOL);
        }
    }
}

#[test]
fn swiglu_forward_and_backward() {
    let be = cpu();
    for (ci, &(b, t, h, hd, _, _)) in CASES.iter().enumerate() {
        let mut rng = Rng(ci as u64 + 21);
        let n = b * t * h * hd + ci; // odd lengths exercise the scalar tail
        let (g, mut gd) = rng.bf(n, 6.0);
        let (u, mut ud) = rng.bf(n, 1.0);
        let (dy, mut dyd) = rng.bf(n, 1.0);
        let mut want = vec![0.0; n];
        be.swiglu_fwd(&mut want, &g, &u);
        let mut out = bf16_nan(n);
        run(&launch::swiglu_fwd(out.ptr(), gd.ptr(), ud.ptr(), n));
        check("swiglu_fwd", ci, &to_f32(&out), &want, BF16_TOL);
        let (mut dg_ref, mut du_ref) = (vec![0.0; n], vec![0.0; n]);
        be.swiglu_bwd(&mut dg_ref, &mut du_ref, &dy, &g, &u);
        let (mut dg, mut du) = (bf16_nan(n), bf16_nan(n));
        run(&launch::swiglu_bwd(dg.ptr(), du.ptr(), dyd.ptr(), gd.ptr(), ud.ptr(), n));
        check("swiglu_bwd dgate", ci, &to_f32(&dg), &dg_ref, BF16_TOL);
        check("swiglu_bwd dup", ci, &to_f32(&du), &du_ref, BF16_TOL);
    }
}

#[test]
fn embedding_forward_and_backward() {
    let be = cpu();
    for (ci, &(b, t, h, hd, vocab, _)) in CASES.iter().enumerate() {
        let mut rng = Rng(ci as u64 + 31);
        let (n, dim) = (b * t, h * hd);
        // The whole table, then a vocab-parallel shard (rows [start, start + rows)) that ids
        // below and above miss. Half the ids from a few, so rows repeat and the backward accumulates.
        for (start, rows) in [(0, vocab), (3, vocab / 2)] {
            let ids: Vec<u32> = (0..n).map(|i| rng.below(if i % 2 == 0 { start + 7 } else { vocab })).collect();
            let mut idd = Dev::new(&ids);
            let (table, mut td) = rng.bf(rows * dim, 1.0);
            let mut want = vec![0.0; n * dim];
            be.embedding_fwd(&mut want, &table, &ids, dim, start);
            let mut out = bf16_nan(n * dim);
            run(&launch::embedding_fwd(out.ptr(), td.ptr(), idd.ptr(), n, dim, rows, start));
            check(&format!("embedding_fwd from {start}"), ci, &to_f32(&out), &want, 0.0);
            check_embedding_bwd(&format!("embedding_bwd from {start}"), ci, &mut rng, &ids, dim, rows, start);
        }
    }
}

/// The device's embedding backward of a random `dout` into a random table gradient of `rows`
/// rows from vocabulary row `start`, against the CPU backend's, exactly: both add each element's
/// tokens in token order.
fn check_embedding_bwd(what: &str, case: usize, rng: &mut Rng, ids: &[u32], dim: usize, rows: usize, start: usize) {
    let n = ids.len();
    let mut idd = Dev::new(ids);
    let (dy, mut dyd) = rng.bf(n * dim, 1.0);
    let d0 = rng.vec(rows * dim, 0.1);
    let mut want = d0.clone();
    cpu().embedding_bwd(&mut want, &dy, &ids.to_vec(), dim, start);
    let mut dt = Dev::new(&d0);
    let mut links = Dev::new(&vec![f32::NAN; launch::embedding_bwd_scratch(n)]);
    for l in launch::embedding_bwd(dt.ptr(), dyd.ptr(), idd.ptr(), links.ptr(), n, dim, rows, start) {
        run(&l);
    }
    check(what, case, &dt.read(), &want, 0.0);
}

/// The backward over more tokens than one block of links and one tile of ids covers, with
/// repeats as natural text has them (one id on every third token, a few frequent ones, a tail of
/// rare ones) and ids outside the shard: every element must be the CPU's sum in token order,
/// bit for bit.
#[test]
fn embedding_backward_sums_long_chains_in_token_order() {
    let mut rng = Rng(97);
    let (n, dim, start, rows) = (2600, 40, 100, 1500);
    let ids: Vec<u32> = (0..n)
        .map(|i| match i % 3 {
            0 => start as u32 + 5,
            1 => rng.below(start + 20),
            _ => rng.below(start + rows + 300),
        })
        .collect();
    check_embedding_bwd("embedding_bwd long chains", 0, &mut rng, &ids, dim, rows, start);
}

#[test]
fn cross_entropy_fused() {
    let be = cpu();
    for (ci, &(b, t, _, _, vocab, valid)) in CASES.iter().enumerate() {
        let mut rng = Rng(ci as u64 + 41);
        let rows = b * t;
        let (logits, mut ld) = rng.bf(rows * vocab, 8.0);
        let targets: Vec<u32> = (0..rows).map(|_| rng.below(valid)).collect();
        let mut td = Dev::new(&targets);
        let gs = 1.0 / rows as f32;
        let (mut grad_ref, mut loss_ref) = (logits.clone(), vec![0.0; rows]);
        be.cross_entropy_fwd_bwd(&mut grad_ref, &mut loss_ref, &targets, vocab, valid, gs);
        let mut losses = f32_nan(rows);
        run(&launch::cross_entropy(ld.ptr(), losses.ptr(), td.ptr(), rows, vocab, valid, gs));
        check("cross_entropy losses", ci, &losses.read(), &loss_ref, F32_TOL);
        let grad = to_f32(&ld);
        check("cross_entropy dlogits", ci, &grad, &grad_ref, BF16_TOL);
        assert!(grad.chunks(vocab).all(|r| r[valid..].iter().all(|&g| g == 0.0)), "padding columns must get zero gradient");
    }
}

/// Vocab-parallel cross-entropy: (rows, vocab, valid_vocab, split): the vocabulary cut into two
/// slices [0, split) and [split, vocab), as two tensor-parallel ranks hold it. They cover slices of
/// one finish chunk and of several with a partial last one, slices that are and are not multiples
/// of 8 (vector and scalar paths), padding in the second slice, and a second slice of padding only.
const CE_TP_CASES: &[(usize, usize, usize, usize)] = &[
    (8, 512, 512, 256),
    (37, 1000, 990, 500),
    (33, 2053, 2048, 2048),
    (5, 9000, 8990, 4101),
    (3, 2 * launch::CE_FINISH_CHUNK + 32, 2 * launch::CE_FINISH_CHUNK + 20, launch::CE_FINISH_CHUNK + 16),
];

/// The columns `lo..hi` of every row of `[rows, vocab]`.
fn columns(x: &[f32], vocab: usize, lo: usize, hi: usize) -> Vec<f32> {
    x.chunks(vocab).flat_map(|r| r[lo..hi].iter().copied()).collect()
}

#[test]
fn cross_entropy_vocab_parallel_slices() {
    let be = cpu();
    for (ci, &(rows, vocab, valid, split)) in CE_TP_CASES.iter().enumerate() {
        let mut rng = Rng(ci as u64 + 111);
        let (logits, mut full) = rng.bf(rows * vocab, 8.0);
        // Targets on both sides of the cut, at its edges and at the ends of the real vocabulary.
        let mut targets: Vec<u32> = (0..rows).map(|_| rng.below(valid)).collect();
        for (r, t) in [0, split - 1, split.min(valid - 1), valid - 1].into_iter().enumerate().take(rows) {
            targets[r] = t as u32;
        }
        let mut td = Dev::new(&targets);
        let gs = 0.5 / rows as f32;
        // The reference: the fused kernel and the CPU backend on the whole vocabulary.
        let (mut grad_ref, mut loss_ref) = (logits.clone(), vec![0.0; rows]);
        be.cross_entropy_fwd_bwd(&mut grad_ref, &mut loss_ref, &targets, vocab, valid, gs);
        let mut fused_loss = f32_nan(rows);
        run(&launch::cross_entropy(full.ptr(), fused_loss.ptr(), td.ptr(), rows, vocab, valid, gs));
        let fused_grad = to_f32(&full);

        // Phase 1 on each slice, against the CPU backend's local statistics.
        let slices = [(0, split), (split, vocab)];
        let mut shards = Vec::new();
        let mut stats = Vec::new();
        for (k, &(lo, hi)) in slices.iter().enumerate() {
            let (n, real) = (hi - lo, valid.clamp(lo, hi) - lo);
            let part = columns(&logits, vocab, lo, hi);
            let mut want = vec![0.0; 3 * rows];
            be.cross_entropy_local_stats(&part, &mut want, &targets, n, real, lo);
            let bits: Vec<bf16> = part.iter().map(|&x| bf16::from_f32(x)).collect();
            let mut d = Dev::new(&bits);
            let mut st = f32_nan(3 * rows);
            run(&launch::cross_entropy_local_stats(st.ptr(), d.ptr(), td.ptr(), rows, n, real, lo));
            let got = st.read();
            let col = |v: &[f32], j: usize| -> Vec<f32> { v.chunks(3).map(|s| s[j]).collect() };
            assert_eq!(col(&got, 0), col(&want, 0), "local max, slice {k} (case {ci})");
            check(&format!("ce_local_stats sum s{k}"), ci, &col(&got, 1), &col(&want, 1), F32_TOL);
            assert_eq!(col(&got, 2), col(&want, 2), "target logit, slice {k} (case {ci})");
            for (r, &t) in targets.iter().enumerate() {
                let inside = (lo..lo + real).contains(&(t as usize));
                assert_eq!(got[3 * r + 2], if inside { logits[r * vocab + t as usize] } else { 0.0 }, "row {r} slice {k}");
            }
            shards.push((d, part, n, real, lo));
            stats.push(got);
        }

        // The all-reduce, by hand in f64: global max, sum rescaled to it, the one nonzero target logit.
        let global: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let m = stats.iter().map(|s| s[3 * r]).fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = stats.iter().map(|s| s[3 * r + 1] as f64 * (s[3 * r] as f64 - m as f64).exp()).sum();
                [m, sum as f32, stats.iter().map(|s| s[3 * r + 2]).sum()]
            })
            .collect();
        let mut gd = Dev::new(&global);

        // Phase 2 on each slice: the losses are the whole vocabulary's, the slices' dlogits put
        // side by side are the whole vocabulary's dlogits.
        let mut grad = vec![0.0f32; rows * vocab];
        for (k, (d, part, n, real, lo)) in shards.iter_mut().enumerate() {
            let (mut cpu_grad, mut cpu_loss) = (part.clone(), vec![0.0; rows]);
            be.cross_entropy_finish(&mut cpu_grad, &mut cpu_loss, &global, &targets, *n, *real, *lo, gs);
            let mut losses = f32_nan(rows);
            run(&launch::cross_entropy_finish(d.ptr(), losses.ptr(), gd.ptr(), td.ptr(), rows, *n, *real, *lo, gs));
            let g = to_f32(d);
            check(&format!("ce_finish loss s{k} vs cpu"), ci, &losses.read(), &cpu_loss, F32_TOL);
            check(&format!("ce_finish loss s{k} vs full"), ci, &losses.read(), &loss_ref, F32_TOL);
            check(&format!("ce_finish loss s{k} vs fused"), ci, &losses.read(), &fused_loss.read(), F32_TOL);
            check(&format!("ce_finish dlogits s{k} vs cpu"), ci, &g, &cpu_grad, BF16_TOL);
            for (r, row) in g.chunks(*n).enumerate() {
                grad[r * vocab + *lo..r * vocab + *lo + *n].copy_from_slice(row);
            }
        }
        check("ce_finish dlogits vs full", ci, &grad, &grad_ref, BF16_TOL);
        check("ce_finish dlogits vs fused", ci, &grad, &fused_grad, BF16_TOL);
        assert!(grad.chunks(vocab).all(|r| r[valid..].iter().all(|&g| g == 0.0)), "padding columns must get zero gradient");
    }
}

/// Attention shapes: (batch, seq, heads, kv_heads, head_dim): GQA ratios 1, 4 and 8, both head
/// dims, sequences that are not a multiple of the 64-row tiles (or of the 16-row warp slices),
/// one shorter than a warp's slice. Small: the emulation runs every mma as a warp collective.
const ATT_CASES: &[(usize, usize, usize, usize, usize)] = &[(2, 70, 2, 2, 64), (1, 130, 4, 1, 128), (1, 70, 8, 1, 64), (2, 70, 8, 1, 128), (1, 5, 4, 2, 64)];

#[test]
fn attention_forward_and_backward() {
    let be = cpu();
    for (ci, &(batch, seq, heads, kv_heads, head_dim)) in ATT_CASES.iter().enumerate() {
        let s = AttnShape { batch, seq, heads, kv_heads, head_dim };
        let mut rng = Rng(ci as u64 + 91);
        let (nq, nk) = (batch * seq * heads * head_dim, batch * seq * kv_heads * head_dim);
        let (q, mut qd) = rng.bf(nq, 2.0);
        let (k, mut kd) = rng.bf(nk, 2.0);
        let (v, mut vd) = rng.bf(nk, 1.0);
        let (mut out_ref, mut lse_ref) = (vec![0.0; nq], vec![0.0; batch * heads * seq]);
        be.attention_fwd(&mut out_ref, &mut lse_ref, &q, &k, &v, s);
        let (mut out, mut lse) = (bf16_nan(nq), f32_nan(batch * heads * seq));
        let t0 = std::time::Instant::now();
        run(&launch::attention_fwd(out.ptr(), lse.ptr(), qd.ptr(), kd.ptr(), vd.ptr(), s));
        check("attention_fwd out", ci, &to_f32(&out), &out_ref, BF16_TOL);
        check("attention_fwd lse", ci, &lse.read(), &lse_ref, F32_TOL);
        eprintln!("attention case {ci} {s:?}: forward {:.2} s", t0.elapsed().as_secs_f64());

        // Backward from the kernel's own (bf16) output, as in training; the reference gets the same.
        let out_bf = to_f32(&out);
        let (dy, mut dyd) = rng.bf(nq, 1.0);
        let (mut dq_ref, mut dk_ref, mut dv_ref) = (vec![0.0; nq], vec![0.0; nk], vec![0.0; nk]);
        be.attention_bwd(&mut dq_ref, &mut dk_ref, &mut dv_ref, &dy, &q, &k, &v, &out_bf, &lse_ref, s);
        let (mut dq, mut dk, mut dv) = (bf16_nan(nq), bf16_nan(nk), bf16_nan(nk));
        let mut scratch = f32_nan(launch::attention_bwd_scratch(s));
        for l in launch::attention_bwd(dq.ptr(), dk.ptr(), dv.ptr(), scratch.ptr(), dyd.ptr(), qd.ptr(), kd.ptr(), vd.ptr(), out.ptr(), lse.ptr(), s) {
            run(&l);
        }
        check("attention_bwd dq", ci, &to_f32(&dq), &dq_ref, BF16_TOL);
        check("attention_bwd dk", ci, &to_f32(&dk), &dk_ref, BF16_TOL);
        check("attention_bwd dv", ci, &to_f32(&dv), &dv_ref, BF16_TOL);
        eprintln!("attention case {ci}: forward + backward {:.2} s", t0.elapsed().as_secs_f64());
    }
}

/// Tensor sizes of the multi-tensor kernels: one block, several blocks with a partial last one,
/// tiny, and exactly one block.
const TENSORS: &[usize] = &[1, 2 * launch::MULTI_BLOCK_ELEMS + 37, 37, launch::MULTI_BLOCK_ELEMS];

#[test]
fn adamw_multi_tensor() {
    let be = cpu();
    let mut rng = Rng(51);
    let mut state: Vec<[Vec<f32>; 3]> = TENSORS.iter().map(|&n| [rng.vec(n, 1.0), vec![0.0; n], vec![0.0; n]]).collect();
    let mut dev: Vec<[Dev<f32>; 4]> = state.iter().map(|[p, m, v]| [Dev::new(p), Dev::new(m), Dev::new(v), Dev::new(p)]).collect();
    let mut weights: Vec<Dev<bf16>> = TENSORS.iter().map(|&n| bf16_nan(n)).collect();
    for step in 1..=3 {
        let h = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step };
        let mut segs = Vec::new();
        for (i, ([p, m, v], [dp, dm, dv, dg])) in state.iter_mut().zip(dev.iter_mut()).enumerate() {
            let g = rng.vec(p.len(), 1.0);
            be.adamw(p, &g, m, v, h);
            dg.write(&g);
            segs.push(AdamSeg { master: dp.ptr(), grad: dg.ptr(), m: dm.ptr(), v: dv.ptr(), weight: weights[i].ptr(), n: g.len() as u64, block0: 0 });
        }
        let blocks = launch::adamw_table(&mut segs);
        let mut table = Dev::new(&segs);
        run(&launch::adamw(table.ptr(), segs.len(), blocks, h));
        for (i, ([p, m, v], [dp, dm, dv, _])) in state.iter().zip(&dev).enumerate() {
            check(&format!("adamw master t{i} step {step}"), i, &dp.read(), p, F32_TOL);
            check(&format!("adamw m t{i} step {step}"), i, &dm.read(), m, F32_TOL);
            check(&format!("adamw v t{i} step {step}"), i, &dv.read(), v, F32_TOL);
            check(&format!("adamw bf16 weight t{i} step {step}"), i, &to_f32(&weights[i]), p, BF16_TOL);
        }
    }
}

#[test]
fn lamb_multi_tensor() {
    let be = cpu();
    let mut rng = Rng(53);
    // Per tensor: weights, gradient (the update direction after the first phase), moments.
    let mut state: Vec<[Vec<f32>; 4]> = TENSORS.iter().map(|&n| [rng.vec(n, 1.0), vec![0.0; n], vec![0.0; n], vec![0.0; n]]).collect();
    let mut dev: Vec<[Dev<f32>; 4]> = state.iter().map(|[p, _, m, v]| [Dev::new(p), f32_nan(p.len()), Dev::new(m), Dev::new(v)]).collect();
    let mut weights: Vec<Dev<bf16>> = TENSORS.iter().map(|&n| bf16_nan(n)).collect();
    let decay = |i: usize| if i % 2 == 0 { 0.1 } else { 0.0 };
    for step in 1..=3 {
        let h = LambStep { beta1: 0.9, beta2: 0.95, eps: 1e-6, step, bias_correction: step != 2 };
        let steps: Vec<f32> = (0..TENSORS.len()).map(|i| 1e-2 * (i + 1) as f32).collect();
        let mut segs = Vec::new();
        for (i, (st, [dp, dg, dm, dv])) in state.iter_mut().zip(dev.iter_mut()).enumerate() {
            st[1] = rng.vec(st[0].len(), 1.0);
            dg.write(&st[1]);
            segs.push(LambSeg { master: dp.ptr(), grad: dg.ptr(), m: dm.ptr(), v: dv.ptr(), weight: weights[i].ptr(), n: st[0].len() as u64, block0: 0, decay: decay(i), step: steps[i] });
        }
        let mut tensors: Vec<LambTensor<CpuBackend<f32>>> = state
            .iter_mut()
            .enumerate()
            .map(|(i, [param, grad, m, v])| LambTensor { param, grad, m, v, weight_decay: decay(i) })
            .collect();
        be.lamb_moments_all(&mut tensors, h);
        be.lamb_apply_all(&mut tensors, &steps);
        let blocks = launch::lamb_table(&mut segs);
        let mut table = Dev::new(&segs);
        run(&launch::lamb_moments(table.ptr(), segs.len(), blocks, h));
        for (i, ([_, u, m, v], [_, dg, dm, dv])) in state.iter().zip(&dev).enumerate() {
            check(&format!("lamb update t{i} step {step}"), i, &dg.read(), u, F32_TOL);
            check(&format!("lamb m t{i} step {step}"), i, &dm.read(), m, F32_TOL);
            check(&format!("lamb v t{i} step {step}"), i, &dv.read(), v, F32_TOL);
        }
        run(&launch::lamb_apply(table.ptr(), segs.len(), blocks));
        for (i, ([p, ..], [dp, ..])) in state.iter().zip(&dev).enumerate() {
            check(&format!("lamb master t{i} step {step}"), i, &dp.read(), p, F32_TOL);
            check(&format!("lamb bf16 weight t{i} step {step}"), i, &to_f32(&weights[i]), p, BF16_TOL);
        }
    }
}

#[test]
fn sum_of_squares_of_each_tensor() {
    let be = cpu();
    let mut rng = Rng(67);
    let xs: Vec<Vec<f32>> = TENSORS.iter().map(|&n| rng.vec(n, 3.0)).collect();
    let mut dev: Vec<Dev<f32>> = xs.iter().map(|x| Dev::new(x)).collect();
    let mut segs: Vec<NormSeg> = dev.iter_mut().zip(&xs).map(|(d, x)| NormSeg { x: d.ptr(), n: x.len() as u64, block0: 0 }).collect();
    let blocks = launch::norm_table(&mut segs);
    let mut table = Dev::new(&segs);
    let (mut partials, mut out) = (f32_nan(blocks), poisoned(xs.len(), f64::NAN));
    for l in launch::sum_squares_each(table.ptr(), segs.len(), blocks, partials.ptr(), out.ptr()) {
        run(&l);
    }
    for (i, (got, x)) in out.read().into_iter().zip(&xs).enumerate() {
        let want = be.sum_squares(x);
        let e = (got - want).abs() / want;
        eprintln!("sum of squares of tensor {i}: {got} vs {want}, rel err {e:.2e}");
        assert!(e <= F32_TOL, "tensor {i}: {got} vs {want}");
    }
}

/// One table reduction (`launch::sum_squares` or `launch::sum`) over `xs` on the device, checked
/// against `want` (the CPU backend's f64 result).
fn table_reduction(what: &str, xs: &[Vec<f32>], want: f64, reduce: fn(DevPtr, usize, usize, DevPtr, DevPtr) -> [Launch; 2]) {
    let mut dev: Vec<Dev<f32>> = xs.iter().map(|x| Dev::new(x)).collect();
    let mut segs: Vec<NormSeg> = dev.iter_mut().zip(xs).map(|(d, x)| NormSeg { x: d.ptr(), n: x.len() as u64, block0: 0 }).collect();
    let blocks = launch::norm_table(&mut segs);
    let mut table = Dev::new(&segs);
    let (mut partials, mut out) = (f32_nan(blocks), poisoned(1, f64::NAN));
    for l in reduce(table.ptr(), segs.len(), blocks, partials.ptr(), out.ptr()) {
        run(&l);
    }
    let got = out.read()[0];
    let e = (got - want).abs() / want;
    eprintln!("{what}: {got} vs {want}, rel err {e:.2e}");
    assert!(e <= F32_TOL, "{what} {got} vs {want}");
}

#[test]
fn grad_norm_multi_tensor() {
    let be = cpu();
    let mut rng = Rng(61);
    let xs: Vec<Vec<f32>> = TENSORS.iter().map(|&n| rng.vec(n, 3.0)).collect();
    let want: f64 = xs.iter().map(|x| be.sum_squares(x)).sum();
    table_reduction("sum of squares", &xs, want, launch::sum_squares);
}

#[test]
fn sum_multi_tensor() {
    let be = cpu();
    let mut rng = Rng(63);
    // Losses are positive: a sum without cancellation, so the relative error is meaningful.
    let xs: Vec<Vec<f32>> = TENSORS.iter().map(|&n| rng.vec(n, 5.0).into_iter().map(|v| v + 6.0).collect()).collect();
    let want: f64 = xs.iter().map(|x| be.sum(x)).sum();
    table_reduction("sum", &xs, want, launch::sum);
}

/// Lengths of the elementwise tests: 1, below, at and just above one 16-byte vector of either
/// dtype (4 fp32, 8 bf16), one block of threads and a bit, and many blocks with a ragged end.
const ELEM_LENS: &[usize] = &[1, 3, 4, 5, 7, 8, 9, 17, 256 * 8 + 5, 100_003];
/// Elements around the range an elementwise launch covers, which it must leave as they were.
const ELEM_GUARD: usize = 9;

/// `x` stored as `t` (bf16 rounded to nearest even): the stored values and their bytes.
fn stored(t: Dtype, x: &[f32]) -> (Vec<f32>, Vec<u8>) {
    match t {
        Dtype::Bf16 => {
            let b: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            (b.iter().map(|v| v.to_f32()).collect(), b.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        Dtype::F32 => (x.to_vec(), x.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

/// One elementwise case: `len` elements of type `t` starting `offset` elements into buffers
/// with `ELEM_GUARD` more elements after them (offset 0: 16-byte vector path and scalar tail;
/// offset 1: a start that is not 16-byte aligned, so the scalar path throughout). `dst0` and
/// `src` are whole buffers; `reference` computes the expected range with the CPU backend from
/// the stored range values; `kernel` launches on (dst, src, len) device addresses of the range.
/// The whole `dst` buffer must come back bit for bit equal to `dst0` with the range replaced by
/// the reference rounded once to `t`.
#[allow(clippy::too_many_arguments)]
fn elementwise_case(
    what: &str,
    t: Dtype,
    len: usize,
    offset: usize,
    dst0: &[f32],
    src: &[f32],
    reference: impl Fn(&mut Vec<f32>, &Vec<f32>),
    kernel: impl Fn(DevPtr, DevPtr) -> Launch,
) {
    let range = offset..offset + len;
    let (dst_vals, dst_bytes) = stored(t, dst0);
    let (src_vals, src_bytes) = stored(t, src);
    let mut got = Dev::new(&dst_bytes);
    let mut s = Dev::new(&src_bytes);
    let at = |d: &mut Dev<u8>| d.ptr() + (offset * t.bytes()) as u64;
    run(&kernel(at(&mut got), at(&mut s)));
    let mut range_ref = dst_vals[range.clone()].to_vec();
    reference(&mut range_ref, &src_vals[range.clone()].to_vec());
    let mut want_vals = dst_vals.clone();
    want_vals[range].copy_from_slice(&range_ref);
    let (_, want) = stored(t, &want_vals);
    let got = got.read();
    let bad = got.chunks(t.bytes()).zip(want.chunks(t.bytes())).position(|(g, w)| g != w);
    assert!(bad.is_none(), "{what} {t:?} len {len} offset {offset}: element {} differs (bytes {:?} vs {:?})", bad.unwrap_or(0), got.chunks(t.bytes()).nth(bad.unwrap_or(0)), want.chunks(t.bytes()).nth(bad.unwrap_or(0)));
}

/// add_assign and scale (fp32 arithmetic, one rounding to the stored type), zero fill and
/// copy, for bf16 and fp32, against the CPU backend's f32 ops, bit for bit, with NaN-poisoned
/// guards around the range that must stay NaN.
#[test]
fn elementwise_add_scale_fill_copy() {
    let be = cpu();
    let mut rng = Rng(75);
    for t in [Dtype::Bf16, Dtype::F32] {
        for &len in ELEM_LENS {
            for offset in [0usize, 1] {
                let total = offset + len + ELEM_GUARD;
                let poison_guards = |mut v: Vec<f32>| {
                    v[..offset].fill(f32::NAN);
                    v[offset + len..].fill(f32::NAN);
                    v
                };
                let x = poison_guards(rng.vec(total, 4.0));
                let y = rng.vec(total, 4.0);
                let nan = vec![f32::NAN; total];
                let n = len;
                elementwise_case("add_assign", t, len, offset, &x, &y, |d, s| be.add_assign(d, s), |d, s| launch::add_assign(t, d, s, n));
                elementwise_case("scale", t, len, offset, &x, &y, |d, _| be.scale(d, -0.37), |d, _| launch::scale(t, d, -0.37, n));
                elementwise_case("fill_zero", t, len, offset, &nan, &y, |d, _| be.fill_zero(d), |d, _| launch::fill_zero(d, n * t.bytes()));
                elementwise_case("copy", t, len, offset, &nan, &y, |d, s| be.copy(d, s), |d, s| launch::copy(d, s, n * t.bytes()));
            }
        }
    }
}

#[test]
fn casts_round_to_nearest_even() {
    let mut rng = Rng(71);
    for n in [1usize, 8, 1001, 4096] {
        let mut x = rng.vec(n, 100.0);
        // Ties: 1 + 2^-8 rounds down to 1 (even), 1 + 3 * 2^-8 rounds up.
        x[0] = 1.0 + 1.0 / 256.0;
        let mut xd = Dev::new(&x);
        let mut b = bf16_nan(n);
        run(&launch::cast_f32_to_bf16(b.ptr(), xd.ptr(), n));
        let want: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let got = b.read();
        assert_eq!(got[0], bf16::ONE);
        assert!(got.iter().zip(&want).all(|(a, w)| a.to_bits() == w.to_bits()), "f32 -> bf16 (n = {n})");
        let mut back = f32_nan(n);
        run(&launch::cast_bf16_to_f32(back.ptr(), b.ptr(), n));
        assert_eq!(back.read(), to_f32(&b), "bf16 -> f32 (n = {n})");
    }
}

/// GEMM shapes (m, k, n): odd sizes, a tile-sized product, a long reduction to one column.
const GEMM_CASES: &[(usize, usize, usize)] = &[(5, 7, 3), (37, 66, 19), (64, 128, 96), (3, 256, 1)];

/// `x` (row-major, `cols` columns) in rows of `ld` elements, the padding NaN.
fn padded<T: Plain>(x: &[f32], cols: usize, ld: usize, nan: T, conv: impl Fn(f32) -> T) -> Vec<T> {
    x.chunks(cols).flat_map(|r| r.iter().map(|&v| conv(v)).chain(std::iter::repeat_n(nan, ld - cols))).collect()
}

/// The runtime's GEMM (cuBLASLt on a GPU) against the CPU backend's on the same bf16 values:
/// every transpose, bf16 and fp32 outputs, `beta = 0` on a NaN-poisoned output (cuBLASLt does
/// not read C then) and accumulation (`alpha = 0.5`, `beta = 1`, as weight gradients), leading
/// dimensions wider than the rows with NaN in the gaps (a read of the gap poisons the result; a
/// write into it is caught).
#[test]
fn gemm_cublaslt_contract() {
    let be = cpu();
    for (ci, &(m, k, n)) in GEMM_CASES.iter().enumerate() {
        let mut rng = Rng(ci as u64 + 121);
        let pad = if ci % 2 == 1 { 3 } else { 0 };
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
            let (br, bc) = if trans_b { (n, k) } else { (k, n) };
            let bf_vals = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| bf16::from_f32(x).to_f32()).collect() };
            let a = bf_vals(rng.vec(ar * ac, 1.0));
            let b = bf_vals(rng.vec(br * bc, 1.0));
            let mut ad = Dev::new(&padded(&a, ac, ac + pad, bf16::NAN, bf16::from_f32));
            let mut bd = Dev::new(&padded(&b, bc, bc + pad, bf16::NAN, bf16::from_f32));
            let ldc = n + pad;
            for out in [GemmOut::F32, GemmOut::Bf16] {
                for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0)] {
                    let c0 = if beta == 0.0 { vec![0.0; m * n] } else { bf_vals(rng.vec(m * n, 1.0)) };
                    let mut want = c0.clone();
                    be.gemm(&mut want, &a, &b, m, k, n, trans_a, trans_b, alpha, beta);
                    let start: Vec<f32> = if beta == 0.0 { vec![f32::NAN; m * n] } else { c0 };
                    let what = format!("gemm {m}x{k}x{n} ta {trans_a} tb {trans_b} {out:?} beta {beta}");
                    let (got, tol) = match out {
                        GemmOut::F32 => {
                            let mut cd = Dev::new(&padded(&start, n, ldc, f32::NAN, |x| x));
                            gemm(&mut ad, &mut bd, cd.ptr(), m, k, n, trans_a, trans_b, ldc, out, alpha, beta, pad);
                            (cd.read(), F32_TOL)
                        }
                        GemmOut::Bf16 => {
                            let mut cd = Dev::new(&padded(&start, n, ldc, bf16::NAN, bf16::from_f32));
                            gemm(&mut ad, &mut bd, cd.ptr(), m, k, n, trans_a, trans_b, ldc, out, alpha, beta, pad);
                            (cd.read().iter().map(|x| x.to_f32()).collect(), BF16_TOL)
                        }
                    };
                    let window: Vec<f32> = got.chunks(ldc).flat_map(|r| r[..n].iter().copied()).collect();
                    check(&what, ci, &window, &want, tol);
                    assert!(got.chunks(ldc).all(|r| r[n..].iter().all(|x| x.is_nan())), "{what}: wrote into the gaps of ldc");
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm(a: &mut Dev<bf16>, b: &mut Dev<bf16>, c: DevPtr, m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, ldc: usize, out: GemmOut, alpha: f32, beta: f32, pad: usize) {
    let lda = if trans_a { m } else { k } + pad;
    let ldb = if trans_b { k } else { n } + pad;
    let g = Gemm { m, n, k, a: a.ptr(), lda, trans_a, b: b.ptr(), ldb, trans_b, c, ldc, out, alpha, beta };
    // SAFETY: a, b and c are live buffers of the runtime laid out as `g` says.
    unsafe { runtime().gemm(&g) }.unwrap_or_else(|e| panic!("gemm: {e:#}"));
}

#[test]
fn simt_primitives_known_answers() {
    let threads = 64;
    let mut out = poisoned(6 * threads, i32::MIN);
    run(&launch::selftest_warp(out.ptr(), threads));
    for (t, o) in out.read().chunks(6).enumerate() {
        let (lane, w0) = (t % 32, t - t % 32);
        let down = if lane == 31 { t } else { t + 1 };
        let want = [10 * (w0 + (lane ^ 16)), 10 * down, 10 * (w0 + 3), 0xAAAA_AAAAu32 as i32 as usize, 1, 0];
        let got: Vec<usize> = o.iter().map(|&x| x as u32 as usize).collect();
        let want: Vec<usize> = want.iter().map(|&x| x as u32 as usize).collect();
        assert_eq!(got, want, "thread {t}: [xor16, down1, lane3, ballot, any, all]");
    }
    let (blocks, threads) = (3, 96);
    let mut out = Dev::new(&[i32::MIN, 0].repeat(blocks));
    run(&launch::selftest_block(out.ptr(), blocks, threads));
    let sum = (threads * (threads + 1) / 2) as i32;
    assert_eq!(out.read(), [sum, threads as i32].repeat(blocks));
}

/// The bf16 bits of a row-major matrix, as the PTX fragments pack them.
fn bits(b: &Dev<bf16>) -> Vec<u32> {
    b.read().iter().map(|x| x.to_bits() as u32).collect()
}

/// One mma.m16n8k16 (fragments loaded by the PTX ISA's layout) against a plain triple loop.
/// Values are small integers and halves, so every product and sum is exact in f32: the result
/// must match bit for bit, on the emulation and on a GPU.
#[test]
fn mma_m16n8k16_bf16_against_a_loop() {
    let mut rng = Rng(101);
    let mut ints = |n: usize| -> (Vec<f32>, Dev<bf16>) {
        let v: Vec<bf16> = (0..n).map(|_| bf16::from_f32((rng.uniform() * 8.0).round() / 2.0)).collect();
        (v.iter().map(|x| x.to_f32()).collect(), Dev::new(&v))
    };
    let (a, mut ad) = ints(16 * 16);
    let (b, mut bd) = ints(16 * 8);
    let c: Vec<f32> = (0..16 * 8).map(|i| (i as f32) - 64.0).collect();
    let mut cd = Dev::new(&c);
    let mut d = f32_nan(16 * 8);
    run(&launch::selftest_mma(d.ptr(), ad.ptr(), bd.ptr(), cd.ptr()));
    let mut want = c.clone();
    for i in 0..16 {
        for j in 0..8 {
            for k in 0..16 {
                want[i * 8 + j] += a[i * 16 + k] * b[k * 8 + j];
            }
        }
    }
    assert_eq!(d.read(), want, "mma.m16n8k16 d = a b + c");
}

/// cp.async (row 5 zero-filled) then ldmatrix x4 and x4.trans, against the PTX ISA's layout:
/// matrix i is rows 8 (i % 2).., columns 8 (i / 2).. of the 16x16 tile; lane l (g = l / 4,
/// t = l % 4) gets row g, columns 2t, 2t + 1 of each (of the transpose with .trans).
#[test]
fn ldmatrix_and_cp_async_layouts() {
    let mut rng = Rng(102);
    let (_, mut src) = rng.bf(16 * 16, 4.0);
    let mut m = bits(&src);
    m[5 * 16..6 * 16].iter_mut().for_each(|x| *x = 0);
    let mut out = poisoned(32 * 8, u32::MAX);
    run(&launch::selftest_ldmatrix(out.ptr(), src.ptr()));
    let got = out.read();
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for i in 0..4 {
            let at = |r: usize, c: usize| m[(8 * (i % 2) + r) * 16 + 8 * (i / 2) + c];
            let plain = at(g, 2 * t) | at(g, 2 * t + 1) << 16;
            let trans = at(2 * t, g) | at(2 * t + 1, g) << 16;
            assert_eq!(got[8 * lane + i], plain, "ldmatrix x4: lane {lane} matrix {i}");
            assert_eq!(got[8 * lane + 4 + i], trans, "ldmatrix x4.trans: lane {lane} matrix {i}");
        }
    }
}
