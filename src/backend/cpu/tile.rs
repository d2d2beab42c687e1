//! Small in-cache matrix products for the attention tiles (at most 64 x 64 x head_dim), without
//! the panel packing a general GEMM does: every tile product in attention can be arranged so the
//! right operand has contiguous rows (attention re-lays Q, K, V, dO out once per call: heads
//! contiguous, K and V also as transposed tiles), so a register-blocked kernel reads them in
//! place. f32 on AVX2+FMA uses a 6x16 intrinsic micro-kernel; otherwise a plain loop.

use super::Real;
use std::any::TypeId;

/// A matrix operand in memory: element `(i, p)` at `ptr[i * rs + p * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<T> {
    ptr: *const T,
    rs: usize,
    cs: usize,
}

/// Row-major view with row stride `ld`.
pub fn rows<T>(ptr: *const T, ld: usize) -> Mat<T> {
    Mat { ptr, rs: ld, cs: 1 }
}

/// Transpose of a row-major block with row stride `ld`: element `(i, p)` at `ptr[p * ld + i]`.
pub fn trans<T>(ptr: *const T, ld: usize) -> Mat<T> {
    Mat { ptr, rs: 1, cs: ld }
}

/// A row-major destination with row stride `ld`, overwritten (`set`) or accumulated (`add`).
pub struct Out<T> {
    ptr: *mut T,
    ld: usize,
    accumulate: bool,
}

pub fn set<T>(ptr: *mut T, ld: usize) -> Out<T> {
    Out {
        ptr,
        ld,
        accumulate: false,
    }
}

pub fn add<T>(ptr: *mut T, ld: usize) -> Out<T> {
    Out {
        ptr,
        ld,
        accumulate: true,
    }
}

/// `c (+)= alpha * a * b` with `a` `[m, k]` (any strides), `b` `[k, n]` with contiguous rows.
///
/// # Safety
/// Every index formed from the sizes and strides must be valid; `c` must not alias `a`/`b`.
#[inline]
pub unsafe fn mm<T: Real>(
    (m, n, k): (usize, usize, usize),
    alpha: T,
    a: Mat<T>,
    b: Mat<T>,
    c: Out<T>,
) {
    debug_assert_eq!(b.cs, 1, "tile::mm: the right operand needs contiguous rows");
    tile_gemm(
        m,
        n,
        k,
        alpha,
        a.ptr,
        a.rs,
        a.cs,
        b.ptr,
        b.rs,
        c.accumulate,
        c.ptr,
        c.ld,
    )
}

/// `c[i*ldc + j] (+)= alpha * sum_p a[i*rsa + p*csa] * b[p*ldb + j]` for an `m x n` result
/// (`accumulate` adds to `c`, otherwise `c` is overwritten).
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile_gemm<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: *const T,
    rsa: usize,
    csa: usize,
    b: *const T,
    ldb: usize,
    accumulate: bool,
    c: *mut T,
    ldc: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        let alpha = alpha.as_f32();
        let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
        return avx2::gemm_f32(m, n, k, alpha, a, rsa, csa, b, ldb, accumulate, c, ldc);
    }
    generic(m, n, k, alpha, a, rsa, csa, b, ldb, accumulate, c, ldc)
}

#[allow(clippy::too_many_arguments)]
unsafe fn generic<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: *const T,
    rsa: usize,
    csa: usize,
    b: *const T,
    ldb: usize,
    accumulate: bool,
    c: *mut T,
    ldc: usize,
) {
    for i in 0..m {
        let crow = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
        if !accumulate {
            crow.fill(T::zero());
        }
        for p in 0..k {
            let av = alpha * *a.add(i * rsa + p * csa);
            let brow = std::slice::from_raw_parts(b.add(p * ldb), n);
            for (x, &y) in crow.iter_mut().zip(brow) {
                *x += av * y;
            }
        }
    }
}

/// `dst[c * ld + r] = src[r * stride + c]` for a `rows x cols` block (a K or V tile into
/// `[head_dim, keys]` layout). f32 on AVX2 moves 8x8 blocks through registers.
pub fn transpose<T: Real>(
    dst: &mut [T],
    ld: usize,
    src: &[T],
    stride: usize,
    rows: usize,
    cols: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        ld >= rows && dst.len() >= (cols - 1) * ld + rows,
        "transpose: destination too small"
    );
    assert!(
        src.len() >= (rows - 1) * stride + cols,
        "transpose: source too small"
    );
    let (mut r8, mut c8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && std::is_x86_feature_detected!("avx2") {
        (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        let (d, s) = (dst.as_mut_ptr() as *mut f32, src.as_ptr() as *const f32);
        for r in (0..r8).step_by(8) {
            for c in (0..c8).step_by(8) {
                // SAFETY: the asserts above cover the 8x8 block at (r, c) in both layouts.
                unsafe { avx2::transpose8(s.add(r * stride + c), stride, d.add(c * ld + r), ld) };
            }
        }
    }
    // The rest: rows below r8 beyond column c8, and all columns of rows from r8.
    for r in 0..rows {
        let c0 = if r < r8 { c8 } else { 0 };
        for c in c0..cols {
            dst[c * ld + r] = src[r * stride + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm_f32(
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        acc: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        let nfull = n / 16 * 16;
        if nfull > 0 {
            let mut i = 0;
            while i + 6 <= m {
                rows::<6>(i, nfull, k, alpha, a, rsa, csa, b, ldb, acc, c, ldc);
                i += 6;
            }
            match m - i {
                5 => rows::<5>(i, nfull, k, alpha, a, rsa, csa, b, ldb, acc, c, ldc),
                4 => rows::<4>(i, nfull, k, alpha, a, rsa, csa, b, ldb, acc, c, ldc),
                3 => rows::<3>(i, nfull, k, alpha, a, rsa, csa, b, ldb, acc, c, ldc),
                2 => rows::<2>(i, nfull, k, alpha, a, rsa, csa, b, ldb, acc, c, ldc),
                1 => rows::<1>(i, nfull, k, alpha, a, rsa, csa, b, ldb, acc, c, ldc),
                _ => {}
            }
        }
        if nfull < n {
            super::generic(
                m,
                n - nfull,
                k,
                alpha,
                a,
                rsa,
                csa,
                b.add(nfull),
                ldb,
                acc,
                c.add(nfull),
                ldc,
            );
        }
    }

    /// 8x8 f32 transpose: `dst[c*dld + r] = src[r*sld + c]`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn transpose8(src: *const f32, sld: usize, dst: *mut f32, dld: usize) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * sld)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let o = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, v) in o.iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * dld), *v);
        }
    }

    /// Rows `i..i+R`, columns `0..nfull` in blocks of 16: `R x 2` ymm accumulators.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize>(
        i: usize,
        nfull: usize,
        k: usize,
        alpha: f32,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        acc: bool,
        c: *mut f32,
        ldc: usize,
    ) {
        let al = _mm256_set1_ps(alpha);
        let mut j = 0;
        while j < nfull {
            let mut s0 = [_mm256_setzero_ps(); R];
            let mut s1 = [_mm256_setzero_ps(); R];
            let mut ap = a.add(i * rsa);
            let mut bp = b.add(j);
            for _ in 0..k {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for r in 0..R {
                    let av = _mm256_broadcast_ss(&*ap.add(r * rsa));
                    s0[r] = _mm256_fmadd_ps(av, b0, s0[r]);
                    s1[r] = _mm256_fmadd_ps(av, b1, s1[r]);
                }
                ap = ap.add(csa);
                bp = bp.add(ldb);
            }
            for r in 0..R {
                let cp = c.add((i + r) * ldc + j);
                let (mut v0, mut v1) = (_mm256_mul_ps(s0[r], al), _mm256_mul_ps(s1[r], al));
                if acc {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp.add(8)));
                }
                _mm256_storeu_ps(cp, v0);
                _mm256_storeu_ps(cp.add(8), v1);
            }
            j += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{rand_vec, Rng};

    fn check<T: Real>(tol: f64) {
        let mut rng = Rng::new(30);
        for &(m, n, k) in &[
            (1, 1, 1),
            (6, 16, 8),
            (64, 64, 64),
            (7, 37, 13),
            (13, 70, 64),
            (64, 16, 3),
        ] {
            for &(ta, acc) in &[(false, false), (true, true), (false, true)] {
                let a = rand_vec(&mut rng, m * k);
                let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
                let ldb = n + 3;
                let b = rand_vec(&mut rng, k * ldb);
                let ldc = n + 5;
                let c0 = rand_vec(&mut rng, m * ldc);
                let alpha = 0.75;
                let mut want = c0.clone();
                for i in 0..m {
                    for j in 0..n {
                        let s: f64 = (0..k).map(|p| a[i * rsa + p * csa] * b[p * ldb + j]).sum();
                        want[i * ldc + j] = alpha * s + if acc { c0[i * ldc + j] } else { 0.0 };
                    }
                }
                let t = |v: &Vec<f64>| v.iter().map(|&x| T::of_f64(x)).collect::<Vec<T>>();
                let (at, bt, mut ct) = (t(&a), t(&b), t(&c0));
                let av = if ta {
                    trans(at.as_ptr(), m)
                } else {
                    rows(at.as_ptr(), k)
                };
                let out = if acc {
                    add(ct.as_mut_ptr(), ldc)
                } else {
                    set(ct.as_mut_ptr(), ldc)
                };
                unsafe { mm((m, n, k), T::of_f64(alpha), av, rows(bt.as_ptr(), ldb), out) };
                for i in 0..m {
                    for j in 0..ldc {
                        let (g, w) = (
                            ct[i * ldc + j].as_f64(),
                            if j < n {
                                want[i * ldc + j]
                            } else {
                                c0[i * ldc + j]
                            },
                        );
                        assert!(
                            (g - w).abs() < tol * (1.0 + w.abs()),
                            "{m}x{n}x{k} ta={ta} acc={acc} [{i},{j}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tile_gemm_matches_naive_f64_and_f32() {
        check::<f64>(1e-12);
        check::<f32>(1e-5);
    }

    #[test]
    fn transpose_blocks_and_edges() {
        for &(rows, cols) in &[(3, 3), (8, 8), (19, 37), (64, 64)] {
            let stride = cols + 5;
            let ld = rows + 3;
            let src: Vec<f64> = (0..rows * stride).map(|x| x as f64).collect();
            let mut want = vec![-1.0; cols * ld];
            for r in 0..rows {
                for c in 0..cols {
                    want[c * ld + r] = src[r * stride + c];
                }
            }
            let mut d64 = vec![-1.0; cols * ld];
            transpose(&mut d64, ld, &src, stride, rows, cols);
            assert_eq!(d64, want);
            let s32: Vec<f32> = src.iter().map(|&x| x as f32).collect();
            let mut d32 = vec![-1.0f32; cols * ld];
            transpose(&mut d32, ld, &s32, stride, rows, cols);
            assert!(
                d32.iter().zip(&want).all(|(a, b)| *a as f64 == *b),
                "{rows}x{cols}"
            );
        }
    }
}
