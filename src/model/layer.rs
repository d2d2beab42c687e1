//! The compute of one decoder layer and of the head (final norm, LM head, cross-entropy), forward
//! and backward, over the backend trait and within the tensor-parallel group:
//! q/k/v and gate/up are column-parallel (no communication), o_proj and down_proj row-parallel
//! (partial outputs all-reduced before the residual add), the LM head vocab-parallel with a
//! cross-entropy that combines per-shard (max, sum-exp, target logit) and never gathers logits;
//! in backward the input gradients of the column-parallel layers are all-reduced.

use super::layout::LocalDims;
use super::params::{LayerIds, ParamTable};
use crate::backend::{AttnShape, Backend};
use crate::config::ModelConfig;
use crate::dist::Collectives;

/// Everything read-only a layer needs: backend, shapes, weights, RoPE tables, TP group.
pub struct Cx<'a, B: Backend> {
    pub be: &'a B,
    pub cfg: &'a ModelConfig,
    pub table: &'a ParamTable,
    pub lc: LocalDims,
    pub tp: &'a dyn Collectives,
    pub w: &'a [B::Buf],
    pub cos: &'a B::Buf,
    pub sin: &'a B::Buf,
    /// Tokens per micro-batch (batch x seq).
    pub n: usize,
    pub shape: AttnShape,
}

/// Saved activations of one decoder layer, `[B*T, ...]`.
pub struct LayerActs<B: Backend> {
    ln1: B::Buf,
    rstd1: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    attn: B::Buf,
    lse: B::Buf,
    resid_mid: B::Buf,
    ln2: B::Buf,
    rstd2: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    swiglu: B::Buf,
}

/// Saved activations of the head; `logits` holds dloss/dlogits after the forward.
pub struct HeadActs<B: Backend> {
    pub final_ln: B::Buf,
    pub final_rstd: B::Buf,
    pub logits: B::Buf,
    pub losses: B::Buf,
}

/// Gradient scratch and communication staging shared by all layers of a rank.
pub struct Scratch<B: Backend> {
    /// Running gradient of the residual stream.
    pub resid: B::Buf,
    ln: B::Buf,
    attn: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    swiglu: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    /// Row-parallel partial outputs, summed over TP before the residual add.
    partial: B::Buf,
    /// Vocab-parallel cross-entropy statistics `[rows, 3]`: this shard's and the combined ones.
    ce_stats: B::Buf,
    ce_global: B::Buf,
    /// Host staging for TP collectives.
    host: Vec<f32>,
    host_stats: Vec<f32>,
}

fn dims<B: Backend>(cfg: &ModelConfig, lc: &LocalDims) -> (usize, usize, usize, usize, usize) {
    let d = cfg.head_dim();
    (cfg.hidden_size, lc.ffn, lc.vocab, lc.heads * d, lc.kv_heads * d)
}

impl<B: Backend> LayerActs<B> {
    pub fn new(be: &B, cfg: &ModelConfig, lc: &LocalDims, micro_batch: usize, seq: usize) -> Self {
        let n = micro_batch * seq;
        let (h, f, _, qd, kvd) = dims::<B>(cfg, lc);
        LayerActs {
            ln1: be.zeros(n * h),
            rstd1: be.zeros(n),
            q: be.zeros(n * qd),
            k: be.zeros(n * kvd),
            v: be.zeros(n * kvd),
            attn: be.zeros(n * qd),
            lse: be.zeros(micro_batch * lc.heads * seq),
            resid_mid: be.zeros(n * h),
            ln2: be.zeros(n * h),
            rstd2: be.zeros(n),
            gate: be.zeros(n * f),
            up: be.zeros(n * f),
            swiglu: be.zeros(n * f),
        }
    }
}

impl<B: Backend> HeadActs<B> {
    pub fn new(be: &B, cfg: &ModelConfig, lc: &LocalDims, n: usize) -> Self {
        HeadActs {
            final_ln: be.zeros(n * cfg.hidden_size),
            final_rstd: be.zeros(n),
            logits: be.zeros(n * lc.vocab),
            losses: be.zeros(n),
        }
    }
}

impl<B: Backend> Scratch<B> {
    pub fn new(be: &B, cfg: &ModelConfig, lc: &LocalDims, n: usize) -> Self {
        let (h, f, _, qd, kvd) = dims::<B>(cfg, lc);
        Scratch {
            resid: be.zeros(n * h),
            ln: be.zeros(n * h),
            attn: be.zeros(n * qd),
            q: be.zeros(n * qd),
            k: be.zeros(n * kvd),
            v: be.zeros(n * kvd),
            swiglu: be.zeros(n * f),
            gate: be.zeros(n * f),
            up: be.zeros(n * f),
            partial: be.zeros(n * h),
            ce_stats: be.zeros(3 * n),
            ce_global: be.zeros(3 * n),
            host: vec![0.0; n * h.max(3)],
            host_stats: vec![0.0; 3 * n * lc.tp],
        }
    }
}

/// Sums `buf` over the TP group (staged through host memory), a no-op for one rank.
pub fn tp_all_reduce<B: Backend>(be: &B, tp: &dyn Collectives, host: &mut [f32], buf: &mut B::Buf) {
    if tp.size() == 1 {
        return;
    }
    let host = &mut host[..be.len(buf)];
    be.download_into(buf, host);
    tp.all_reduce_sum_f32(host);
    be.upload(host, buf);
}

/// Row-parallel projection plus residual: `out = x + sum over TP of (a * W^T)`.
fn row_parallel<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, out: &mut B::Buf, x: &B::Buf, a: &B::Buf, w: &B::Buf, k: usize) {
    let (be, h, n) = (cx.be, cx.cfg.hidden_size, cx.n);
    be.copy(out, x);
    if cx.tp.size() == 1 {
        be.gemm(out, a, w, n, k, h, false, true, 1.0, 1.0);
    } else {
        be.gemm(&mut s.partial, a, w, n, k, h, false, true, 1.0, 0.0);
        tp_all_reduce(be, cx.tp, &mut s.host, &mut s.partial);
        be.add_assign(out, &s.partial);
    }
}

/// Decoder layer `ids` forward: `out = layer(x)`, saving what backward needs in `a`.
pub fn layer_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, ids: &LayerIds, x: &B::Buf, out: &mut B::Buf, a: &mut LayerActs<B>) {
    let (be, w, n, sh) = (cx.be, cx.w, cx.n, cx.shape);
    let (h, f, _, qd, kvd) = dims::<B>(cx.cfg, &cx.lc);
    let (d, eps) = (cx.cfg.head_dim(), cx.cfg.norm_eps as f32);
    be.rmsnorm_fwd(&mut a.ln1, &mut a.rstd1, x, &w[ids.input_norm], h, eps);
    be.gemm(&mut a.q, &a.ln1, &w[ids.q], n, h, qd, false, true, 1.0, 0.0);
    be.gemm(&mut a.k, &a.ln1, &w[ids.k], n, h, kvd, false, true, 1.0, 0.0);
    be.gemm(&mut a.v, &a.ln1, &w[ids.v], n, h, kvd, false, true, 1.0, 0.0);
    be.rope_fwd(&mut a.q, cx.cos, cx.sin, sh.batch, sh.seq, sh.heads, d);
    be.rope_fwd(&mut a.k, cx.cos, cx.sin, sh.batch, sh.seq, sh.kv_heads, d);
    be.attention_fwd(&mut a.attn, &mut a.lse, &a.q, &a.k, &a.v, sh);
    row_parallel(cx, s, &mut a.resid_mid, x, &a.attn, &w[ids.o], qd);
    be.rmsnorm_fwd(&mut a.ln2, &mut a.rstd2, &a.resid_mid, &w[ids.post_norm], h, eps);
    be.gemm(&mut a.gate, &a.ln2, &w[ids.gate], n, h, f, false, true, 1.0, 0.0);
    be.gemm(&mut a.up, &a.ln2, &w[ids.up], n, h, f, false, true, 1.0, 0.0);
    be.swiglu_fwd(&mut a.swiglu, &a.gate, &a.up);
    row_parallel(cx, s, out, &a.resid_mid, &a.swiglu, &w[ids.down], f);
}

/// Decoder layer backward: `s.resid` holds d(out) on entry and d(x) on return; weight gradients
/// accumulate into `gr`.
pub fn layer_bwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, gr: &mut [B::Buf], ids: &LayerIds, x: &B::Buf, a: &LayerActs<B>) {
    let (be, w, n, sh) = (cx.be, cx.w, cx.n, cx.shape);
    let (h, f, _, qd, kvd) = dims::<B>(cx.cfg, &cx.lc);
    let d = cx.cfg.head_dim();
    // MLP: out = mid + down(swiglu(gate(ln2), up(ln2)))
    be.gemm(&mut s.swiglu, &s.resid, &w[ids.down], n, h, f, false, false, 1.0, 0.0);
    be.gemm(&mut gr[ids.down], &s.resid, &a.swiglu, h, n, f, true, false, 1.0, 1.0);
    be.swiglu_bwd(&mut s.gate, &mut s.up, &s.swiglu, &a.gate, &a.up);
    be.gemm(&mut s.ln, &s.gate, &w[ids.gate], n, f, h, false, false, 1.0, 0.0);
    be.gemm(&mut s.ln, &s.up, &w[ids.up], n, f, h, false, false, 1.0, 1.0);
    be.gemm(&mut gr[ids.gate], &s.gate, &a.ln2, f, n, h, true, false, 1.0, 1.0);
    be.gemm(&mut gr[ids.up], &s.up, &a.ln2, f, n, h, true, false, 1.0, 1.0);
    tp_all_reduce(be, cx.tp, &mut s.host, &mut s.ln);
    be.rmsnorm_bwd(&mut s.resid, &mut gr[ids.post_norm], &s.ln, &a.resid_mid, &w[ids.post_norm], &a.rstd2, h);
    // Attention: mid = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1)))
    be.gemm(&mut s.attn, &s.resid, &w[ids.o], n, h, qd, false, false, 1.0, 0.0);
    be.gemm(&mut gr[ids.o], &s.resid, &a.attn, h, n, qd, true, false, 1.0, 1.0);
    be.attention_bwd(&mut s.q, &mut s.k, &mut s.v, &s.attn, &a.q, &a.k, &a.v, &a.attn, &a.lse, sh);
    be.rope_bwd(&mut s.q, cx.cos, cx.sin, sh.batch, sh.seq, sh.heads, d);
    be.rope_bwd(&mut s.k, cx.cos, cx.sin, sh.batch, sh.seq, sh.kv_heads, d);
    be.gemm(&mut s.ln, &s.q, &w[ids.q], n, qd, h, false, false, 1.0, 0.0);
    be.gemm(&mut s.ln, &s.k, &w[ids.k], n, kvd, h, false, false, 1.0, 1.0);
    be.gemm(&mut s.ln, &s.v, &w[ids.v], n, kvd, h, false, false, 1.0, 1.0);
    be.gemm(&mut gr[ids.q], &s.q, &a.ln1, qd, n, h, true, false, 1.0, 1.0);
    be.gemm(&mut gr[ids.k], &s.k, &a.ln1, kvd, n, h, true, false, 1.0, 1.0);
    be.gemm(&mut gr[ids.v], &s.v, &a.ln1, kvd, n, h, true, false, 1.0, 1.0);
    tp_all_reduce(be, cx.tp, &mut s.host, &mut s.ln);
    be.rmsnorm_bwd(&mut s.resid, &mut gr[ids.input_norm], &s.ln, x, &w[ids.input_norm], &a.rstd1, h);
}

/// Final norm, LM head and cross-entropy of `x`; returns the summed token loss and leaves
/// `grad_scale * dloss/dlogits` in `hd.logits`.
pub fn head_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, x: &B::Buf, targets: &B::Ids, hd: &mut HeadActs<B>, grad_scale: f32) -> f64 {
    let (be, w, t, n, lc) = (cx.be, cx.w, cx.table, cx.n, cx.lc);
    let h = cx.cfg.hidden_size;
    be.rmsnorm_fwd(&mut hd.final_ln, &mut hd.final_rstd, x, &w[t.final_norm], h, cx.cfg.norm_eps as f32);
    be.gemm(&mut hd.logits, &hd.final_ln, &w[t.lm_head], n, h, lc.vocab, false, true, 1.0, 0.0);
    if cx.tp.size() == 1 {
        be.cross_entropy_fwd_bwd(&mut hd.logits, &mut hd.losses, targets, lc.vocab, lc.valid_vocab, grad_scale);
    } else {
        vocab_parallel_cross_entropy(cx, s, targets, hd, grad_scale);
    }
    be.sum(&hd.losses)
}

/// Combines every shard's (max, sum-exp, target logit) per row through an all-gather of 3 numbers
/// per token, then finishes the loss and this shard's dlogits locally.
fn vocab_parallel_cross_entropy<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, targets: &B::Ids, hd: &mut HeadActs<B>, grad_scale: f32) {
    let (be, lc, rows) = (cx.be, cx.lc, cx.n);
    be.cross_entropy_local_stats(&hd.logits, &mut s.ce_stats, targets, lc.vocab, lc.valid_vocab, lc.vocab_start);
    let mine = &mut s.host[..3 * rows];
    be.download_into(&s.ce_stats, mine);
    cx.tp.all_gather_f32(mine, &mut s.host_stats);
    let all = &s.host_stats;
    for r in 0..rows {
        let shard = |k: usize| &all[k * 3 * rows + 3 * r..k * 3 * rows + 3 * r + 3];
        let m = (0..lc.tp).map(|k| shard(k)[0]).fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = (0..lc.tp).map(|k| shard(k)[1] as f64 * ((shard(k)[0] - m) as f64).exp()).sum();
        let target: f32 = (0..lc.tp).map(|k| shard(k)[2]).sum();
        mine[3 * r..3 * r + 3].copy_from_slice(&[m, sum as f32, target]);
    }
    be.upload(mine, &mut s.ce_global);
    be.cross_entropy_finish(&mut hd.logits, &mut hd.losses, &s.ce_global, targets, lc.vocab, lc.valid_vocab, lc.vocab_start, grad_scale);
}

/// Head backward: `s.resid` = d(x) on return (overwritten, not accumulated).
pub fn head_bwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, gr: &mut [B::Buf], x: &B::Buf, hd: &HeadActs<B>) {
    let (be, w, t, n, lc) = (cx.be, cx.w, cx.table, cx.n, cx.lc);
    let h = cx.cfg.hidden_size;
    be.gemm(&mut s.ln, &hd.logits, &w[t.lm_head], n, lc.vocab, h, false, false, 1.0, 0.0);
    tp_all_reduce(be, cx.tp, &mut s.host, &mut s.ln);
    be.gemm(&mut gr[t.lm_head], &hd.logits, &hd.final_ln, lc.vocab, n, h, true, false, 1.0, 1.0);
    be.fill_zero(&mut s.resid);
    be.rmsnorm_bwd(&mut s.resid, &mut gr[t.final_norm], &s.ln, x, &w[t.final_norm], &hd.final_rstd, h);
}

/// Embedding forward (vocab-parallel): `out` = the rows of `ids`, summed over the TP shards.
pub fn embed_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, ids: &B::Ids, out: &mut B::Buf) {
    cx.be.embedding_fwd(out, &cx.w[cx.table.embed], ids, cx.cfg.hidden_size, cx.lc.vocab_start);
    tp_all_reduce(cx.be, cx.tp, &mut s.host, out);
}

/// Embedding backward from `s.resid`.
pub fn embed_bwd<B: Backend>(cx: &Cx<B>, s: &Scratch<B>, gr: &mut [B::Buf], ids: &B::Ids) {
    cx.be.embedding_bwd(&mut gr[cx.table.embed], &s.resid, ids, cx.cfg.hidden_size, cx.lc.vocab_start);
}
