//! The CPU backend: every op of the `Backend` trait on host memory, generic over the element
//! type (`f32` for training, `f64` for finite-difference tests). This file is the trait impl and
//! delegates to one file per op family: gemm (matrixmultiply), attention / attention_bwd (flash
//! style, tiled), norm (RMSNorm), rope, elementwise (add, scale, SwiGLU, AdamW, sum of squares),
//! loss (fused cross-entropy), embedding. Kernels are parallel with rayon (deterministic: the
//! split never changes a summation order that matters, or depends on shapes only) and keep their
//! scratch in per-thread buffers that grow once.

mod attention;
mod attention_bwd;
#[cfg(test)]
mod bench;
mod elementwise;
mod embedding;
mod gemm;
mod loss;
mod norm;
mod par;
mod real;
mod rope;
#[cfg(test)]
mod testutil;
mod tile;

pub use real::Real;

use super::{AdamWStep, AttnShape, Backend};
use std::marker::PhantomData;

/// The CPU backend over element type `T`. Stateless: scratch lives in thread-locals.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend<T: Real> {
    _t: PhantomData<T>,
}

impl<T: Real> CpuBackend<T> {
    pub fn new() -> Self {
        CpuBackend { _t: PhantomData }
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

    fn embedding_fwd(&self, out: &mut Vec<T>, table: &Vec<T>, ids: &Vec<u32>, dim: usize) {
        embedding::embedding_fwd(out, table, ids, dim);
    }
    fn embedding_bwd(&self, dtable: &mut Vec<T>, dout: &Vec<T>, ids: &Vec<u32>, dim: usize) {
        embedding::embedding_bwd(dtable, dout, ids, dim);
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
}
