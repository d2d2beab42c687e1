//! The emulated device runtime: `Runtime` on the CPU, so the CUDA backend's orchestration
//! (allocation, copies, launches, GEMMs) runs in every test. Device memory is host memory
//! aligned like cuMemAlloc's and poisoned with 0xFF bytes (NaN in bf16, f32 and f64) when
//! allocated; copies and GEMM operands are checked to lie inside one live allocation; kernels
//! run through the emulation build (emu.rs); the GEMM is a host loop with cuBLASLt's rounding
//! contract (bf16 operands, fp32 sums, alpha/beta in fp32, one rounding to the output type).
//! Its side streams (one per `SideLane`) hold the work issued to them until waited for (`issue`).

use super::emu;
use super::launch::{DevPtr, Launch};
use super::runtime::{Gemm, GemmOut, Runtime, ALLOC_ALIGN};
use crate::backend::SideLane;
use anyhow::{bail, Result};
use half::bf16;
use rayon::prelude::*;
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Host memory standing in for a GPU's.
#[derive(Default)]
pub struct EmulatedRuntime {
    /// Live allocations: base address -> size in bytes.
    allocs: Mutex<BTreeMap<DevPtr, usize>>,
    /// The side streams, by `SideLane` (boxed: an address is a stream's handle).
    side: [Box<SideQueue>; 2],
}

/// Work issued to the emulated side stream (by the emulated NCCL, parallel/nccl_emulated.rs): held
/// until the default stream waits for it (a join, or a mark's wait) or the device synchronises,
/// the latest moment a GPU may run it, so that a missing wait shows as stale data.
#[derive(Default)]
pub struct SideQueue(Mutex<Vec<SideItem>>);

enum SideItem {
    Work(Box<dyn FnOnce() + Send>),
    Mark(usize),
}

impl SideQueue {
    /// Runs the queued work up to the last mark `slot` (all of it for `None`).
    fn drain(&self, upto: Option<usize>) {
        let work = {
            let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let end = match upto {
                None => q.len(),
                Some(slot) => q.iter().rposition(|i| matches!(i, SideItem::Mark(m) if *m == slot)).map_or(0, |at| at + 1),
            };
            q.drain(..end).collect::<Vec<_>>()
        };
        for item in work {
            if let SideItem::Work(w) = item {
                w()
            }
        }
    }
}

/// Issues `work` to emulated stream `stream`: the default stream (0) runs it now, a side stream
/// holds it until joined.
///
/// # Safety
/// `stream` is 0 or a handle `EmulatedRuntime::side_stream` returned, of a runtime still alive.
pub unsafe fn issue(stream: u64, work: Box<dyn FnOnce() + Send>) {
    match stream {
        0 => work(),
        side => (*(side as *const SideQueue)).0.lock().unwrap_or_else(|e| e.into_inner()).push(SideItem::Work(work)),
    }
}

impl EmulatedRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every side stream's queued work, lane by lane (every rank in the same order).
    fn drain_sides(&self) {
        for side in &self.side {
            side.drain(None);
        }
    }

    /// Fails unless `[ptr, ptr + bytes)` lies inside one live allocation.
    fn check_range(&self, what: &str, ptr: DevPtr, bytes: usize) -> Result<()> {
        let allocs = self.allocs.lock().unwrap_or_else(|e| e.into_inner());
        match allocs.range(..=ptr).next_back() {
            Some((&base, &size)) if ptr + bytes as u64 <= base + size as u64 => Ok(()),
            Some((&base, &size)) if ptr < base + size as u64 => {
                bail!("{what}: {bytes} bytes at {ptr:#x} run past the end of the {size}-byte allocation at {base:#x}")
            }
            _ => bail!("{what}: {ptr:#x} is not inside a live allocation"),
        }
    }
}

impl Drop for EmulatedRuntime {
    fn drop(&mut self) {
        for (&base, &size) in self.allocs.get_mut().unwrap_or_else(|e| e.into_inner()).iter() {
            // SAFETY: allocated in `alloc` with this layout, not yet freed.
            unsafe { std::alloc::dealloc(base as *mut u8, Layout::from_size_align(size, ALLOC_ALIGN).unwrap()) };
        }
    }
}

impl Runtime for EmulatedRuntime {
    fn describe(&self) -> String {
        "emulated device (host memory, kernels through the emulation build)".into()
    }

    fn alloc(&self, bytes: usize) -> Result<DevPtr> {
        let layout = Layout::from_size_align(bytes.max(1), ALLOC_ALIGN)?;
        // SAFETY: the layout has a nonzero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            bail!("emulated device: out of memory allocating {bytes} bytes");
        }
        // SAFETY: `p` holds `layout.size()` bytes.
        unsafe { std::ptr::write_bytes(p, 0xFF, layout.size()) };
        self.allocs.lock().unwrap_or_else(|e| e.into_inner()).insert(p as DevPtr, layout.size());
        Ok(p as DevPtr)
    }

    unsafe fn free(&self, ptr: DevPtr) -> Result<()> {
        self.drain_sides(); // as cuMemFree after synchronising: no queued work may use the memory
        let Some(size) = self.allocs.lock().unwrap_or_else(|e| e.into_inner()).remove(&ptr) else {
            bail!("emulated device: free of {ptr:#x}, which is not a live allocation");
        };
        std::alloc::dealloc(ptr as *mut u8, Layout::from_size_align(size, ALLOC_ALIGN).unwrap());
        Ok(())
    }

    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.check_range("upload", dst, src.len())?;
        // SAFETY: the destination range lies inside a live allocation (checked above).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.check_range("download", src, dst.len())?;
        // SAFETY: the source range lies inside a live allocation (checked above).
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    unsafe fn launch(&self, l: &Launch) -> Result<()> {
        emu::launch(l);
        Ok(())
    }

    /// Launches and GEMMs complete before they return; the side streams' work runs now.
    fn synchronize(&self) -> Result<()> {
        self.drain_sides();
        Ok(())
    }

    fn side_stream(&self, lane: SideLane) -> Result<u64> {
        Ok(&*self.side[lane as usize] as *const SideQueue as u64)
    }

    /// Everything issued so far has run (launches complete when issued).
    fn fork_side(&self, _lane: SideLane) -> Result<()> {
        Ok(())
    }

    fn join_side(&self, lane: SideLane) -> Result<()> {
        self.side[lane as usize].drain(None);
        Ok(())
    }

    fn mark_side(&self, lane: SideLane, slot: usize) -> Result<()> {
        self.side[lane as usize].0.lock().unwrap_or_else(|e| e.into_inner()).push(SideItem::Mark(slot));
        Ok(())
    }

    fn wait_side(&self, lane: SideLane, slot: usize) -> Result<()> {
        self.side[lane as usize].drain(Some(slot));
        Ok(())
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        for ((ptr, bytes), what) in g.extents()?.into_iter().zip(["gemm a", "gemm b", "gemm c"]) {
            self.check_range(what, ptr, bytes)?;
        }
        let [(ar, ac), (br, bc)] = g.stored_shapes();
        let a = std::slice::from_raw_parts(g.a as *const bf16, (ar - 1) * g.lda + ac);
        let b = std::slice::from_raw_parts(g.b as *const bf16, (br - 1) * g.ldb + bc);
        // op(a) as [m,k] and op(b) transposed as [n,k], both in f32 (exact: bf16 widens exactly).
        let op_a: Vec<f32> = (0..g.m * g.k)
            .map(|e| {
                let (i, p) = (e / g.k, e % g.k);
                a[if g.trans_a { p * g.lda + i } else { i * g.lda + p }].to_f32()
            })
            .collect();
        let op_bt: Vec<f32> = (0..g.n * g.k)
            .map(|e| {
                let (j, p) = (e / g.k, e % g.k);
                b[if g.trans_b { j * g.ldb + p } else { p * g.ldb + j }].to_f32()
            })
            .collect();
        let sums: Vec<f32> = (0..g.m * g.n)
            .into_par_iter()
            .map(|e| {
                let (ra, rb) = (&op_a[(e / g.n) * g.k..][..g.k], &op_bt[(e % g.n) * g.k..][..g.k]);
                ra.iter().zip(rb).fold(0.0f32, |s, (x, y)| s + x * y)
            })
            .collect();
        let c_len = (g.m - 1) * g.ldc + g.n;
        let blend = |sum: f32, old: f32| if g.beta == 0.0 { g.alpha * sum } else { g.alpha * sum + g.beta * old };
        match g.out {
            GemmOut::F32 => {
                let c = std::slice::from_raw_parts_mut(g.c as *mut f32, c_len);
                for (e, &s) in sums.iter().enumerate() {
                    let at = (e / g.n) * g.ldc + e % g.n;
                    c[at] = blend(s, c[at]);
                }
            }
            GemmOut::Bf16 => {
                let c = std::slice::from_raw_parts_mut(g.c as *mut bf16, c_len);
                for (e, &s) in sums.iter().enumerate() {
                    let at = (e / g.n) * g.ldc + e % g.n;
                    c[at] = bf16::from_f32(blend(s, c[at].to_f32()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::runtime::DeviceBuf;
    use std::sync::Arc;

    #[test]
    fn allocations_are_aligned_poisoned_and_bounds_checked() {
        let rt: Arc<dyn Runtime> = Arc::new(EmulatedRuntime::new());
        let b = DeviceBuf::<f32>::uninit(&rt, 5).unwrap();
        assert_eq!(b.ptr() % ALLOC_ALIGN as u64, 0);
        assert!(b.read().unwrap().iter().all(|x| x.is_nan()), "fresh memory is NaN-poisoned");
        let mut b = DeviceBuf::from_slice(&rt, &[1.0f32, 2.0, 3.0]).unwrap();
        assert_eq!(b.read().unwrap(), [1.0, 2.0, 3.0]);
        assert!(b.write(&[1.0]).unwrap_err().to_string().contains("3 elements written with 1"));
        // Past the end of the allocation's 12 bytes, and outside any allocation.
        rt.upload(b.ptr() + 8, &[0u8; 4]).unwrap();
        let e = rt.upload(b.ptr() + 8, &[0u8; 8]).unwrap_err().to_string();
        assert!(e.contains("run past the end of the 12-byte allocation"), "{e}");
        let e = rt.download(8, &mut [0u8; 4]).unwrap_err().to_string();
        assert!(e.contains("not inside a live allocation"), "{e}");
        let p = b.ptr();
        drop(b);
        assert!(rt.upload(p, &[0u8; 4]).is_err(), "freed memory is not a live allocation");
        assert!(unsafe { rt.free(p) }.unwrap_err().to_string().contains("not a live allocation"));
    }

    /// A 2x2 GEMM by hand: bf16 operands, fp32 sums, alpha/beta, both output types.
    #[test]
    fn gemm_by_hand() {
        let rt: Arc<dyn Runtime> = Arc::new(EmulatedRuntime::new());
        let bf = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
        // a = [[1, 2], [3, 4]], b = [[5, 6], [7, 8]]: a b = [[19, 22], [43, 50]].
        let a = DeviceBuf::from_slice(&rt, &bf(&[1.0, 2.0, 3.0, 4.0])).unwrap();
        let b = DeviceBuf::from_slice(&rt, &bf(&[5.0, 6.0, 7.0, 8.0])).unwrap();
        let c = DeviceBuf::from_slice(&rt, &[1.0f32, 1.0, 1.0, 1.0]).unwrap();
        let mut g = Gemm { m: 2, n: 2, k: 2, a: a.ptr(), lda: 2, trans_a: false, b: b.ptr(), ldb: 2, trans_b: false, c: c.ptr(), ldc: 2, out: GemmOut::F32, alpha: 2.0, beta: 1.0 };
        unsafe { rt.gemm(&g) }.unwrap();
        assert_eq!(c.read().unwrap(), [39.0, 45.0, 87.0, 101.0]);
        // aᵀ bᵀ = (b a)ᵀ: b a = [[23, 34], [31, 46]]; beta = 0 ignores the NaN-poisoned output.
        let d = DeviceBuf::<bf16>::uninit(&rt, 4).unwrap();
        g = Gemm { trans_a: true, trans_b: true, c: d.ptr(), out: GemmOut::Bf16, alpha: 1.0, beta: 0.0, ..g };
        unsafe { rt.gemm(&g) }.unwrap();
        assert_eq!(d.read().unwrap(), bf(&[23.0, 31.0, 34.0, 46.0]));
    }
}
