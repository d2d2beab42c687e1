//! RMSNorm (Hugging Face LlamaRMSNorm): `rstd = 1/sqrt(mean(x^2) + eps)`, `out = (x * rstd) * w`,
//! row-wise over `[rows, dim]`, and its backward. Rows are split into rayon tasks; the weight
//! gradient is summed per fixed block of rows into scratch partials and the partials are then
//! added in block order, so `dw` is deterministic and independent of the thread count.

use super::par::{lane_sum, rows_per_task, simd_fn};
use super::Real;
use rayon::prelude::*;

/// Rows per weight-gradient partial (fixed so the summation order depends on shapes only).
const DW_BLOCK: usize = 32;

fn check(op: &str, x: usize, w: usize, dim: usize) -> usize {
    assert!(
        dim > 0 && x.is_multiple_of(dim),
        "{op}: buffer of {x} elements is not [rows, {dim}]"
    );
    assert_eq!(w, dim, "{op}: weight has {w} elements, dim is {dim}");
    x / dim
}

simd_fn! {
    fn fwd_rows<T: Real>(out: &mut [T], rstd: &mut [T], x: &[T], w: &[T], eps: T) {
        let dim = w.len();
        let inv_n = T::one() / T::of_f64(dim as f64);
        for ((o, r), xr) in out.chunks_exact_mut(dim).zip(rstd.iter_mut()).zip(x.chunks_exact(dim)) {
            let rs = T::one() / (lane_sum(xr, |v| v * v) * inv_n + eps).sqrt();
            *r = rs;
            for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
                *o = (xv * rs) * wv;
            }
        }
    }
}

pub fn rmsnorm_fwd<T: Real>(out: &mut [T], rstd: &mut [T], x: &[T], w: &[T], dim: usize, eps: f32) {
    let rows = check("rmsnorm_fwd", x.len(), w.len(), dim);
    assert_eq!(
        out.len(),
        x.len(),
        "rmsnorm_fwd: out has {} elements, x {}",
        out.len(),
        x.len()
    );
    assert_eq!(
        rstd.len(),
        rows,
        "rmsnorm_fwd: rstd has {} elements, rows {rows}",
        rstd.len()
    );
    let eps = T::of_f32(eps);
    let rpt = rows_per_task(rows, dim);
    if rpt >= rows {
        return fwd_rows(out, rstd, x, w, eps);
    }
    out.par_chunks_mut(rpt * dim)
        .zip(rstd.par_chunks_mut(rpt))
        .zip(x.par_chunks(rpt * dim))
        .for_each(|((o, r), x)| fwd_rows(o, r, x, w, eps));
}

#[inline(always)]
fn lane_sum3<T: Real>(a: &[T], b: &[T], c: &[T]) -> T {
    let mut acc = [T::zero(); 16];
    let (mut ia, mut ib, mut ic) = (a.chunks_exact(16), b.chunks_exact(16), c.chunks_exact(16));
    for ((x, y), z) in (&mut ia).zip(&mut ib).zip(&mut ic) {
        for i in 0..16 {
            acc[i] += x[i] * y[i] * z[i];
        }
    }
    let mut tail = T::zero();
    for ((&x, &y), &z) in ia
        .remainder()
        .iter()
        .zip(ib.remainder())
        .zip(ic.remainder())
    {
        tail += x * y * z;
    }
    lane_sum(&acc, |v| v) + tail
}

simd_fn! {
    /// A block of rows: `dx += ...`, `dwp = sum over the block of dy * x * rstd` (overwritten).
    fn bwd_rows<T: Real>(dx: &mut [T], dwp: &mut [T], dy: &[T], x: &[T], w: &[T], rstd: &[T]) {
        let dim = w.len();
        let inv_n = T::one() / T::of_f64(dim as f64);
        dwp.fill(T::zero());
        for (((dxr, dyr), xr), &r) in dx.chunks_exact_mut(dim).zip(dy.chunks_exact(dim)).zip(x.chunks_exact(dim)).zip(rstd) {
            // y = w x r, r = (mean(x^2)+eps)^-1/2  =>  dx = r w dy - (r^3/N) x sum(w dy x)
            let c = lane_sum3(dyr, w, xr) * r * r * r * inv_n;
            for j in 0..dim {
                dxr[j] += r * (w[j] * dyr[j]) - c * xr[j];
                dwp[j] += dyr[j] * xr[j] * r;
            }
        }
    }
}

simd_fn! {
    fn add_rows<T: Real>(dw: &mut [T], parts: &[T]) {
        let dim = dw.len();
        for p in parts.chunks_exact(dim) {
            for (d, &v) in dw.iter_mut().zip(p) {
                *d += v;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd<T: Real>(
    dx: &mut [T],
    dw: &mut [T],
    dy: &[T],
    x: &[T],
    w: &[T],
    rstd: &[T],
    dim: usize,
) {
    let rows = check("rmsnorm_bwd", x.len(), w.len(), dim);
    assert_eq!(
        dw.len(),
        dim,
        "rmsnorm_bwd: dw has {} elements, dim {dim}",
        dw.len()
    );
    for (what, l) in [("dx", dx.len()), ("dout", dy.len())] {
        assert_eq!(
            l,
            x.len(),
            "rmsnorm_bwd: {what} has {l} elements, x {}",
            x.len()
        );
    }
    assert_eq!(
        rstd.len(),
        rows,
        "rmsnorm_bwd: rstd has {} elements, rows {rows}",
        rstd.len()
    );
    let blocks = rows.div_ceil(DW_BLOCK);
    let bsz = DW_BLOCK * dim;
    T::with_scratch(blocks * dim, |parts| {
        // Blocks per task, a whole number of DW_BLOCKs.
        let bpt = rows_per_task(rows, dim).div_ceil(DW_BLOCK).max(1);
        dx.par_chunks_mut(bpt * bsz)
            .zip(parts.par_chunks_mut(bpt * dim))
            .zip(dy.par_chunks(bpt * bsz).zip(x.par_chunks(bpt * bsz)))
            .zip(rstd.par_chunks(bpt * DW_BLOCK))
            .for_each(|(((dx, p), (dy, x)), r)| {
                for ((((dx, p), dy), x), r) in dx
                    .chunks_mut(bsz)
                    .zip(p.chunks_mut(dim))
                    .zip(dy.chunks(bsz))
                    .zip(x.chunks(bsz))
                    .zip(r.chunks(DW_BLOCK))
                {
                    bwd_rows(dx, p, dy, x, w, r);
                }
            });
        add_rows(dw, parts);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{check_grad, dot, rand_vec, Rng};

    fn loss(x: &[f64], w: &[f64], r: &[f64], dim: usize, eps: f32) -> f64 {
        let rows = x.len() / dim;
        let mut out = vec![0.0; x.len()];
        let mut rstd = vec![0.0; rows];
        rmsnorm_fwd(&mut out, &mut rstd, x, w, dim, eps);
        dot(&out, r)
    }

    #[test]
    fn rmsnorm_forward_matches_formula() {
        let (x, w) = (vec![1.0, 2.0, 3.0, -4.0], vec![0.5, 2.0]);
        let mut out = vec![0.0; 4];
        let mut rstd = vec![0.0; 2];
        rmsnorm_fwd(&mut out, &mut rstd, &x, &w, 2, 0.0);
        let r0 = 1.0 / 2.5f64.sqrt();
        let r1 = 1.0 / 12.5f64.sqrt();
        let want = [0.5 * r0, 4.0 * r0, 1.5 * r1, -8.0 * r1];
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-15);
        }
        assert!((rstd[1] - r1).abs() < 1e-15);
    }

    #[test]
    fn rmsnorm_backward_finite_difference() {
        let mut rng = Rng::new(3);
        // 70 rows: more than two DW_BLOCKs, the last one partial.
        for &(rows, dim) in &[(3, 5), (70, 48)] {
            let eps = 1e-5;
            let x = rand_vec(&mut rng, rows * dim);
            let w = rand_vec(&mut rng, dim);
            let r = rand_vec(&mut rng, rows * dim);
            let mut out = vec![0.0; x.len()];
            let mut rstd = vec![0.0; rows];
            rmsnorm_fwd(&mut out, &mut rstd, &x, &w, dim, eps);
            // Accumulation: start from nonzero gradients and subtract them afterwards.
            let dx0 = rand_vec(&mut rng, x.len());
            let dw0 = rand_vec(&mut rng, dim);
            let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
            rmsnorm_bwd(&mut dx, &mut dw, &r, &x, &w, &rstd, dim);
            let dx: Vec<f64> = dx.iter().zip(&dx0).map(|(a, b)| a - b).collect();
            let dw: Vec<f64> = dw.iter().zip(&dw0).map(|(a, b)| a - b).collect();
            check_grad("rmsnorm dx", &x, &dx, 60, 1, |x| loss(x, &w, &r, dim, eps));
            check_grad("rmsnorm dw", &w, &dw, 60, 2, |w| loss(&x, w, &r, dim, eps));
        }
    }

    #[test]
    fn rmsnorm_large_is_parallel_and_deterministic() {
        let mut rng = Rng::new(4);
        let (rows, dim) = (300, 256);
        let x: Vec<f32> = rand_vec(&mut rng, rows * dim)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let w: Vec<f32> = rand_vec(&mut rng, dim).iter().map(|&v| v as f32).collect();
        let dy: Vec<f32> = rand_vec(&mut rng, rows * dim)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let mut out = vec![0.0; x.len()];
        let mut rstd = vec![0.0; rows];
        rmsnorm_fwd(&mut out, &mut rstd, &x, &w, dim, 1e-6);
        let run = || {
            let (mut dx, mut dw) = (vec![0.0f32; x.len()], vec![0.0f32; dim]);
            rmsnorm_bwd(&mut dx, &mut dw, &dy, &x, &w, &rstd, dim);
            (dx, dw)
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        // dw against a plain f64 sum.
        for j in 0..dim {
            let want: f64 = (0..rows)
                .map(|i| dy[i * dim + j] as f64 * x[i * dim + j] as f64 * rstd[i] as f64)
                .sum();
            assert!((a.1[j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
        }
    }
}
