//! GEMM on row-major buffers through matrixmultiply: transposes are expressed as strides (no
//! copies), matrixmultiply packs panels, runs its AVX2/AVX-512 micro-kernels and threads large
//! products itself (small ones, e.g. attention tiles, stay on the calling thread).

use super::Real;

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
    let (rsa, csa) = if trans_a { (1, m) } else { (k, 1) };
    let (rsb, csb) = if trans_b { (1, k) } else { (n, 1) };
    // SAFETY: the asserts above bound every index the strides can form.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
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
        for &(m, k, n) in &[(1, 1, 1), (5, 7, 3), (70, 33, 45), (17, 64, 130)] {
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
        let (m, k, n) = (96, 256, 80);
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
