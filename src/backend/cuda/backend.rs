//! The CUDA training backend: the `Backend` trait over a device `Runtime` (a GPU through
//! driver.rs, or its emulation, emulated.rs), with mixed precision chosen per buffer role
//! (docs/GPU_PATH.md): activations bf16; gradients, statistics and optimizer state fp32; weights
//! an fp32 master plus the bf16 shadow that GEMMs and kernels read, both written by `upload` and
//! by the AdamW and LAMB launches (weight copies, whose masters ZeRO-1's optimizer keeps: bf16 only). Every op is one or a few launch.rs launches or one cuBLASLt-contract GEMM
//! (bf16 operands, fp32 sums; weight gradients accumulate into fp32 with beta = 1). Scratch
//! (kernel partials, AdamW/LAMB/norm segment tables, collective and host staging) is kept per backend
//! and grows to the largest request, so a training step allocates no device memory after the
//! first; the runtime is wrapped in instrument.rs's meter (and timer, for the benchmark).
//!
//! The trait's ops cannot return errors: a failing device call (out of memory, a launch error)
//! ends the process with the device's message (`device_failure`); a buffer of the wrong role
//! passed to an op is a bug in the caller and panics naming the op and the operand.

use super::instrument::Instrumented;
use super::launch::{self, AdamSeg, DevPtr, Dtype, LambSeg, Launch, NormSeg};
use super::runtime::{DeviceBuf, Gemm, GemmOut, Plain, Runtime};
use crate::backend::{AdamTensor, AdamWStep, AttnShape, Backend, LambStep, LambTensor, Role, SideLane};
use crate::parallel::device::DeviceComm;
use crate::parallel::Collectives;
use anyhow::Result;
use half::bf16;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Ends the process after a device call failed: not a bug in swallow, so no panic backtrace.
/// Under mpirun, the rank's exit without MPI_Finalize ends the job.
fn device_failure(what: &str, e: anyhow::Error) -> ! {
    let line = format!("error: {what} failed on the device: {e:#}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    std::process::exit(1)
}

fn ok<T>(what: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| device_failure(what, e))
}

/// How a buffer is stored on the device, by role.
enum Storage {
    /// Activations, and weight copies (`Role::WeightCopy`).
    Bf16(DeviceBuf<bf16>),
    /// Gradients, statistics, optimizer state.
    F32(DeviceBuf<f32>),
    /// Weights: the fp32 master the optimizer updates and the bf16 copy everything else reads.
    Weight { master: DeviceBuf<f32>, shadow: DeviceBuf<bf16> },
}

/// A buffer of the CUDA backend: `len` elements holding `role`.
pub struct CudaBuf {
    role: Role,
    len: usize,
    st: Storage,
}

impl CudaBuf {
    /// The bf16 elements an op reads or writes (an activation, or a weight's shadow).
    fn bf16(&self, op: &str, operand: &str) -> DevPtr {
        match &self.st {
            Storage::Bf16(b) => b.ptr(),
            Storage::Weight { shadow, .. } => shadow.ptr(),
            Storage::F32(_) => panic!("{op}: {operand} must be bf16 (an activation or a weight), not a {:?} buffer", self.role),
        }
    }
    /// The fp32 elements an op reads or writes (a gradient, statistic or optimizer state).
    fn f32(&self, op: &str, operand: &str) -> DevPtr {
        match &self.st {
            Storage::F32(b) => b.ptr(),
            _ => panic!("{op}: {operand} must be fp32 (a gradient, statistic or optimizer state), not a {:?} buffer", self.role),
        }
    }
    /// The element type and address of a plain (non-weight) buffer.
    fn plain(&self, op: &str) -> (Dtype, DevPtr) {
        match &self.st {
            Storage::Bf16(b) => (Dtype::Bf16, b.ptr()),
            Storage::F32(b) => (Dtype::F32, b.ptr()),
            Storage::Weight { .. } => panic!("{op}: not defined on weights (role {:?})", self.role),
        }
    }
}

/// `buf` (not a weight) as the group's blocks: (element type, elements per block, its address,
/// this rank's block's).
fn own_block(op: &str, buf: &CudaBuf, group: &dyn Collectives) -> (Dtype, usize, DevPtr, DevPtr) {
    let n = buf.len / group.size();
    assert_eq!(buf.len, n * group.size(), "{op}: {} elements are not {} blocks", buf.len, group.size());
    let (t, p) = buf.plain(op);
    (t, n, p, p + (t.bytes() * n * group.rank()) as DevPtr)
}

/// Per-backend scratch, grown to the largest request.
struct Scratch {
    /// fp32 kernel scratch (RMSNorm dw partials, attention row dots, bf16 → fp32 casts).
    work: Option<DeviceBuf<f32>>,
    /// Per-block partials of the sums.
    partials: Option<DeviceBuf<f32>>,
    /// Send and receive staging of device collectives (fp32 copies of bf16 buffers for MPI).
    comm_send: Option<DeviceBuf<f32>>,
    comm_recv: Option<DeviceBuf<f32>>,
    sum_out: DeviceBuf<f64>,
    /// One sum per tensor (`sum_squares_each`).
    sums_each: Option<DeviceBuf<f64>>,
    /// Segment tables of the multi-tensor AdamW, LAMB and sums.
    adam_table: Option<DeviceBuf<AdamSeg>>,
    lamb_table: Option<DeviceBuf<LambSeg>>,
    norm_table: Option<DeviceBuf<NormSeg>>,
    /// Host staging of bf16 copies.
    host_bf16: Vec<bf16>,
}

/// `slot`'s buffer of at least `len` floats (reallocated when too small).
fn grow<T: Plain>(rt: &Arc<dyn Runtime>, slot: &mut Option<DeviceBuf<T>>, len: usize) -> DevPtr {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = None;
        *slot = Some(ok("allocating scratch", DeviceBuf::uninit(rt, len)));
    }
    slot.as_ref().unwrap().ptr()
}

pub struct CudaBackend {
    rt: Arc<dyn Runtime>,
    instruments: Arc<Instrumented>,
    scratch: Mutex<Scratch>,
    /// Inside `side_work(lane)`: 1 + the lane, whose side stream stream-ordered collectives go
    /// to; 0 outside.
    on_side: AtomicUsize,
    /// Collectives issued to each lane's side stream so far.
    side_issued: [AtomicUsize; 2],
}

impl CudaBackend {
    pub fn new(runtime: Arc<dyn Runtime>) -> Result<CudaBackend> {
        let instruments = Arc::new(Instrumented::new(runtime));
        let rt: Arc<dyn Runtime> = instruments.clone();
        let scratch = Scratch {
            work: None,
            partials: None,
            comm_send: None,
            comm_recv: None,
            sum_out: DeviceBuf::uninit(&rt, 1)?,
            sums_each: None,
            adam_table: None,
            lamb_table: None,
            norm_table: None,
            host_bf16: Vec::new(),
        };
        Ok(CudaBackend { rt, instruments, scratch: Mutex::new(scratch), on_side: AtomicUsize::new(0), side_issued: Default::default() })
    }

    /// One line naming the device.
    pub fn describe(&self) -> String {
        self.rt.describe()
    }

    /// This backend's device memory (live, peak, allocations) and per-kernel timing.
    pub fn instruments(&self) -> &Instrumented {
        &self.instruments
    }

    /// Waits for the device's work so far.
    pub fn synchronize(&self) -> Result<()> {
        self.rt.synchronize()
    }

    fn scratch(&self) -> std::sync::MutexGuard<'_, Scratch> {
        self.scratch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, l: &Launch) {
        // SAFETY: every launch below is built from live buffers of this backend whose lengths
        // the op checked against the shapes it passes.
        ok(l.kernel, unsafe { self.rt.launch(l) })
    }

    fn buf<T: Plain>(&self, len: usize) -> DeviceBuf<T> {
        ok("allocating device memory", DeviceBuf::uninit(&self.rt, len))
    }

    /// Views at `places` into one zero-filled allocation of `total` elements of `T`.
    fn views_of<T: Plain>(&self, total: usize, places: &[(usize, usize)], role: Role, storage: fn(DeviceBuf<T>) -> Storage) -> Vec<CudaBuf> {
        let base = Arc::new(self.buf::<T>(total));
        self.zero_fill(base.ptr(), std::mem::size_of::<T>() * total);
        places.iter().map(|&(start, len)| CudaBuf { role, len, st: storage(DeviceBuf::view(&base, start, len)) }).collect()
    }

    fn zero_fill(&self, ptr: DevPtr, bytes: usize) {
        if bytes > 0 {
            self.run(&launch::fill_zero(ptr, bytes));
        }
    }

    /// Writes `host` rounded to bf16 (nearest even, as the cast kernel) into `dst`.
    fn write_bf16(&self, dst: &mut DeviceBuf<bf16>, host: &[f32]) {
        let mut s = self.scratch();
        s.host_bf16.clear();
        s.host_bf16.extend(host.iter().map(|&x| bf16::from_f32(x)));
        ok("upload", dst.write(&s.host_bf16));
    }

    /// fp32 address of `buf`'s elements: its own, or a fp32 copy in `work` for bf16 buffers.
    fn as_f32(&self, s: &mut Scratch, buf: &CudaBuf) -> DevPtr {
        match &buf.st {
            Storage::F32(b) => b.ptr(),
            Storage::Weight { master, .. } => master.ptr(),
            Storage::Bf16(b) => {
                let w = grow(&self.rt, &mut s.work, buf.len);
                self.run(&launch::cast_bf16_to_f32(w, b.ptr(), buf.len));
                w
            }
        }
    }

    /// The stream a collective of `dc` goes to: the lane's side stream inside `side_work` when
    /// `dc` is stream-ordered (NCCL), else the default stream (0; CUDA-aware MPI runs when called).
    fn stream_for(&self, dc: &dyn DeviceComm) -> u64 {
        match self.on_side.load(Ordering::Relaxed) {
            on if on > 0 && dc.stream_ordered() => {
                let lane = SideLane::ALL[on - 1];
                self.side_issued[lane as usize].fetch_add(1, Ordering::Relaxed);
                ok("opening a side stream", self.rt.side_stream(lane))
            }
            _ => 0,
        }
    }

    /// Makes the device's work so far visible to `dc`: a communicator outside the device's stream
    /// order (CUDA-aware MPI) reads device memory when called.
    fn ready_for(&self, dc: &dyn DeviceComm) {
        if !dc.stream_ordered() {
            ok("synchronising before a collective", self.rt.synchronize());
        }
    }

    /// Runs collective `op(send, recv, dtype, stream)` of `src` into `dst`, directly when `dc`
    /// takes the buffers' type (on a side stream inside `side_work`), else through fp32 copies.
    fn collective(&self, dc: &dyn DeviceComm, what: &str, src: &CudaBuf, dst: &CudaBuf, op: impl FnOnce(DevPtr, DevPtr, Dtype, u64) -> Result<()>) {
        let ((t, s_ptr), (dt, d_ptr)) = (src.plain(what), dst.plain(what));
        assert_eq!(t, dt, "{what}: a {:?} buffer into a {:?} one", src.role, dst.role);
        if dc.supports(t) {
            self.ready_for(dc);
            return ok(what, op(s_ptr, d_ptr, t, self.stream_for(dc)));
        }
        let mut s = self.scratch();
        let a = grow(&self.rt, &mut s.comm_send, src.len);
        let b = grow(&self.rt, &mut s.comm_recv, dst.len);
        self.run(&launch::cast_bf16_to_f32(a, s_ptr, src.len));
        self.ready_for(dc);
        ok(what, op(a, b, Dtype::F32, 0));
        self.run(&launch::cast_f32_to_bf16(d_ptr, b, dst.len));
    }

    /// One of the table reductions (`launch::sum`, `launch::sum_squares`) of `buf`.
    fn reduce(&self, buf: &CudaBuf, which: fn(DevPtr, usize, usize, DevPtr, DevPtr) -> [Launch; 2]) -> f64 {
        if buf.len == 0 {
            return 0.0;
        }
        let mut s = self.scratch();
        let x = self.as_f32(&mut s, buf);
        self.reduce_table(&mut s, vec![NormSeg { x, n: buf.len as u64, block0: 0 }], which)
    }

    /// A table reduction over fp32 segments (none empty), in one pass.
    fn reduce_table(&self, s: &mut Scratch, mut segs: Vec<NormSeg>, which: fn(DevPtr, usize, usize, DevPtr, DevPtr) -> [Launch; 2]) -> f64 {
        if segs.is_empty() {
            return 0.0;
        }
        let blocks = launch::norm_table(&mut segs);
        let table = grow(&self.rt, &mut s.norm_table, segs.len());
        ok("upload", s.norm_table.as_mut().unwrap().write_prefix(&segs));
        let partials = grow(&self.rt, &mut s.partials, blocks);
        for l in which(table, segs.len(), blocks, partials, s.sum_out.ptr()) {
            self.run(&l);
        }
        ok("download", s.sum_out.read())[0]
    }

    /// One AdamW launch over `segs` (none empty).
    fn adamw_table(&self, mut segs: Vec<AdamSeg>, h: AdamWStep) {
        if segs.is_empty() {
            return;
        }
        let blocks = launch::adamw_table(&mut segs);
        let mut s = self.scratch();
        let table = grow(&self.rt, &mut s.adam_table, segs.len());
        ok("upload", s.adam_table.as_mut().unwrap().write_prefix(&segs));
        self.run(&launch::adamw(table, segs.len(), blocks, h));
    }

    /// One LAMB launch of `phase` over the non-empty tensors.
    fn lamb_table(&self, tensors: &[LambTensor<'_, Self>], phase: LambPhase) {
        let mut segs: Vec<LambSeg> = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let Some(a) = adam_seg(t.param, t.grad, t.m, t.v) else { continue };
            let step = match phase {
                LambPhase::Moments(_) => 0.0,
                LambPhase::Apply(steps) => steps[i],
            };
            segs.push(LambSeg { master: a.master, grad: a.grad, m: a.m, v: a.v, weight: a.weight, n: a.n, block0: 0, decay: t.weight_decay, step });
        }
        if segs.is_empty() {
            return;
        }
        let blocks = launch::lamb_table(&mut segs);
        let mut s = self.scratch();
        let table = grow(&self.rt, &mut s.lamb_table, segs.len());
        ok("upload", s.lamb_table.as_mut().unwrap().write_prefix(&segs));
        self.run(&match phase {
            LambPhase::Moments(h) => launch::lamb_moments(table, segs.len(), blocks, h),
            LambPhase::Apply(_) => launch::lamb_apply(table, segs.len(), blocks),
        });
    }
}

/// Which of LAMB's two launches (`Backend::lamb_moments_all`, `lamb_apply_all`).
#[derive(Clone, Copy)]
enum LambPhase<'a> {
    Moments(LambStep),
    /// Each tensor's step (the learning rate times its trust ratio).
    Apply(&'a [f32]),
}

/// The fp32 elements of a gradient, statistic, optimizer state or weight master; None for bf16.
fn fp32_elements(b: &CudaBuf) -> Option<DevPtr> {
    match &b.st {
        Storage::F32(x) | Storage::Weight { master: x, .. } => Some(x.ptr()),
        Storage::Bf16(_) => None,
    }
}

/// The AdamW segment of one tensor: `param` a weight (master updated, shadow rewritten in the same
/// launch) or an fp32 buffer (ZeRO-1's master segments); None when empty.
fn adam_seg(param: &CudaBuf, grad: &CudaBuf, m: &CudaBuf, v: &CudaBuf) -> Option<AdamSeg> {
    for b in [grad, m, v] {
        same_len("adamw", param, b);
    }
    let (master, weight) = match &param.st {
        Storage::Weight { master, shadow } => (master.ptr(), shadow.ptr()),
        Storage::F32(b) => (b.ptr(), 0),
        Storage::Bf16(_) => panic!("adamw: the parameter is a bf16 activation buffer"),
    };
    let (g, m, v) = (grad.f32("adamw", "grad"), m.f32("adamw", "m"), v.f32("adamw", "v"));
    (param.len > 0).then_some(AdamSeg { master, grad: g, m, v, weight, n: param.len as u64, block0: 0 })
}

fn same_len(op: &str, a: &CudaBuf, b: &CudaBuf) {
    assert_eq!(a.len, b.len, "{op}: buffers of {} and {} elements", a.len, b.len);
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Ids = DeviceBuf<u32>;

    fn name(&self) -> &'static str {
        "cuda-bf16"
    }

    /// A buffer of no stated role: fp32, like a statistic.
    fn zeros(&self, len: usize) -> CudaBuf {
        self.zeros_as(len, Role::Stat)
    }

    fn zeros_as(&self, len: usize, role: Role) -> CudaBuf {
        let st = match role {
            Role::Activation | Role::WeightCopy => Storage::Bf16(self.buf(len)),
            Role::Grad | Role::Stat | Role::OptimState => Storage::F32(self.buf(len)),
            Role::Weight => Storage::Weight { master: self.buf(len), shadow: self.buf(len) },
        };
        let mut b = CudaBuf { role, len, st };
        self.fill_zero(&mut b);
        b
    }

    fn shared_views(&self, total: usize, places: &[(usize, usize)], role: Role) -> Option<Vec<CudaBuf>> {
        Some(match role {
            Role::Grad => self.views_of(total, places, role, Storage::F32),
            Role::WeightCopy => self.views_of(total, places, role, Storage::Bf16),
            _ => panic!("shared_views: {role:?} buffers are not shared"),
        })
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn upload(&self, host: &[f32], dst: &mut CudaBuf) {
        assert_eq!(host.len(), dst.len, "upload of {} elements into a buffer of {}", host.len(), dst.len);
        match &mut dst.st {
            Storage::F32(b) => ok("upload", b.write(host)),
            Storage::Bf16(b) => self.write_bf16(b, host),
            Storage::Weight { master, shadow } => {
                ok("upload", master.write(host));
                self.write_bf16(shadow, host);
            }
        }
    }

    fn download(&self, src: &CudaBuf) -> Vec<f32> {
        let mut v = vec![0.0; src.len];
        self.download_into(src, &mut v);
        v
    }

    fn download_into(&self, src: &CudaBuf, dst: &mut [f32]) {
        assert_eq!(dst.len(), src.len, "download of a buffer of {} elements into {}", src.len, dst.len());
        match &src.st {
            Storage::F32(b) | Storage::Weight { master: b, .. } => {
                // SAFETY: f32 is `Plain`; the byte view covers exactly `dst`.
                let bytes = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, 4 * dst.len()) };
                ok("download", self.rt.download(b.ptr(), bytes));
            }
            Storage::Bf16(b) => {
                let mut s = self.scratch();
                s.host_bf16.resize(src.len, bf16::ZERO);
                // SAFETY: bf16 is `Plain`; the byte view covers exactly the staging vector.
                let bytes = unsafe { std::slice::from_raw_parts_mut(s.host_bf16.as_mut_ptr() as *mut u8, 2 * src.len) };
                ok("download", self.rt.download(b.ptr(), bytes));
                dst.iter_mut().zip(&s.host_bf16).for_each(|(d, x)| *d = x.to_f32());
            }
        }
    }

    fn upload_ids(&self, host: &[u32], dst: &mut DeviceBuf<u32>) {
        ok("upload", dst.write(host))
    }

    fn zeros_ids(&self, len: usize) -> DeviceBuf<u32> {
        ok("allocating device memory", DeviceBuf::from_slice(&self.rt, &vec![0u32; len]))
    }

    fn fill_zero(&self, buf: &mut CudaBuf) {
        match &buf.st {
            Storage::Bf16(b) => self.zero_fill(b.ptr(), 2 * buf.len),
            Storage::F32(b) => self.zero_fill(b.ptr(), 4 * buf.len),
            Storage::Weight { master, shadow } => {
                self.zero_fill(master.ptr(), 4 * buf.len);
                self.zero_fill(shadow.ptr(), 2 * buf.len);
            }
        }
    }

    /// Copies between buffers of the same element type, or converts between bf16 and fp32.
    fn copy(&self, dst: &mut CudaBuf, src: &CudaBuf) {
        same_len("copy", dst, src);
        if dst.len == 0 {
            return;
        }
        let n = dst.len;
        let ((dt, d), (st, s)) = (dst.plain("copy"), src.plain("copy"));
        self.run(&match (dt, st) {
            (Dtype::Bf16, Dtype::F32) => launch::cast_f32_to_bf16(d, s, n),
            (Dtype::F32, Dtype::Bf16) => launch::cast_bf16_to_f32(d, s, n),
            _ => launch::copy(d, s, n * dt.bytes()),
        });
    }

    fn copy_range(&self, dst: &mut CudaBuf, dst_at: usize, src: &CudaBuf, src_at: usize, n: usize) {
        assert!(dst_at + n <= dst.len && src_at + n <= src.len, "copy_range: {n} elements from {src_at} of {} into {dst_at} of {}", src.len, dst.len);
        if n == 0 {
            return;
        }
        // (element type, address of the first element copied) of the source and the targets.
        let at = |t: Dtype, p: DevPtr, i: usize| (t, p + (i * t.bytes()) as u64);
        let from = match &src.st {
            Storage::Bf16(b) => at(Dtype::Bf16, b.ptr(), src_at),
            Storage::F32(b) | Storage::Weight { master: b, .. } => at(Dtype::F32, b.ptr(), src_at),
        };
        let targets = match &dst.st {
            Storage::Bf16(b) => vec![at(Dtype::Bf16, b.ptr(), dst_at)],
            Storage::F32(b) => vec![at(Dtype::F32, b.ptr(), dst_at)],
            Storage::Weight { master, shadow } => vec![at(Dtype::F32, master.ptr(), dst_at), at(Dtype::Bf16, shadow.ptr(), dst_at)],
        };
        for (t, d) in targets {
            self.run(&match (t, from.0) {
                (Dtype::Bf16, Dtype::F32) => launch::cast_f32_to_bf16(d, from.1, n),
                (Dtype::F32, Dtype::Bf16) => launch::cast_bf16_to_f32(d, from.1, n),
                _ => launch::copy(d, from.1, n * t.bytes()),
            });
        }
    }

    fn add_assign(&self, dst: &mut CudaBuf, src: &CudaBuf) {
        same_len("add_assign", dst, src);
        let ((dt, d), (st, s)) = (dst.plain("add_assign"), src.plain("add_assign"));
        assert_eq!(dt, st, "add_assign: a {:?} buffer added to a {:?} one", src.role, dst.role);
        if dst.len > 0 {
            self.run(&launch::add_assign(dt, d, s, dst.len));
        }
    }

    fn scale(&self, buf: &mut CudaBuf, s: f32) {
        if buf.len == 0 {
            return;
        }
        match &buf.st {
            Storage::Bf16(b) => self.run(&launch::scale(Dtype::Bf16, b.ptr(), s, buf.len)),
            Storage::F32(b) => self.run(&launch::scale(Dtype::F32, b.ptr(), s, buf.len)),
            Storage::Weight { master, shadow } => {
                self.run(&launch::scale(Dtype::F32, master.ptr(), s, buf.len));
                self.run(&launch::cast_f32_to_bf16(shadow.ptr(), master.ptr(), buf.len));
            }
        }
    }

    fn sum_squares(&self, buf: &CudaBuf) -> f64 {
        self.reduce(buf, launch::sum_squares)
    }

    fn sum(&self, buf: &CudaBuf) -> f64 {
        self.reduce(buf, launch::sum)
    }

    fn gemm(&self, c: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, alpha: f32, beta: f32) {
        assert!(a.len == m * k && b.len == k * n && c.len == m * n, "gemm: buffers of {}, {}, {} elements for m {m} k {k} n {n}", a.len, b.len, c.len);
        let (out, cp) = match &c.st {
            Storage::Bf16(x) => (GemmOut::Bf16, x.ptr()),
            Storage::F32(x) => (GemmOut::F32, x.ptr()),
            Storage::Weight { .. } => panic!("gemm: the output is a weight"),
        };
        let g = Gemm {
            m,
            n,
            k,
            a: a.bf16("gemm", "a"),
            lda: if trans_a { m } else { k },
            trans_a,
            b: b.bf16("gemm", "b"),
            ldb: if trans_b { k } else { n },
            trans_b,
            c: cp,
            ldc: n,
            out,
            alpha,
            beta,
        };
        // SAFETY: a, b and c are live buffers of exactly the sizes the shapes need (checked above).
        ok("GEMM", unsafe { self.rt.gemm(&g) })
    }

    fn embedding_fwd(&self, out: &mut CudaBuf, table: &CudaBuf, ids: &DeviceBuf<u32>, dim: usize, vocab_start: usize) {
        assert!(out.len == ids.len() * dim && table.len.is_multiple_of(dim), "embedding_fwd: out {} table {} for {} ids of dim {dim}", out.len, table.len, ids.len());
        let o = out.bf16("embedding_fwd", "out");
        self.run(&launch::embedding_fwd(o, table.bf16("embedding_fwd", "table"), ids.ptr(), ids.len(), dim, table.len / dim, vocab_start));
    }

    fn embedding_bwd(&self, dtable: &mut CudaBuf, dout: &CudaBuf, ids: &DeviceBuf<u32>, dim: usize, vocab_start: usize) {
        assert!(dout.len == ids.len() * dim && dtable.len.is_multiple_of(dim), "embedding_bwd: dout {} dtable {} for {} ids of dim {dim}", dout.len, dtable.len, ids.len());
        let d = dtable.f32("embedding_bwd", "dtable");
        let mut s = self.scratch();
        let links = grow(&self.rt, &mut s.work, launch::embedding_bwd_scratch(ids.len()));
        for l in launch::embedding_bwd(d, dout.bf16("embedding_bwd", "dout"), ids.ptr(), links, ids.len(), dim, dtable.len / dim, vocab_start) {
            self.run(&l);
        }
    }

    fn rmsnorm_fwd(&self, out: &mut CudaBuf, rstd: &mut CudaBuf, x: &CudaBuf, w: &CudaBuf, dim: usize, eps: f32) {
        let rows = x.len / dim;
        assert!(out.len == x.len && rstd.len == rows && w.len == dim, "rmsnorm_fwd: out {} rstd {} x {} w {} for dim {dim}", out.len, rstd.len, x.len, w.len);
        let (o, r) = (out.bf16("rmsnorm_fwd", "out"), rstd.f32("rmsnorm_fwd", "rstd"));
        self.run(&launch::rmsnorm_fwd(o, r, x.bf16("rmsnorm_fwd", "x"), w.bf16("rmsnorm_fwd", "w"), rows, dim, eps));
    }

    fn rmsnorm_bwd(&self, dx: &mut CudaBuf, dw: &mut CudaBuf, dout: &CudaBuf, x: &CudaBuf, w: &CudaBuf, rstd: &CudaBuf, dim: usize) {
        let rows = x.len / dim;
        assert!(dx.len == x.len && dout.len == x.len && rstd.len == rows && w.len == dim && dw.len == dim, "rmsnorm_bwd: shapes for dim {dim}");
        let op = "rmsnorm_bwd";
        let (dxp, dwp) = (dx.bf16(op, "dx"), dw.f32(op, "dw"));
        let mut s = self.scratch();
        let work = grow(&self.rt, &mut s.work, launch::rmsnorm_bwd_scratch(rows, dim));
        for l in launch::rmsnorm_bwd(dxp, dwp, work, dout.bf16(op, "dout"), x.bf16(op, "x"), w.bf16(op, "w"), rstd.f32(op, "rstd"), rows, dim) {
            self.run(&l);
        }
    }

    fn rope_fwd(&self, x: &mut CudaBuf, cos: &CudaBuf, sin: &CudaBuf, batch: usize, seq: usize, heads: usize, head_dim: usize) {
        assert_eq!(x.len, batch * seq * heads * head_dim, "rope_fwd: x");
        let xp = x.bf16("rope_fwd", "x");
        self.run(&launch::rope(xp, cos.f32("rope_fwd", "cos"), sin.f32("rope_fwd", "sin"), batch, seq, heads, head_dim, false));
    }

    fn rope_bwd(&self, dx: &mut CudaBuf, cos: &CudaBuf, sin: &CudaBuf, batch: usize, seq: usize, heads: usize, head_dim: usize) {
        assert_eq!(dx.len, batch * seq * heads * head_dim, "rope_bwd: dx");
        let xp = dx.bf16("rope_bwd", "dx");
        self.run(&launch::rope(xp, cos.f32("rope_bwd", "cos"), sin.f32("rope_bwd", "sin"), batch, seq, heads, head_dim, true));
    }

    fn attention_fwd(&self, out: &mut CudaBuf, lse: &mut CudaBuf, q: &CudaBuf, k: &CudaBuf, v: &CudaBuf, s: AttnShape) {
        let (nq, nk) = (s.batch * s.seq * s.heads * s.head_dim, s.batch * s.seq * s.kv_heads * s.head_dim);
        assert!(out.len == nq && q.len == nq && k.len == nk && v.len == nk && lse.len == s.batch * s.heads * s.seq, "attention_fwd: shapes for {s:?}");
        let op = "attention_fwd";
        let (o, l) = (out.bf16(op, "out"), lse.f32(op, "lse"));
        self.run(&launch::attention_fwd(o, l, q.bf16(op, "q"), k.bf16(op, "k"), v.bf16(op, "v"), s));
    }

    fn attention_bwd(&self, dq: &mut CudaBuf, dk: &mut CudaBuf, dv: &mut CudaBuf, dout: &CudaBuf, q: &CudaBuf, k: &CudaBuf, v: &CudaBuf, out: &CudaBuf, lse: &CudaBuf, s: AttnShape) {
        let (nq, nk) = (s.batch * s.seq * s.heads * s.head_dim, s.batch * s.seq * s.kv_heads * s.head_dim);
        assert!(dq.len == nq && dout.len == nq && dk.len == nk && dv.len == nk && out.len == nq && lse.len == s.batch * s.heads * s.seq, "attention_bwd: shapes for {s:?}");
        let op = "attention_bwd";
        let (dqp, dkp, dvp) = (dq.bf16(op, "dq"), dk.bf16(op, "dk"), dv.bf16(op, "dv"));
        let mut sc = self.scratch();
        let work = grow(&self.rt, &mut sc.work, launch::attention_bwd_scratch(s));
        let (dy, qp, kp, vp, op_, l) = (dout.bf16(op, "dout"), q.bf16(op, "q"), k.bf16(op, "k"), v.bf16(op, "v"), out.bf16(op, "out"), lse.f32(op, "lse"));
        for launch in launch::attention_bwd(dqp, dkp, dvp, work, dy, qp, kp, vp, op_, l, s) {
            self.run(&launch);
        }
    }

    fn swiglu_fwd(&self, out: &mut CudaBuf, gate: &CudaBuf, up: &CudaBuf) {
        same_len("swiglu_fwd", out, gate);
        same_len("swiglu_fwd", out, up);
        let o = out.bf16("swiglu_fwd", "out");
        self.run(&launch::swiglu_fwd(o, gate.bf16("swiglu_fwd", "gate"), up.bf16("swiglu_fwd", "up"), out.len));
    }

    fn swiglu_bwd(&self, dgate: &mut CudaBuf, dup: &mut CudaBuf, dout: &CudaBuf, gate: &CudaBuf, up: &CudaBuf) {
        for b in [&*dup, dout, gate, up] {
            same_len("swiglu_bwd", dgate, b);
        }
        let op = "swiglu_bwd";
        let (dg, du) = (dgate.bf16(op, "dgate"), dup.bf16(op, "dup"));
        self.run(&launch::swiglu_bwd(dg, du, dout.bf16(op, "dout"), gate.bf16(op, "gate"), up.bf16(op, "up"), dgate.len));
    }

    fn cross_entropy_fwd_bwd(&self, logits: &mut CudaBuf, losses: &mut CudaBuf, targets: &DeviceBuf<u32>, vocab: usize, valid_vocab: usize, grad_scale: f32) {
        let rows = losses.len;
        assert!(logits.len == rows * vocab && targets.len() == rows, "cross_entropy_fwd_bwd: logits {} losses {} targets {} for vocab {vocab}", logits.len, rows, targets.len());
        let op = "cross_entropy_fwd_bwd";
        let (lg, ls) = (logits.bf16(op, "logits"), losses.f32(op, "losses"));
        self.run(&launch::cross_entropy(lg, ls, targets.ptr(), rows, vocab, valid_vocab, grad_scale));
    }

    fn cross_entropy_local_stats(&self, logits: &CudaBuf, stats: &mut CudaBuf, targets: &DeviceBuf<u32>, vocab_local: usize, valid_local: usize, vocab_start: usize) {
        let rows = targets.len();
        assert!(logits.len == rows * vocab_local && stats.len == 3 * rows, "cross_entropy_local_stats: logits {} stats {} for {rows} rows", logits.len, stats.len);
        let op = "cross_entropy_local_stats";
        let st = stats.f32(op, "stats");
        self.run(&launch::cross_entropy_local_stats(st, logits.bf16(op, "logits"), targets.ptr(), rows, vocab_local, valid_local, vocab_start));
    }

    fn cross_entropy_finish(&self, logits: &mut CudaBuf, losses: &mut CudaBuf, global: &CudaBuf, targets: &DeviceBuf<u32>, vocab_local: usize, valid_local: usize, vocab_start: usize, grad_scale: f32) {
        let rows = targets.len();
        assert!(logits.len == rows * vocab_local && losses.len == rows && global.len == 3 * rows, "cross_entropy_finish: shapes for {rows} rows");
        let op = "cross_entropy_finish";
        let (lg, ls) = (logits.bf16(op, "logits"), losses.f32(op, "losses"));
        let g = global.f32(op, "global");
        self.run(&launch::cross_entropy_finish(lg, ls, g, targets.ptr(), rows, vocab_local, valid_local, vocab_start, grad_scale));
    }

    fn all_reduce_on_device(&self, buf: &mut CudaBuf, group: &dyn Collectives) -> bool {
        let Some(dc) = group.device() else { return false };
        let (t, p) = buf.plain("all-reduce");
        let n = buf.len;
        if group.size() == 1 || n == 0 {
            return true;
        }
        if dc.supports(t) && dc.in_place() {
            self.ready_for(dc);
            // SAFETY: `p` holds `n` elements of `t`; the communicator sums in place.
            ok("all-reduce", unsafe { dc.all_reduce_sum(p, p, t, n, self.stream_for(dc)) });
        } else if dc.supports(t) {
            // Distinct buffers: the sum lands in `buf` from a copy of it.
            let copy = grow(&self.rt, &mut self.scratch().comm_send, (n * t.bytes()).div_ceil(4));
            self.run(&launch::copy(copy, p, n * t.bytes()));
            self.ready_for(dc);
            // SAFETY: `copy` and `p` hold `n` elements of `t`.
            ok("all-reduce", unsafe { dc.all_reduce_sum(copy, p, t, n, 0) });
        } else {
            // SAFETY: `send` and `recv` are the fp32 copies of `n` elements.
            self.collective(dc, "all-reduce", buf, buf, |s, r, t, stream| unsafe { dc.all_reduce_sum(s, r, t, n, stream) });
        }
        true
    }

    fn all_gather_on_device(&self, src: &CudaBuf, dst: &mut CudaBuf, group: &dyn Collectives) -> bool {
        let Some(dc) = group.device() else { return false };
        assert_eq!(dst.len, src.len * group.size(), "all-gather: dst is not size x src");
        let ((t, s), (dt, d)) = (src.plain("all-gather"), dst.plain("all-gather"));
        assert_eq!(t, dt, "all-gather: a {:?} buffer into a {:?} one", src.role, dst.role);
        self.ready_for(dc);
        // SAFETY: `s` holds `src.len` elements of `t`, `d` size x that (checked above); a gather
        // does not sum, so every communicator takes bf16.
        ok("all-gather", unsafe { dc.all_gather(s, d, t, src.len, self.stream_for(dc)) });
        true
    }

    fn reduce_scatter_on_device(&self, src: &CudaBuf, dst: &mut CudaBuf, group: &dyn Collectives) -> bool {
        let Some(dc) = group.device() else { return false };
        assert_eq!(src.len, dst.len * group.size(), "reduce-scatter: src is not size x dst");
        let n = dst.len;
        // SAFETY: `send` holds size x n elements, `recv` n (checked above).
        self.collective(dc, "reduce-scatter", src, dst, |s, r, t, stream| unsafe { dc.reduce_scatter_sum(s, r, t, n, stream) });
        true
    }

    fn reduce_scatter_in_place_on_device(&self, buf: &mut CudaBuf, group: &dyn Collectives) -> bool {
        let Some(dc) = group.device() else { return false };
        let (t, n, p, block) = own_block("reduce-scatter in place", buf, group);
        assert_eq!(t, Dtype::F32, "reduce-scatter in place: gradients are fp32");
        if group.size() == 1 || n == 0 {
            return true;
        }
        if dc.in_place() {
            self.ready_for(dc);
            // SAFETY: `p` holds size x n fp32 elements, `block` is block rank of them.
            ok("reduce-scatter", unsafe { dc.reduce_scatter_sum(p, block, t, n, self.stream_for(dc)) });
        } else {
            let r = grow(&self.rt, &mut self.scratch().comm_recv, n);
            self.ready_for(dc);
            // SAFETY: `p` holds size x n fp32 elements, the scratch `r` n.
            ok("reduce-scatter", unsafe { dc.reduce_scatter_sum(p, r, t, n, 0) });
            self.run(&launch::copy(block, r, 4 * n));
        }
        true
    }

    /// Any element type: a gather does not sum (bf16 weight copies go as 16-bit units).
    fn all_gather_in_place_on_device(&self, buf: &mut CudaBuf, group: &dyn Collectives) -> bool {
        let Some(dc) = group.device() else { return false };
        let (t, n, p, block) = own_block("all-gather in place", buf, group);
        if group.size() == 1 || n == 0 {
            return true;
        }
        if dc.in_place() {
            self.ready_for(dc);
            // SAFETY: `block` is block rank of the size x n elements of `t` at `p`.
            ok("all-gather", unsafe { dc.all_gather(block, p, t, n, self.stream_for(dc)) });
        } else {
            let bytes = t.bytes() * n;
            let s = grow(&self.rt, &mut self.scratch().comm_send, bytes.div_ceil(4));
            self.run(&launch::copy(s, block, bytes));
            self.ready_for(dc);
            // SAFETY: the scratch `s` holds n elements of `t`, `p` size x n.
            ok("all-gather", unsafe { dc.all_gather(s, p, t, n, 0) });
        }
        true
    }

    fn side_work(&self, lane: SideLane, f: &mut dyn FnMut()) {
        ok("ordering a side stream", self.rt.fork_side(lane));
        assert_eq!(self.on_side.swap(1 + lane as usize, Ordering::Relaxed), 0, "side work within side work");
        f();
        self.on_side.store(0, Ordering::Relaxed);
    }

    fn join_side_work(&self, lane: SideLane) {
        ok("joining a side stream", self.rt.join_side(lane));
    }

    fn mark_side_work(&self, lane: SideLane, slot: usize) {
        ok("marking a side stream", self.rt.mark_side(lane, slot));
    }

    fn wait_side_mark(&self, lane: SideLane, slot: usize) {
        ok("waiting for a side stream", self.rt.wait_side(lane, slot));
    }

    fn side_collectives(&self, lane: SideLane) -> usize {
        self.side_issued[lane as usize].load(Ordering::Relaxed)
    }

    fn send_on_device(&self, buf: &CudaBuf, group: &dyn Collectives, to: usize, tag: i32) -> bool {
        let Some(dc) = group.device() else { return false };
        let (t, p) = buf.plain("send");
        self.ready_for(dc);
        // SAFETY: `p` holds `buf.len` elements of `t` (a message is not summed: any type goes).
        ok("send", unsafe { dc.send(to, tag, p, t, buf.len) });
        true
    }

    fn recv_on_device(&self, buf: &mut CudaBuf, group: &dyn Collectives, from: usize, tag: i32) -> bool {
        let Some(dc) = group.device() else { return false };
        let (t, p) = buf.plain("receive");
        // Also for a receive: work issued before it may still read `buf`.
        self.ready_for(dc);
        // SAFETY: `p` holds `buf.len` elements of `t`.
        ok("receive", unsafe { dc.recv(from, tag, p, t, buf.len) });
        true
    }

    fn adamw(&self, param: &mut CudaBuf, grad: &CudaBuf, m: &mut CudaBuf, v: &mut CudaBuf, h: AdamWStep) {
        self.adamw_table(adam_seg(param, grad, m, v).into_iter().collect(), h);
    }

    fn adamw_all(&self, tensors: &mut [AdamTensor<'_, Self>], h: AdamWStep) {
        self.adamw_table(tensors.iter().filter_map(|t| adam_seg(t.param, t.grad, t.m, t.v)).collect(), h);
    }

    /// One pass over all buffers when they are fp32 (gradients), else buffer by buffer.
    fn sum_squares_all(&self, bufs: &[&CudaBuf]) -> f64 {
        if !bufs.iter().all(|b| fp32_elements(b).is_some()) {
            return bufs.iter().map(|b| self.sum_squares(b)).sum();
        }
        let segs = bufs.iter().filter(|b| b.len > 0).map(|b| NormSeg { x: fp32_elements(b).unwrap(), n: b.len as u64, block0: 0 }).collect();
        self.reduce_table(&mut self.scratch(), segs, launch::sum_squares)
    }

    /// Two launches and one download for all the fp32 buffers (weights by their masters: LAMB's
    /// norms); empty and bf16 buffers one by one.
    fn sum_squares_each(&self, bufs: &[&CudaBuf], out: &mut [f64]) {
        let mut at = Vec::with_capacity(bufs.len());
        let mut segs = Vec::with_capacity(bufs.len());
        for (i, b) in bufs.iter().enumerate() {
            match fp32_elements(b) {
                Some(x) if b.len > 0 => {
                    at.push(i);
                    segs.push(NormSeg { x, n: b.len as u64, block0: 0 });
                }
                _ => out[i] = self.sum_squares(b),
            }
        }
        if segs.is_empty() {
            return;
        }
        let blocks = launch::norm_table(&mut segs);
        let mut s = self.scratch();
        let table = grow(&self.rt, &mut s.norm_table, segs.len());
        ok("upload", s.norm_table.as_mut().unwrap().write_prefix(&segs));
        let partials = grow(&self.rt, &mut s.partials, blocks);
        let sums = grow(&self.rt, &mut s.sums_each, segs.len());
        for l in launch::sum_squares_each(table, segs.len(), blocks, partials, sums) {
            self.run(&l);
        }
        let host = ok("download", s.sums_each.as_ref().unwrap().read());
        for (&i, &v) in at.iter().zip(&host) {
            out[i] = v;
        }
    }

    fn lamb_moments_all(&self, tensors: &mut [LambTensor<'_, Self>], h: LambStep) {
        self.lamb_table(tensors, LambPhase::Moments(h));
    }

    fn lamb_apply_all(&self, tensors: &mut [LambTensor<'_, Self>], steps: &[f32]) {
        assert_eq!(tensors.len(), steps.len(), "lamb_apply_all: {} tensors, {} steps", tensors.len(), steps.len());
        self.lamb_table(tensors, LambPhase::Apply(steps));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::emulated::EmulatedRuntime;
    use crate::config::Config;
    use crate::parallel::ParallelGroups;
    use crate::trainer::Trainer;

    /// Every buffer of a training step is allocated when the model and optimizer are built or in
    /// the first step (scratch grows to its largest request); later steps allocate nothing. With
    /// either optimizer.
    #[test]
    fn steps_after_the_first_allocate_no_device_memory() {
        for optim in ["adamw", "lamb"] {
            let sets = ["model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1", "train.seq_len=32", "train.micro_batch=2", "train.global_batch=4", &format!("optim.name={optim}")];
            let cfg = Config::load("tiny", &sets.map(String::from)).unwrap();
            let backend = Arc::new(CudaBackend::new(Arc::new(EmulatedRuntime::new())).unwrap());
            let mut trainer = Trainer::new(backend.clone(), &cfg, ParallelGroups::single()).unwrap();
            let batch: Vec<u32> = (0..trainer.local_batch() * 33).map(|i| (i * 7919 % 4096) as u32).collect();
            trainer.train_step(&batch);
            let after_first = backend.instruments().memory();
            assert!(after_first.live > 0 && after_first.peak >= after_first.live && after_first.allocations > 0);
            for _ in 0..2 {
                let s = trainer.train_step(&batch);
                assert!(s.loss.is_finite() && !s.skipped, "{optim}: {s:?}");
            }
            assert_eq!(backend.instruments().memory(), after_first, "{optim}: after steps 2 and 3");
        }
    }
}
