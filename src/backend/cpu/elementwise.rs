//! Elementwise kernels: copy / zero / add / scale, the f64 sum of squares (grad-norm), SwiGLU
//! forward and backward, the AdamW update (torch.optim.AdamW's exact formulation) and LAMB's two
//! elementwise phases (src/optim/lamb.rs computes the trust ratios between them). Each op
//! cuts its buffers into rayon chunks (serial below `MIN_CHUNK`) and runs a plain loop compiled
//! for AVX2 by `simd_fn!`.

use super::par::{chunk_len, simd_fn, MIN_CHUNK};
use super::Real;
use crate::backend::{AdamWStep, LambStep};
use rayon::prelude::*;

fn check_len(op: &str, a: usize, b: usize) {
    assert_eq!(a, b, "{op}: buffer lengths differ ({a} vs {b})");
}

pub fn fill<T: Real>(buf: &mut [T], v: T) {
    if buf.len() < 4 * MIN_CHUNK {
        buf.fill(v);
    } else {
        buf.par_chunks_mut(chunk_len(buf.len(), 16))
            .for_each(|c| c.fill(v));
    }
}

pub fn copy<T: Real>(dst: &mut [T], src: &[T]) {
    check_len("copy", dst.len(), src.len());
    if dst.len() < 4 * MIN_CHUNK {
        dst.copy_from_slice(src);
    } else {
        let c = chunk_len(dst.len(), 16);
        dst.par_chunks_mut(c)
            .zip(src.par_chunks(c))
            .for_each(|(d, s)| d.copy_from_slice(s));
    }
}

simd_fn! {
    fn add_kernel<T: Real>(d: &mut [T], s: &[T]) {
        for (x, &y) in d.iter_mut().zip(s) {
            *x += y;
        }
    }
}

pub fn add_assign<T: Real>(dst: &mut [T], src: &[T]) {
    check_len("add_assign", dst.len(), src.len());
    if dst.len() < MIN_CHUNK {
        add_kernel(dst, src);
    } else {
        let c = chunk_len(dst.len(), 16);
        dst.par_chunks_mut(c)
            .zip(src.par_chunks(c))
            .for_each(|(d, s)| add_kernel(d, s));
    }
}

simd_fn! {
    fn scale_kernel<T: Real>(d: &mut [T], s: T) {
        for x in d.iter_mut() {
            *x *= s;
        }
    }
}

pub fn scale<T: Real>(buf: &mut [T], s: T) {
    if buf.len() < MIN_CHUNK {
        scale_kernel(buf, s);
    } else {
        buf.par_chunks_mut(chunk_len(buf.len(), 16))
            .for_each(|d| scale_kernel(d, s));
    }
}

simd_fn! {
    fn sum_squares_kernel<T: Real>(x: &[T]) -> f64 {
        // 8 independent f64 accumulators (vectorises), combined pairwise.
        let mut acc = [0.0f64; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for i in 0..8 {
                let v = c[i].as_f64();
                acc[i] += v * v;
            }
        }
        let tail: f64 = it.remainder().iter().map(|v| v.as_f64() * v.as_f64()).sum();
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
    }
}

/// `sum(x^2)` accumulated in f64. The buffer is cut into at most 64 chunks whose size depends
/// on the length only, and the partial sums are added in order: reproducible, and no allocation.
pub fn sum_squares<T: Real>(buf: &[T]) -> f64 {
    if buf.len() < MIN_CHUNK {
        return sum_squares_kernel(buf);
    }
    let chunk = buf.len().div_ceil(64).div_ceil(MIN_CHUNK) * MIN_CHUNK;
    let mut parts = [0.0f64; 64];
    parts
        .par_iter_mut()
        .zip(buf.par_chunks(chunk))
        .for_each(|(p, c)| *p = sum_squares_kernel(c));
    parts.iter().sum()
}

#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_fast())
}

simd_fn! {
    fn swiglu_fwd_kernel<T: Real>(out: &mut [T], gate: &[T], up: &[T]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    }
}

simd_fn! {
    fn swiglu_bwd_kernel<T: Real>(dg: &mut [T], du: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
        let n = dg.len();
        let (du, dout, gate, up) = (&mut du[..n], &dout[..n], &gate[..n], &up[..n]);
        for i in 0..n {
            let g = gate[i];
            let s = sigmoid(g);
            let silu = g * s;
            let d = dout[i];
            du[i] = d * silu;
            dg[i] = d * up[i] * (s + silu * (T::one() - s));
        }
    }
}

/// `out = silu(gate) * up`.
pub fn swiglu_fwd<T: Real>(out: &mut [T], gate: &[T], up: &[T]) {
    check_len("swiglu_fwd", out.len(), gate.len());
    check_len("swiglu_fwd", out.len(), up.len());
    if out.len() < MIN_CHUNK {
        return swiglu_fwd_kernel(out, gate, up);
    }
    let c = chunk_len(out.len(), 16);
    out.par_chunks_mut(c)
        .zip(gate.par_chunks(c))
        .zip(up.par_chunks(c))
        .for_each(|((o, g), u)| swiglu_fwd_kernel(o, g, u));
}

/// Overwrites `dgate = dout * up * silu'(gate)` and `dup = dout * silu(gate)`.
pub fn swiglu_bwd<T: Real>(dgate: &mut [T], dup: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
    for (what, l) in [
        ("dup", dup.len()),
        ("dout", dout.len()),
        ("gate", gate.len()),
        ("up", up.len()),
    ] {
        assert_eq!(
            l,
            dgate.len(),
            "swiglu_bwd: {what} has {l} elements, dgate {}",
            dgate.len()
        );
    }
    if dgate.len() < MIN_CHUNK {
        return swiglu_bwd_kernel(dgate, dup, dout, gate, up);
    }
    let c = chunk_len(dgate.len(), 16);
    dgate
        .par_chunks_mut(c)
        .zip(dup.par_chunks_mut(c))
        .zip(dout.par_chunks(c))
        .zip(gate.par_chunks(c).zip(up.par_chunks(c)))
        .for_each(|(((dg, du), d), (g, u))| swiglu_bwd_kernel(dg, du, d, g, u));
}

simd_fn! {
    fn adamw_kernel<T: Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: [T; 8]) {
        let [decay, b1, omb1, b2, omb2, step_size, bc2_sqrt, eps] = k;
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i];
            let mi = b1 * m[i] + omb1 * gi;
            let vi = b2 * v[i] + omb2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            let denom = vi.sqrt() / bc2_sqrt + eps;
            p[i] = p[i] * decay - step_size * (mi / denom);
        }
    }
}

/// One AdamW step in torch.optim.AdamW's formulation (decoupled decay first):
/// `p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
///  p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)`.
pub fn adamw<T: Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: AdamWStep) {
    for (what, l) in [("grad", g.len()), ("m", m.len()), ("v", v.len())] {
        assert_eq!(
            l,
            p.len(),
            "adamw: {what} has {l} elements, param {}",
            p.len()
        );
    }
    assert!(h.step >= 1, "adamw: step must be 1-based, got {}", h.step);
    let (lr, b1, b2) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64);
    let t = h.step.min(i32::MAX as u64) as i32;
    let k = [
        T::of_f64(1.0 - lr * h.weight_decay as f64),
        T::of_f64(b1),
        T::of_f64(1.0 - b1),
        T::of_f64(b2),
        T::of_f64(1.0 - b2),
        T::of_f64(lr / (1.0 - b1.powi(t))),
        T::of_f64((1.0 - b2.powi(t)).sqrt()),
        T::of_f32(h.eps),
    ];
    if p.len() < MIN_CHUNK {
        return adamw_kernel(p, g, m, v, k);
    }
    let c = chunk_len(p.len(), 16);
    p.par_chunks_mut(c)
        .zip(g.par_chunks(c))
        .zip(m.par_chunks_mut(c).zip(v.par_chunks_mut(c)))
        .for_each(|((p, g), (m, v))| adamw_kernel(p, g, m, v, k));
}

simd_fn! {
    fn lamb_moments_kernel<T: Real>(g: &mut [T], p: &[T], m: &mut [T], v: &mut [T], k: [T; 8]) {
        let [b1, omb1, b2, omb2, inv_bc1, bc2_sqrt, eps, wd] = k;
        let n = g.len();
        let (p, m, v) = (&p[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i];
            let mi = b1 * m[i] + omb1 * gi;
            let vi = b2 * v[i] + omb2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            g[i] = inv_bc1 * (mi / (vi.sqrt() / bc2_sqrt + eps)) + wd * p[i];
        }
    }
}

/// LAMB's first phase on one tensor: the moments, and the update direction written over the
/// gradient, `g = m̂ / (sqrt(v̂) + eps) + wd * p` with `m̂ = m / (1-b1^t)`, `v̂ = v / (1-b2^t)`
/// (or the raw moments without bias correction). The constants are f64 rounded once, as `adamw`'s.
pub fn lamb_moments<T: Real>(g: &mut [T], p: &[T], m: &mut [T], v: &mut [T], weight_decay: f32, h: LambStep) {
    for (what, l) in [("param", p.len()), ("m", m.len()), ("v", v.len())] {
        assert_eq!(l, g.len(), "lamb: {what} has {l} elements, grad {}", g.len());
    }
    assert!(h.step >= 1, "lamb: step must be 1-based, got {}", h.step);
    let (b1, b2) = (h.beta1 as f64, h.beta2 as f64);
    let t = h.step.min(i32::MAX as u64) as i32;
    let (bc1, bc2) = if h.bias_correction { (1.0 - b1.powi(t), 1.0 - b2.powi(t)) } else { (1.0, 1.0) };
    let k = [
        T::of_f64(b1),
        T::of_f64(1.0 - b1),
        T::of_f64(b2),
        T::of_f64(1.0 - b2),
        T::of_f64(1.0 / bc1),
        T::of_f64(bc2.sqrt()),
        T::of_f32(h.eps),
        T::of_f32(weight_decay),
    ];
    if g.len() < MIN_CHUNK {
        return lamb_moments_kernel(g, p, m, v, k);
    }
    let c = chunk_len(g.len(), 16);
    g.par_chunks_mut(c)
        .zip(p.par_chunks(c))
        .zip(m.par_chunks_mut(c).zip(v.par_chunks_mut(c)))
        .for_each(|((g, p), (m, v))| lamb_moments_kernel(g, p, m, v, k));
}

simd_fn! {
    fn lamb_apply_kernel<T: Real>(p: &mut [T], u: &[T], s: T) {
        for (x, &d) in p.iter_mut().zip(u) {
            *x -= s * d;
        }
    }
}

/// LAMB's second phase on one tensor: `p -= step * u` (`step`: the learning rate times the
/// tensor's trust ratio).
pub fn lamb_apply<T: Real>(p: &mut [T], u: &[T], step: T) {
    check_len("lamb_apply", p.len(), u.len());
    if p.len() < MIN_CHUNK {
        return lamb_apply_kernel(p, u, step);
    }
    let c = chunk_len(p.len(), 16);
    p.par_chunks_mut(c).zip(u.par_chunks(c)).for_each(|(p, u)| lamb_apply_kernel(p, u, step));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{check_grad, dot, rand_vec, Rng};

    #[test]
    fn add_scale_copy_fill_small_and_large() {
        for n in [5, 3 * MIN_CHUNK + 7, 5 * MIN_CHUNK] {
            let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let mut b: Vec<f64> = (0..n).map(|i| 0.5 * i as f64).collect();
            add_assign(&mut b, &a);
            scale(&mut b, 2.0);
            assert!(b.iter().enumerate().all(|(i, &x)| x == 3.0 * i as f64));
            let mut c = vec![1.0; n];
            copy(&mut c, &b);
            assert_eq!(c, b);
            fill(&mut c, 0.0);
            assert!(c.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn sum_squares_in_f64() {
        let n = 3 * MIN_CHUNK + 11;
        let x: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        let want: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        assert!((sum_squares(&x) - want).abs() < 1e-9 * want);
        // 2^24 + 1 ones: an f32 accumulator would stall at 2^24.
        let ones = vec![1.0f32; (1 << 24) + 1];
        assert_eq!(sum_squares(&ones), ((1u64 << 24) + 1) as f64);
        assert_eq!(sum_squares::<f64>(&[3.0, 4.0]), 25.0);
    }

    #[test]
    fn swiglu_forward_and_finite_difference() {
        let mut rng = Rng::new(20);
        let n = 300;
        let gate: Vec<f64> = rand_vec(&mut rng, n).iter().map(|x| 6.0 * x).collect();
        let up = rand_vec(&mut rng, n);
        let r = rand_vec(&mut rng, n);
        let mut out = vec![0.0; n];
        swiglu_fwd(&mut out, &gate, &up);
        for i in 0..n {
            let want = gate[i] / (1.0 + (-gate[i]).exp()) * up[i];
            assert!((out[i] - want).abs() < 1e-14);
        }
        let (mut dg, mut du) = (vec![f64::NAN; n], vec![f64::NAN; n]);
        swiglu_bwd(&mut dg, &mut du, &r, &gate, &up);
        let f = |g: &[f64], u: &[f64]| {
            let mut o = vec![0.0; n];
            swiglu_fwd(&mut o, g, u);
            dot(&o, &r)
        };
        check_grad("swiglu dgate", &gate, &dg, 300, 1, |g| f(g, &up));
        check_grad("swiglu dup", &up, &du, 300, 2, |u| f(&gate, u));
    }

    #[test]
    fn swiglu_f32_matches_f64_on_large_buffers() {
        let mut rng = Rng::new(21);
        let n = 3 * MIN_CHUNK;
        let g = rand_vec(&mut rng, n)
            .iter()
            .map(|x| 20.0 * x)
            .collect::<Vec<f64>>();
        let u = rand_vec(&mut rng, n);
        let mut o = vec![0.0; n];
        swiglu_fwd(&mut o, &g, &u);
        let (g32, u32_): (Vec<f32>, Vec<f32>) = (
            g.iter().map(|&x| x as f32).collect(),
            u.iter().map(|&x| x as f32).collect(),
        );
        let mut o32 = vec![0.0f32; n];
        swiglu_fwd(&mut o32, &g32, &u32_);
        let (mut dg, mut du) = (vec![0.0f32; n], vec![0.0f32; n]);
        swiglu_bwd(&mut dg, &mut du, &u32_, &g32, &u32_);
        for i in 0..n {
            assert!((o32[i] as f64 - o[i]).abs() < 1e-5 * (1.0 + o[i].abs()));
            assert!(dg[i].is_finite() && du[i].is_finite());
        }
    }

    #[test]
    fn adamw_two_steps_by_hand() {
        let h = |step| AdamWStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step,
        };
        // The hyper-parameters travel as f32: use their exact f32 values.
        let (lr, b1, b2, eps, wd) = (
            0.1f32 as f64,
            0.9f32 as f64,
            0.999f32 as f64,
            1e-8f32 as f64,
            0.01f32 as f64,
        );
        let (mut p, mut m, mut v) = (vec![1.0f64, -2.0], vec![0.0; 2], vec![0.0; 2]);
        adamw(&mut p, &[0.5, 0.0], &mut m, &mut v, h(1));
        // Step 1, element 0: p = 1*(1-lr*wd); m = 0.05, v = 0.00025; mhat = 0.5, vhat = 0.25
        // => p -= lr * 0.5/(0.5+eps). With lr = 0.1 exactly this is 0.899000002.
        let want1 = (1.0 - lr * wd) - lr * 0.5 / (0.5 + eps);
        assert!((want1 - 0.899000002).abs() < 1e-8);
        assert!((p[0] - want1).abs() < 1e-12, "{} vs {want1}", p[0]);
        assert!((m[0] - 0.05).abs() < 1e-7 && (v[0] - 0.00025).abs() < 1e-8);
        // Element 1 has zero gradient: only the decay acts.
        assert!((p[1] - (-2.0 * (1.0 - lr * wd))).abs() < 1e-12);
        adamw(&mut p, &[-0.25, 0.0], &mut m, &mut v, h(2));
        // Step 2: m = b1*m1 - (1-b1)*0.25, v = b2*v1 + (1-b2)*0.0625, bias corrections 1-b^2.
        let (m1, v1) = ((1.0 - b1) * 0.5, (1.0 - b2) * 0.25);
        let (m2, v2) = (b1 * m1 - (1.0 - b1) * 0.25, b2 * v1 + (1.0 - b2) * 0.0625);
        assert!((m2 - 0.02).abs() < 1e-7 && (v2 - 0.00031225).abs() < 1e-8);
        let (mhat, vhat) = (m2 / (1.0 - b1 * b1), v2 / (1.0 - b2 * b2));
        let want2 = want1 * (1.0 - lr * wd) - lr * mhat / (vhat.sqrt() + eps);
        assert!((m[0] - m2).abs() < 1e-15 && (v[0] - v2).abs() < 1e-15);
        assert!((p[0] - want2).abs() < 1e-12, "{} vs {want2}", p[0]);
    }
}
