//! The element type of the CPU backend: `Real` is implemented for `f32` (the fast training type)
//! and `f64` (finite-difference tests). It bundles the numeric traits the kernels need with the
//! three things that differ per type: the GEMM entry point (matrixmultiply `sgemm`/`dgemm`), a
//! vectorisable `exp` (a Cephes-style polynomial for f32, libm for f64 so tests stay exact), and
//! a per-thread scratch buffer that grows once and is then reused (no heap churn inside a step).

use num_traits::{Float, FromPrimitive};
use std::cell::RefCell;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

pub trait Real:
    Float
    + FromPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Send
    + Sync
    + Default
    + Debug
    + Display
    + 'static
{
    const NAME: &'static str;

    fn of_f32(x: f32) -> Self;
    fn of_f64(x: f64) -> Self;
    fn as_f32(self) -> f32;
    fn as_f64(self) -> f64;

    /// `e^x`; for f32 a branch-free polynomial (max rel. error ~2 ulp) that auto-vectorises,
    /// for f64 the exact libm `exp`. f32 inputs are clamped to `[-87.3, 88]`: very negative
    /// inputs give ~1e-38 (not 0), large ones saturate at ~1.6e38.
    fn exp_fast(self) -> Self;

    /// `c = alpha * a * b + beta * c` for `[m,k] x [k,n]` with arbitrary strides
    /// (row stride `rs*`, column stride `cs*`); `beta == 0` does not read `c`.
    ///
    /// # Safety
    /// The pointers with their strides must address valid, non-overlapping (for `c`) memory.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// Runs `f` on this thread's scratch buffer of at least `len` elements (contents
    /// unspecified). Re-entrant calls fall back to a fresh allocation.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

fn scratch_impl<T: Default + Clone, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, T::default());
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

thread_local! {
    static SCRATCH_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Cephes `expf`: range reduction `x = n ln2 + r`, degree-6 polynomial on `r`, `2^n` built from
/// the exponent bits. Written without branches or libm calls so loops over it vectorise.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = if x < -87.336_54 { -87.336_54 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    y * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn of_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn as_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
    #[inline]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        scratch_impl(&SCRATCH_F32, len, f)
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        x as f64
    }
    #[inline(always)]
    fn of_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn as_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
    #[inline]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
        scratch_impl(&SCRATCH_F64, len, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37);
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn scratch_is_reused_and_reentrant() {
        let p1 = f32::with_scratch(100, |s| s.as_ptr() as usize);
        let p2 = f32::with_scratch(50, |s| s.as_ptr() as usize);
        assert_eq!(p1, p2);
        let inner_len = f64::with_scratch(10, |_| f64::with_scratch(20, |s| s.len()));
        assert_eq!(inner_len, 20);
    }
}
