//! GEMM on row-major buffers through matrixmultiply: transposes are expressed as strides (no
//! copies) and matrixmultiply packs panels and runs its AVX2/AVX-512 micro-kernels. Large products
//! are cut into one block of rows (or columns) of C per rayon thread, each a single-threaded
//! matrixmultiply call: on a 2-core machine this was both faster and far steadier than
//! matrixmultiply's own thread pool, and it keeps one pool of workers in the process (no
//! oversubscription against rayon's spinning workers). Every element of C is computed by one call
//! over the full k, so the split does not change results.

use super::par::SyncPtr;
use super::Real;
use rayon::prelude::*;
use std::sync::Once;

/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 21;

/// Makes matrixmultiply single-threaded (its thread count is read once, from the environment, at
/// its first call) unless the user chose a count, since threading happens here over rayon.
pub fn init_threads() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            std::env::set_var("MATMUL_NUM_THREADS", "1");
        }
    });
}

/// Row-major `c[m,n] = alpha * op(a) * op(b) + beta * c` as documented on `Backend::gemm`:
/// `op(a)` is `[m,k]` (stored `[k,m]` when `trans_a`), `op(b)` is `[k,n]` (stored `[n,k]` when
/// `trans_b`).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    c: &mut [T],
    a: &[T],
    b: &[T],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: T,
    beta: T,
) {
    assert!(
        c.len() >= m * n,
        "gemm: c has {} elements, need m*n = {m}*{n}",
        c.len()
    );
    assert!(
        a.len() >= m * k,
        "gemm: a has {} elements, need m*k = {m}*{k}",
        a.len()
    );
    assert!(
        b.len() >= k * n,
        "gemm: b has {} elements, need k*n = {k}*{n}",
        b.len()
    );
    init_threads();
    // Element (i, p) of op(a) at a[i*rsa + p*csa]; (p, j) of op(b) at b[p*rsb + j*csb].
    let (rsa, csa) = if trans_a { (1, m) } else { (k, 1) };
    let (rsb, csb) = if trans_b { (1, k) } else { (n, 1) };
    let (ap, bp, cp) = (
        a.as_ptr() as usize,
        b.as_ptr() as usize,
        SyncPtr::new(c.as_mut_ptr()),
    );
    // SAFETY: the asserts above bound every index the strides can form; blocks of C are disjoint.
    let block = |i0: usize, i1: usize, j0: usize, j1: usize| unsafe {
        let (a, b) = (ap as *const T, bp as *const T);
        T::gemm_raw(
            i1 - i0,
            k,
            j1 - j0,
            alpha,
            a.add(i0 * rsa),
            rsa as isize,
            csa as isize,
            b.add(j0 * csb),
            rsb as isize,
            csb as isize,
            beta,
            cp.get().add(i0 * n + j0),
            n as isize,
            1,
        )
    };
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PAR_MIN_MACS {
        return block(0, m, 0, n);
    }
    // Split the longer side of C into one block per thread (multiples of 16).
    let (long, split_rows) = if m >= n { (m, true) } else { (n, false) };
    let step = long.div_ceil(threads).div_ceil(16) * 16;
    (0..long.div_ceil(step))
        .into_par_iter()
        .with_max_len(1)
        .for_each(|p| {
            let (lo, hi) = (p * step, ((p + 1) * step).min(long));
            if split_rows {
                block(lo, hi, 0, n)
            } else {
                block(0, m, lo, hi)
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{rand_vec, Rng};

    #[allow(clippy::too_many_arguments)]
    fn naive(
        c: &mut [f64],
        a: &[f64],
        b: &[f64],
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
        alpha: f64,
        beta: f64,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av * bv;
                }
                c[i * n + j] = alpha * s + beta * c[i * n + j];
            }
        }
    }

    #[test]
    fn gemm_all_transposes_match_naive() {
        let mut rng = Rng::new(1);
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 7, 3),
            (70, 33, 45),
            (17, 64, 130),
            (300, 64, 130),
            (40, 100, 600),
        ] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                for &(alpha, beta) in &[(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                    let a = rand_vec(&mut rng, m * k);
                    let b = rand_vec(&mut rng, k * n);
                    let c0 = rand_vec(&mut rng, m * n);
                    let mut want = c0.clone();
                    naive(&mut want, &a, &b, m, k, n, ta, tb, alpha, beta);
                    let mut got = c0.clone();
                    gemm(&mut got, &a, &b, m, k, n, ta, tb, alpha, beta);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-12 * (1.0 + w.abs()),
                            "{m}x{k}x{n} ta={ta} tb={tb}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_split_over_threads_is_bitwise_unsplit() {
        let mut rng = Rng::new(3);
        for &(m, k, n, ta, tb) in &[(333, 70, 90, false, true), (50, 90, 700, true, false)] {
            let (a, b) = (rand_vec(&mut rng, m * k), rand_vec(&mut rng, k * n));
            let c0 = rand_vec(&mut rng, m * n);
            let mut split = c0.clone();
            gemm(&mut split, &a, &b, m, k, n, ta, tb, 0.5, 0.5);
            let mut whole = c0.clone();
            let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
            let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
            init_threads();
            unsafe {
                f64::gemm_raw(
                    m,
                    k,
                    n,
                    0.5,
                    a.as_ptr(),
                    rsa as isize,
                    csa as isize,
                    b.as_ptr(),
                    rsb as isize,
                    csb as isize,
                    0.5,
                    whole.as_mut_ptr(),
                    n as isize,
                    1,
                )
            };
            assert!(m * n * k >= PAR_MIN_MACS);
            assert_eq!(split, whole);
        }
    }

    #[test]
    fn gemm_beta_zero_ignores_nan_in_c() {
        let a = vec![1.0, 2.0];
        let b = vec![3.0, 4.0];
        let mut c = vec![f64::NAN];
        gemm(&mut c, &a, &b, 1, 2, 1, false, false, 1.0, 0.0);
        assert_eq!(c[0], 11.0);
    }

    #[test]
    fn gemm_f32_agrees_with_f64() {
        let mut rng = Rng::new(2);
        let (m, k, n) = (128, 256, 96);
        let a = rand_vec(&mut rng, m * k);
        let b = rand_vec(&mut rng, k * n);
        let mut c64 = vec![0.0; m * n];
        gemm(&mut c64, &a, &b, m, k, n, false, true, 1.0, 0.0);
        let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        let mut c32 = vec![0.0f32; m * n];
        gemm(&mut c32, &a32, &b32, m, k, n, false, true, 1.0, 0.0);
        let scale = c64.iter().map(|x| x.abs()).fold(0.0, f64::max);
        for (x, y) in c32.iter().zip(&c64) {
            assert!((*x as f64 - y).abs() < 1e-5 * scale, "{x} vs {y}");
        }
    }
}
