//! Rotary position embedding, Hugging Face Llama "rotate-half" convention, in place on
//! `[B, T, H, D]`: with `x1 = x[..D/2]`, `x2 = x[D/2..]` and the `[T, D/2]` tables,
//! forward `x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin`; backward applies the transpose
//! rotation (`sin -> -sin`). Parallel over token rows.

use super::par::{rows_per_task, simd_fn};
use super::Real;
use rayon::prelude::*;

simd_fn! {
    /// Rows of `[heads * head_dim]` starting at token row `row0`; `sign` is +1 forward, -1 back.
    fn rotate_rows<T: Real>(x: &mut [T], cos: &[T], sin: &[T], row0: usize, seq: usize, heads: usize, head_dim: usize, sign: T) {
        let half = head_dim / 2;
        for (r, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let t = (row0 + r) % seq;
            let c = &cos[t * half..(t + 1) * half];
            let s = &sin[t * half..(t + 1) * half];
            for head in row.chunks_exact_mut(head_dim) {
                let (x1, x2) = head.split_at_mut(half);
                for j in 0..half {
                    let (a, b) = (x1[j], x2[j]);
                    let sj = sign * s[j];
                    x1[j] = a * c[j] - b * sj;
                    x2[j] = b * c[j] + a * sj;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn rope<T: Real>(
    x: &mut [T],
    cos: &[T],
    sin: &[T],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    inverse: bool,
) {
    assert!(
        head_dim.is_multiple_of(2),
        "rope: head_dim {head_dim} must be even"
    );
    let row = heads * head_dim;
    let rows = batch * seq;
    assert_eq!(
        x.len(),
        rows * row,
        "rope: buffer has {} elements, expected [B={batch}, T={seq}, H={heads}, D={head_dim}]",
        x.len()
    );
    for (what, l) in [("cos", cos.len()), ("sin", sin.len())] {
        assert!(
            l >= seq * head_dim / 2,
            "rope: {what} table has {l} elements, need [T={seq}, D/2={}]",
            head_dim / 2
        );
    }
    if rows == 0 || row == 0 {
        return;
    }
    let sign = if inverse { -T::one() } else { T::one() };
    let rpt = rows_per_task(rows, row);
    x.par_chunks_mut(rpt * row)
        .enumerate()
        .for_each(|(i, x)| rotate_rows(x, cos, sin, i * rpt, seq, heads, head_dim, sign));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{check_grad, dot, rand_vec, Rng};

    #[test]
    fn rope_forward_rotate_half() {
        // One token, one head, D = 4: pairs (x0, x2) and (x1, x3) rotate by the table angles.
        let (a0, a1) = (0.3f64, -1.1f64);
        let cos = vec![a0.cos(), a1.cos()];
        let sin = vec![a0.sin(), a1.sin()];
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rope(&mut x, &cos, &sin, 1, 1, 1, 4, false);
        let want = [
            1.0 * a0.cos() - 3.0 * a0.sin(),
            2.0 * a1.cos() - 4.0 * a1.sin(),
            3.0 * a0.cos() + 1.0 * a0.sin(),
            4.0 * a1.cos() + 2.0 * a1.sin(),
        ];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{g} vs {w}");
        }
    }

    #[test]
    fn rope_backward_finite_difference() {
        let mut rng = Rng::new(5);
        let (b, t, h, d) = (2, 7, 3, 8);
        let cos = rand_vec(&mut rng, t * d / 2);
        let sin = rand_vec(&mut rng, t * d / 2);
        let x = rand_vec(&mut rng, b * t * h * d);
        let r = rand_vec(&mut rng, x.len());
        let mut dx = r.clone();
        rope(&mut dx, &cos, &sin, b, t, h, d, true);
        check_grad("rope dx", &x, &dx, 80, 3, |x| {
            let mut y = x.to_vec();
            rope(&mut y, &cos, &sin, b, t, h, d, false);
            dot(&y, &r)
        });
    }

    #[test]
    fn rope_parallel_matches_serial_rows() {
        let mut rng = Rng::new(6);
        let (b, t, h, d) = (3, 64, 4, 64);
        let cos = rand_vec(&mut rng, t * d / 2);
        let sin = rand_vec(&mut rng, t * d / 2);
        let x = rand_vec(&mut rng, b * t * h * d);
        let mut y = x.clone();
        rope(&mut y, &cos, &sin, b, t, h, d, false);
        let mut z = x.clone();
        for (i, row) in z.chunks_mut(h * d).enumerate() {
            rope(
                row,
                &cos[(i % t) * d / 2..],
                &sin[(i % t) * d / 2..],
                1,
                1,
                h,
                d,
                false,
            );
        }
        assert_eq!(y, z);
    }
}
