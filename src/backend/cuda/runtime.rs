//! The device runtime: what the CUDA backend needs from a GPU, behind one trait so that the same
//! orchestration runs on a real GPU (driver.rs: the CUDA driver API and cuBLASLt) and on the CPU
//! (emulated.rs: host memory, the kernels' emulation build, a host GEMM with cuBLASLt's rounding
//! contract). It owns device memory (allocate, free, copies to and from the host), kernel
//! launches by name with launch.rs's geometry and argument order, GEMMs (`Gemm`), and a side
//! stream for collectives that overlap compute (fork and join by events). All other work
//! runs in call order on one stream: copies to and from the host complete before they return;
//! launches and GEMMs may still be running on a GPU when they return (their errors then surface
//! at the next copy or `synchronize`). `DeviceBuf` is a typed buffer freed on drop, or a view
//! into one (sharing its memory, keeping it alive).

use super::launch::{AdamSeg, DevPtr, LambSeg, Launch, NormSeg};
use crate::backend::SideLane;
use anyhow::{bail, Result};
use half::bf16;
use std::marker::PhantomData;
use std::sync::Arc;

/// Alignment of every allocation (cuMemAlloc gives at least 256 bytes).
pub const ALLOC_ALIGN: usize = 256;

/// The element type of a GEMM's output matrix C (read when `beta != 0`, then written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmOut {
    Bf16,
    F32,
}

impl GemmOut {
    pub fn bytes(self) -> usize {
        match self {
            GemmOut::Bf16 => 2,
            GemmOut::F32 => 4,
        }
    }
}

/// One GEMM with cuBLASLt's contract, stated row-major like `Backend::gemm`:
/// `c[m,n] = alpha * op(a) * op(b) + beta * c`, `a` and `b` bf16, the products summed in fp32,
/// `alpha` and `beta` applied in fp32, the result rounded once to `out` (nearest even). With
/// `beta == 0`, `c` is not read (NaNs in it do not propagate). Row-major storage with leading
/// dimensions (elements between consecutive rows):
/// - `op(a)` is `[m,k]`: `a` stored `[m,k]` (`lda >= k`), or `[k,m]` (`lda >= m`) when `trans_a`;
/// - `op(b)` is `[k,n]`: `b` stored `[k,n]` (`ldb >= n`), or `[n,k]` (`ldb >= k`) when `trans_b`;
/// - `c` stored `[m,n]` (`ldc >= n`).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: DevPtr,
    pub lda: usize,
    pub trans_a: bool,
    pub b: DevPtr,
    pub ldb: usize,
    pub trans_b: bool,
    pub c: DevPtr,
    pub ldc: usize,
    pub out: GemmOut,
    pub alpha: f32,
    pub beta: f32,
}

impl Gemm {
    /// (rows, columns) of `a` and of `b` as stored.
    pub fn stored_shapes(&self) -> [(usize, usize); 2] {
        let a = if self.trans_a { (self.k, self.m) } else { (self.m, self.k) };
        let b = if self.trans_b { (self.n, self.k) } else { (self.k, self.n) };
        [a, b]
    }

    /// Checks the shapes and leading dimensions; returns the byte extent of `a`, `b` and `c` from
    /// their base addresses.
    pub fn extents(&self) -> Result<[(DevPtr, usize); 3]> {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            bail!("gemm: empty shape m {} n {} k {}", self.m, self.n, self.k);
        }
        let [(ar, ac), (br, bc)] = self.stored_shapes();
        let span = |what: &str, rows: usize, cols: usize, ld: usize, size: usize| -> Result<usize> {
            if ld < cols {
                bail!("gemm: leading dimension of {what} is {ld}, less than its {cols} columns");
            }
            Ok(((rows - 1) * ld + cols) * size)
        };
        Ok([
            (self.a, span("a", ar, ac, self.lda, 2)?),
            (self.b, span("b", br, bc, self.ldb, 2)?),
            (self.c, span("c", self.m, self.n, self.ldc, self.out.bytes())?),
        ])
    }
}

/// A GPU, or its emulation. Addresses are `DevPtr`s from `alloc`.
pub trait Runtime: Send + Sync {
    /// One line naming the device (for logs and test output).
    fn describe(&self) -> String;
    /// `bytes` of device memory aligned to `ALLOC_ALIGN`, contents undefined.
    fn alloc(&self, bytes: usize) -> Result<DevPtr>;
    /// Frees an address `alloc` returned.
    ///
    /// # Safety
    /// No launch or GEMM may use the memory afterwards.
    unsafe fn free(&self, ptr: DevPtr) -> Result<()>;
    /// Copies `src` to device address `dst` (inside one allocation).
    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()>;
    /// Copies from device address `src` (inside one allocation) into `dst`.
    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()>;
    /// Issues one kernel launch (in order after everything issued before).
    ///
    /// # Safety
    /// Every pointer argument of `l` must address live device memory of this runtime sized for
    /// every access the kernel makes at the launch's shapes.
    unsafe fn launch(&self, l: &Launch) -> Result<()>;
    /// Issues one GEMM (cuBLASLt on a GPU), in order like a launch.
    ///
    /// # Safety
    /// `a`, `b` and `c` must address live device memory of this runtime covering `g.extents()`.
    unsafe fn gemm(&self, g: &Gemm) -> Result<()>;
    /// Waits until every launch and GEMM issued so far has finished; reports their errors.
    fn synchronize(&self) -> Result<()>;
    /// Side stream `lane`: collectives issued to it (NCCL's DP bucket exchange, the TP input
    /// gradient's reduction) overlap the launches and GEMMs issued after them. Its handle, for
    /// the communicator.
    fn side_stream(&self, lane: SideLane) -> Result<u64>;
    /// Side stream `lane` waits for every launch and GEMM issued so far before its next work.
    fn fork_side(&self, lane: SideLane) -> Result<()>;
    /// Launches and GEMMs issued from now on wait for all work issued to side stream `lane` so far.
    fn join_side(&self, lane: SideLane) -> Result<()>;
    /// Marks side stream `lane`'s work issued so far as mark `slot` (replacing an earlier one).
    fn mark_side(&self, lane: SideLane, slot: usize) -> Result<()>;
    /// Launches and GEMMs issued from now on wait for side stream `lane`'s work up to mark `slot`.
    fn wait_side(&self, lane: SideLane, slot: usize) -> Result<()>;
}

/// Element types that may be copied to and from device memory as raw bytes.
///
/// # Safety
/// Implementors are `Copy`, have no padding bytes and accept every bit pattern.
pub unsafe trait Plain: Copy + Send + Sync + 'static {}
// SAFETY: primitive numbers and `#[repr(C)]` structs of u64 fields (LambSeg's two trailing f32
// fill its last 8 bytes: no padding).
unsafe impl Plain for u8 {}
unsafe impl Plain for u16 {}
unsafe impl Plain for u32 {}
unsafe impl Plain for i32 {}
unsafe impl Plain for u64 {}
unsafe impl Plain for f32 {}
unsafe impl Plain for f64 {}
unsafe impl Plain for bf16 {}
unsafe impl Plain for AdamSeg {}
unsafe impl Plain for NormSeg {}
unsafe impl Plain for LambSeg {}

fn bytes_of<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: `T: Plain` has no padding; the byte view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn bytes_of_mut<T: Plain>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `bytes_of`, and every bit pattern is a valid `T`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

/// `len` elements of `T` in device memory: an allocation, freed when dropped, or a view into
/// one, which keeps the allocation alive.
pub struct DeviceBuf<T: Plain> {
    rt: Arc<dyn Runtime>,
    ptr: DevPtr,
    len: usize,
    /// The allocation this buffer views (None: the buffer is the allocation).
    base: Option<Arc<DeviceBuf<T>>>,
    _t: PhantomData<T>,
}

impl<T: Plain> DeviceBuf<T> {
    /// An allocation with undefined contents (poisoned under emulation).
    pub fn uninit(rt: &Arc<dyn Runtime>, len: usize) -> Result<Self> {
        let ptr = rt.alloc((len * std::mem::size_of::<T>()).max(1))?;
        Ok(DeviceBuf { rt: rt.clone(), ptr, len, base: None, _t: PhantomData })
    }

    /// Elements `[start, start + len)` of `base`, sharing its memory.
    pub fn view(base: &Arc<DeviceBuf<T>>, start: usize, len: usize) -> Self {
        assert!(start + len <= base.len, "view of {len} elements from {start} of a {}-element buffer", base.len);
        let ptr = base.ptr + (start * std::mem::size_of::<T>()) as DevPtr;
        DeviceBuf { rt: base.rt.clone(), ptr, len, base: Some(base.clone()), _t: PhantomData }
    }

    pub fn from_slice(rt: &Arc<dyn Runtime>, host: &[T]) -> Result<Self> {
        let mut b = Self::uninit(rt, host.len())?;
        b.write(host)?;
        Ok(b)
    }

    pub fn ptr(&self) -> DevPtr {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Overwrites the whole buffer with `host` (same length).
    pub fn write(&mut self, host: &[T]) -> Result<()> {
        if host.len() != self.len {
            bail!("device buffer of {} elements written with {}", self.len, host.len());
        }
        self.write_prefix(host)
    }

    /// Overwrites the first `host.len()` elements.
    pub fn write_prefix(&mut self, host: &[T]) -> Result<()> {
        if host.len() > self.len {
            bail!("device buffer of {} elements written with {}", self.len, host.len());
        }
        self.rt.upload(self.ptr, bytes_of(host))
    }

    pub fn read(&self) -> Result<Vec<T>> {
        // SAFETY: `T: Plain` accepts the all-zero bit pattern.
        let mut v = vec![unsafe { std::mem::zeroed::<T>() }; self.len];
        self.rt.download(self.ptr, bytes_of_mut(&mut v))?;
        Ok(v)
    }
}

impl<T: Plain> Drop for DeviceBuf<T> {
    fn drop(&mut self) {
        if self.base.is_some() {
            return; // a view: the allocation goes with its last holder
        }
        // SAFETY: the buffer is gone, so nothing can name its memory any more.
        if let Err(e) = unsafe { self.rt.free(self.ptr) } {
            log::error!("freeing device memory at {:#x}: {e:#}", self.ptr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemm(trans_a: bool, trans_b: bool, lda: usize, ldb: usize, ldc: usize) -> Gemm {
        Gemm { m: 3, n: 5, k: 4, a: 0, lda, trans_a, b: 0, ldb, trans_b, c: 0, ldc, out: GemmOut::F32, alpha: 1.0, beta: 0.0 }
    }

    #[test]
    fn gemm_extents_follow_the_stored_shapes() {
        // a [3,4] ld 4, b [4,5] ld 5, c [3,5] ld 5.
        assert_eq!(gemm(false, false, 4, 5, 5).extents().unwrap().map(|e| e.1), [24, 40, 60]);
        // a stored [4,3] ld 7, b stored [5,4] ld 4, c ld 6.
        assert_eq!(gemm(true, true, 7, 4, 6).extents().unwrap().map(|e| e.1), [(3 * 7 + 3) * 2, 40, (2 * 6 + 5) * 4]);
        let e = gemm(false, false, 3, 5, 5).extents().unwrap_err().to_string();
        assert!(e.contains("leading dimension of a is 3, less than its 4 columns"), "{e}");
        let e = gemm(true, false, 3, 5, 5).extents().unwrap(); // stored [4,3]: ld 3 is enough
        assert_eq!(e[0].1, 24);
    }
}
