//! The instruments of the CUDA backend's device runtime: `Instrumented` forwards every call to the
//! runtime under it, meters its memory (live and peak bytes, allocations: what `swallow train`
//! reports and the no-allocation-in-steady-state test reads) and, while timing is switched on (the
//! GPU benchmark), synchronises before and after each launch and GEMM and adds the wall time to
//! that kernel's (or GEMM kind's) total, with the GEMMs' FLOPs. Synchronising removes the overlap
//! of consecutive launches, so timed steps are slower than real ones: shares of the timed step,
//! not absolute times, are what it reports.

use super::launch::{DevPtr, Launch};
use super::runtime::{Gemm, GemmOut, Runtime};
use crate::backend::SideLane;
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One kernel's (or GEMM kind's) totals.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpTotals {
    pub calls: u64,
    pub seconds: f64,
    /// Floating-point operations (GEMMs: 2 m n k; 0 for kernels).
    pub flops: f64,
}

/// The name GEMMs are listed under: by output type (bf16 activations, fp32 weight gradients).
pub fn gemm_name(out: GemmOut) -> &'static str {
    match out {
        GemmOut::Bf16 => "GEMM (bf16 out)",
        GemmOut::F32 => "GEMM (fp32 out: weight gradients)",
    }
}

/// Live and peak bytes and the number of allocations of a runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    pub live: usize,
    pub peak: usize,
    pub allocations: usize,
}

pub struct Instrumented {
    inner: Arc<dyn Runtime>,
    sizes: Mutex<HashMap<DevPtr, usize>>,
    live: AtomicUsize,
    peak: AtomicUsize,
    allocations: AtomicUsize,
    on: AtomicBool,
    totals: Mutex<BTreeMap<&'static str, OpTotals>>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Runtime>) -> Self {
        Instrumented {
            inner,
            sizes: Mutex::new(HashMap::new()),
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            allocations: AtomicUsize::new(0),
            on: AtomicBool::new(false),
            totals: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn memory(&self) -> MemoryUse {
        MemoryUse { live: self.live.load(Ordering::Relaxed), peak: self.peak.load(Ordering::Relaxed), allocations: self.allocations.load(Ordering::Relaxed) }
    }

    /// Starts (or stops) timing every launch and GEMM.
    pub fn enable_timing(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// The totals so far, by name.
    pub fn totals(&self) -> BTreeMap<&'static str, OpTotals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `issue`, timed under `name` when profiling is on.
    fn timed(&self, name: &'static str, flops: f64, issue: impl FnOnce() -> Result<()>) -> Result<()> {
        if !self.on.load(Ordering::Relaxed) {
            return issue();
        }
        self.inner.synchronize()?;
        let t0 = Instant::now();
        issue()?;
        self.inner.synchronize()?;
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let t = totals.entry(name).or_default();
        t.calls += 1;
        t.seconds += t0.elapsed().as_secs_f64();
        t.flops += flops;
        Ok(())
    }
}

impl Runtime for Instrumented {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn alloc(&self, bytes: usize) -> Result<DevPtr> {
        let p = self.inner.alloc(bytes)?;
        self.sizes.lock().unwrap_or_else(|e| e.into_inner()).insert(p, bytes);
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
        self.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(p)
    }
    unsafe fn free(&self, ptr: DevPtr) -> Result<()> {
        if let Some(bytes) = self.sizes.lock().unwrap_or_else(|e| e.into_inner()).remove(&ptr) {
            self.live.fetch_sub(bytes, Ordering::Relaxed);
        }
        self.inner.free(ptr)
    }
    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.inner.upload(dst, src)
    }
    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.inner.download(src, dst)
    }
    unsafe fn launch(&self, l: &Launch) -> Result<()> {
        self.timed(l.kernel, 0.0, || self.inner.launch(l))
    }
    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        self.timed(gemm_name(g.out), 2.0 * (g.m * g.n * g.k) as f64, || self.inner.gemm(g))
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn side_stream(&self, lane: SideLane) -> Result<u64> {
        self.inner.side_stream(lane)
    }
    fn fork_side(&self, lane: SideLane) -> Result<()> {
        self.inner.fork_side(lane)
    }
    fn join_side(&self, lane: SideLane) -> Result<()> {
        self.inner.join_side(lane)
    }
    fn mark_side(&self, lane: SideLane, slot: usize) -> Result<()> {
        self.inner.mark_side(lane, slot)
    }
    fn wait_side(&self, lane: SideLane, slot: usize) -> Result<()> {
        self.inner.wait_side(lane, slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::emulated::EmulatedRuntime;
    use crate::backend::cuda::launch;
    use crate::backend::cuda::runtime::DeviceBuf;
    use half::bf16;

    /// Only what runs while timing is on is counted, by kernel name, GEMMs with 2 m n k FLOPs;
    /// memory is metered always.
    #[test]
    fn counts_launches_and_gemm_flops_while_on() {
        let p = Arc::new(Instrumented::new(Arc::new(EmulatedRuntime::new())));
        let rt: Arc<dyn Runtime> = p.clone();
        let x = DeviceBuf::from_slice(&rt, &[1.0f32; 64]).unwrap();
        let (a, c) = (DeviceBuf::from_slice(&rt, &[bf16::ONE; 6]).unwrap(), DeviceBuf::<f32>::uninit(&rt, 4).unwrap());
        let g = Gemm { m: 2, n: 2, k: 3, a: a.ptr(), lda: 3, trans_a: false, b: a.ptr(), ldb: 3, trans_b: true, c: c.ptr(), ldc: 2, out: GemmOut::F32, alpha: 1.0, beta: 0.0 };
        unsafe { rt.launch(&launch::scale(launch::Dtype::F32, x.ptr(), 2.0, 64)) }.unwrap();
        assert_eq!(p.memory(), MemoryUse { live: 256 + 12 + 16, peak: 256 + 12 + 16, allocations: 3 });
        p.enable_timing(true);
        for _ in 0..2 {
            unsafe { rt.launch(&launch::scale(launch::Dtype::F32, x.ptr(), 2.0, 64)) }.unwrap();
        }
        unsafe { rt.gemm(&g) }.unwrap();
        p.enable_timing(false);
        unsafe { rt.gemm(&g) }.unwrap();
        let t = p.totals();
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), [gemm_name(GemmOut::F32), "scale_f32"]);
        assert_eq!((t["scale_f32"].calls, t["scale_f32"].flops), (2, 0.0));
        assert_eq!((t[gemm_name(GemmOut::F32)].calls, t[gemm_name(GemmOut::F32)].flops), (1, 24.0));
        assert_eq!(x.read().unwrap()[0], 8.0);
        assert_eq!(c.read().unwrap(), [3.0; 4]);
        drop(c);
        assert_eq!(p.memory(), MemoryUse { live: 256 + 12, peak: 256 + 12 + 16, allocations: 3 });
    }
}
