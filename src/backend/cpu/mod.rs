//! The CPU backend: every op of the `Backend` trait on host memory, generic over the element
//! type (`f32` for training, `f64` for finite-difference tests). This file is the trait impl and
//! delegates to one file per op family: gemm (matrixmultiply, threaded over rayon), attention /
//! attention_bwd (flash style, tiled, with the packing-free tile products of tile.rs), norm
//! (RMSNorm), rope, elementwise (add, scale, SwiGLU, AdamW, LAMB, sum of squares), loss (fused
//! cross-entropy), embedding; real.rs is the element type, par.rs the rayon/SIMD plumbing.
//! Kernels are parallel with rayon and deterministic: a split never changes a summation order,
//! or the order depends on shapes only (never on thread count or timing). Scratch lives in
//! per-thread buffers that grow once, so a training step does not churn the heap.

mod attention;
mod attention_bwd;
mod elementwise;
mod embedding;
mod gemm;
mod loss;
#[cfg(test)]
mod microbench;
mod norm;
mod par;
mod real;
mod rope;
#[cfg(test)]
mod testutil;
mod tile;

pub use real::Real;

use super::{AdamWStep, AttnShape, Backend, LambStep, LambTensor};
use std::marker::PhantomData;

/// The CPU backend over element type `T`. Stateless: scratch lives in thread-locals.
#[derive(Debug, Clone, Copy)]
pub struct CpuBackend<T: Real> {
    _t: PhantomData<T>,
}

impl<T: Real> CpuBackend<T> {
    /// Also makes matrixmultiply single-threaded (unless `MATMUL_NUM_THREADS` is set): large
    /// GEMMs are split over rayon's threads instead.
    pub fn new() -> Self {
        gemm::init_threads();
        CpuBackend { _t: PhantomData }
    }
}

/// Elements of per-thread scratch that attention forward and backward of `shape` keep on the
/// calling thread (it grows to the larger and stays), for the planner's memory model.
pub fn attention_scratch_elems(shape: &AttnShape) -> usize {
    let g = attention::Geo::new("attention_scratch_elems", *shape);
    attention::fwd_scratch_len(g).max(attention_bwd::bwd_scratch_len(g))
}

impl<T: Real> Default for CpuBackend<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> Backend for CpuBackend<T> {
    type Buf = Vec<T>;
    type Ids = Vec<u32>;

    fn name(&self) -> &'static str {
        if T::NAME == "f64" {
            "cpu-f64"
        } else {
            "cpu-f32"
        }
    }

    fn zeros(&self, len: usize) -> Vec<T> {
        vec![T::zero(); len]
    }
    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
    fn upload(&self, host: &[f32], dst: &mut Vec<T>) {
        assert_eq!(
            dst.len(),
            host.len(),
            "upload: destination has {} elements, host {}",
            dst.len(),
            host.len()
        );
        for (d, &h) in dst.iter_mut().zip(host) {
            *d = T::of_f32(h);
        }
    }
    fn download(&self, src: &Vec<T>) -> Vec<f32> {
        src.iter().map(|x| x.as_f32()).collect()
    }
    fn download_into(&self, src: &Vec<T>, dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "download_into: source has {} elements, destination {}", src.len(), dst.len());
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.as_f32();
        }
    }
    fn upload_ids(&self, host: &[u32], dst: &mut Vec<u32>) {
        assert_eq!(
            dst.len(),
            host.len(),
            "upload_ids: destination has {} ids, host {}",
            dst.len(),
            host.len()
        );
        dst.copy_from_slice(host);
    }
    fn zeros_ids(&self, len: usize) -> Vec<u32> {
        vec![0; len]
    }
    fn fill_zero(&self, buf: &mut Vec<T>) {
        elementwise::fill(buf, T::zero());
    }
    fn copy(&self, dst: &mut Vec<T>, src: &Vec<T>) {
        elementwise::copy(dst, src);
    }
    fn copy_range(&self, dst: &mut Vec<T>, dst_at: usize, src: &Vec<T>, src_at: usize, n: usize) {
        dst[dst_at..dst_at + n].copy_from_slice(&src[src_at..src_at + n]);
    }
    fn add_assign(&self, dst: &mut Vec<T>, src: &Vec<T>) {
        elementwise::add_assign(dst, src);
    }
    fn scale(&self, buf: &mut Vec<T>, s: f32) {
        elementwise::scale(buf, T::of_f32(s));
    }
    fn sum_squares(&self, buf: &Vec<T>) -> f64 {
        elementwise::sum_squares(buf)
    }

    fn sum(&self, buf: &Vec<T>) -> f64 {
        buf.iter().map(|x| x.as_f64()).sum()
    }

    fn gemm(
        &self,
        c: &mut Vec<T>,
        a: &Vec<T>,
        b: &Vec<T>,
        m: usize,
        k: usize,
        n: usize,
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
    ) {
        gemm::gemm(
            c,
            a,
            b,
            m,
            k,
            n,
            trans_a,
            trans_b,
            T::of_f32(alpha),
            T::of_f32(beta),
        );
    }

    fn embedding_fwd(&self, out: &mut Vec<T>, table: &Vec<T>, ids: &Vec<u32>, dim: usize, vocab_start: usize) {
        embedding::embedding_fwd(out, table, ids, dim, vocab_start);
    }
    fn embedding_bwd(&self, dtable: &mut Vec<T>, dout: &Vec<T>, ids: &Vec<u32>, dim: usize, vocab_start: usize) {
        embedding::embedding_bwd(dtable, dout, ids, dim, vocab_start);
    }

    fn rmsnorm_fwd(
        &self,
        out: &mut Vec<T>,
        rstd: &mut Vec<T>,
        x: &Vec<T>,
        w: &Vec<T>,
        dim: usize,
        eps: f32,
    ) {
        norm::rmsnorm_fwd(out, rstd, x, w, dim, eps);
    }
    fn rmsnorm_bwd(
        &self,
        dx: &mut Vec<T>,
        dw: &mut Vec<T>,
        dout: &Vec<T>,
        x: &Vec<T>,
        w: &Vec<T>,
        rstd: &Vec<T>,
        dim: usize,
    ) {
        norm::rmsnorm_bwd(dx, dw, dout, x, w, rstd, dim);
    }

    fn rope_fwd(
        &self,
        x: &mut Vec<T>,
        cos: &Vec<T>,
        sin: &Vec<T>,
        batch: usize,
        seq: usize,
        heads: usize,
        head_dim: usize,
    ) {
        rope::rope(x, cos, sin, batch, seq, heads, head_dim, false);
    }
    fn rope_bwd(
        &self,
        dx: &mut Vec<T>,
        cos: &Vec<T>,
        sin: &Vec<T>,
        batch: usize,
        seq: usize,
        heads: usize,
        head_dim: usize,
    ) {
        rope::rope(dx, cos, sin, batch, seq, heads, head_dim, true);
    }

    fn attention_fwd(
        &self,
        out: &mut Vec<T>,
        lse: &mut Vec<T>,
        q: &Vec<T>,
        k: &Vec<T>,
        v: &Vec<T>,
        s: AttnShape,
    ) {
        attention::attention_fwd(out, lse, q, k, v, s);
    }
    fn attention_bwd(
        &self,
        dq: &mut Vec<T>,
        dk: &mut Vec<T>,
        dv: &mut Vec<T>,
        dout: &Vec<T>,
        q: &Vec<T>,
        k: &Vec<T>,
        v: &Vec<T>,
        out: &Vec<T>,
        lse: &Vec<T>,
        s: AttnShape,
    ) {
        attention_bwd::attention_bwd(dq, dk, dv, dout, q, k, v, out, lse, s);
    }

    fn swiglu_fwd(&self, out: &mut Vec<T>, gate: &Vec<T>, up: &Vec<T>) {
        elementwise::swiglu_fwd(out, gate, up);
    }
    fn swiglu_bwd(
        &self,
        dgate: &mut Vec<T>,
        dup: &mut Vec<T>,
        dout: &Vec<T>,
        gate: &Vec<T>,
        up: &Vec<T>,
    ) {
        elementwise::swiglu_bwd(dgate, dup, dout, gate, up);
    }

    fn cross_entropy_fwd_bwd(
        &self,
        logits: &mut Vec<T>,
        losses: &mut Vec<T>,
        targets: &Vec<u32>,
        vocab: usize,
        valid_vocab: usize,
        grad_scale: f32,
    ) {
        loss::cross_entropy(logits, losses, targets, vocab, valid_vocab, grad_scale);
    }

    fn cross_entropy_local_stats(
        &self,
        logits: &Vec<T>,
        stats: &mut Vec<T>,
        targets: &Vec<u32>,
        vocab_local: usize,
        valid_local: usize,
        vocab_start: usize,
    ) {
        loss::cross_entropy_local_stats(logits, stats, targets, vocab_local, valid_local, vocab_start);
    }

    fn cross_entropy_finish(
        &self,
        logits: &mut Vec<T>,
        losses: &mut Vec<T>,
        global: &Vec<T>,
        targets: &Vec<u32>,
        vocab_local: usize,
        valid_local: usize,
        vocab_start: usize,
        grad_scale: f32,
    ) {
        loss::cross_entropy_finish(logits, losses, global, targets, vocab_local, valid_local, vocab_start, grad_scale);
    }

    fn adamw(
        &self,
        param: &mut Vec<T>,
        grad: &Vec<T>,
        m: &mut Vec<T>,
        v: &mut Vec<T>,
        h: AdamWStep,
    ) {
        elementwise::adamw(param, grad, m, v, h);
    }

    fn lamb_moments_all(&self, tensors: &mut [LambTensor<'_, Self>], h: LambStep) {
        for t in tensors {
            elementwise::lamb_moments(t.grad, t.param, t.m, t.v, t.weight_decay, h);
        }
    }

    fn lamb_apply_all(&self, tensors: &mut [LambTensor<'_, Self>], steps: &[f32]) {
        assert_eq!(tensors.len(), steps.len(), "lamb_apply_all: {} tensors, {} steps", tensors.len(), steps.len());
        for (t, &s) in tensors.iter_mut().zip(steps) {
            elementwise::lamb_apply(t.param, t.grad, T::of_f32(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trait_wiring_smoke() {
        let be = CpuBackend::<f64>::new();
        assert_eq!(be.name(), "cpu-f64");
        assert_eq!(CpuBackend::<f32>::default().name(), "cpu-f32");
        let mut a = be.zeros(4);
        be.upload(&[1.0, 2.0, 3.0, 4.0], &mut a);
        let mut b = be.zeros(4);
        be.copy(&mut b, &a);
        be.add_assign(&mut b, &a);
        be.scale(&mut b, 0.5);
        assert_eq!(be.download(&b), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(be.sum_squares(&a), 30.0);
        // [2,2] x [2,2]ᵀ with beta: c = 2 * a aᵀ + 1 * c.
        let mut c = be.zeros(4);
        be.upload(&[1.0, 1.0, 1.0, 1.0], &mut c);
        be.gemm(&mut c, &a, &a, 2, 2, 2, false, true, 2.0, 1.0);
        assert_eq!(c, vec![11.0, 23.0, 23.0, 51.0]);
        // RoPE forward then backward (the inverse rotation) is the identity.
        let (cos, sin) = (vec![0.6, 0.8], vec![0.8, -0.6]);
        let mut x = a.clone();
        be.rope_fwd(&mut x, &cos, &sin, 1, 1, 1, 4);
        assert_ne!(x, a);
        be.rope_bwd(&mut x, &cos, &sin, 1, 1, 1, 4);
        assert!(x.iter().zip(&a).all(|(p, q)| (p - q).abs() < 1e-15));
        let mut ids = be.zeros_ids(2);
        be.upload_ids(&[1, 0], &mut ids);
        let mut out = be.zeros(4);
        be.embedding_fwd(&mut out, &a, &ids, 2, 0);
        assert_eq!(out, vec![3.0, 4.0, 1.0, 2.0]);
        be.fill_zero(&mut out);
        assert_eq!(be.len(&out), 4);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
