//! The compute of one decoder layer and of the head (final norm, LM head, cross-entropy), forward
//! and backward, over the backend trait and within the tensor-parallel group:
//! q/k/v and gate/up are column-parallel (no communication), o_proj and down_proj row-parallel
//! (partial outputs all-reduced before the residual add), the LM head vocab-parallel with a
//! cross-entropy that combines per-shard (max, sum-exp, target logit) and never gathers logits;
//! in backward the input gradients of the column-parallel layers are all-reduced, each
//! reduction started before the layer's weight-gradient GEMMs, which need not wait for it, and
//! (`overlap_tp`) issued to the backend's TP side stream so that those GEMMs run meanwhile
//! (Megatron's asynchronous tensor-parallel all-reduce).
//!
//! With sequence parallelism the residual stream, the norms and their saved inputs and outputs
//! hold only this rank's `n / tp` rows: the normalised rows are all-gathered before a
//! column-parallel layer (into scratch, not kept) and the row-parallel partial outputs
//! reduce-scattered (instead of all-reduced) back to rows; in backward the mirror images
//! (reduce-scatter of column input gradients, all-gather of the residual gradient), and the saved
//! normalised rows all-gathered again for the weight gradients, as Megatron-LM does (on the TP
//! side stream while the layer's other backward GEMMs run). Norm-weight gradients are then
//! partial per rank and summed over TP (`Llama::reduce_sequence_parallel_grads`).

use super::layout::LocalDims;
use super::params::{LayerIds, ParamTable};
use crate::backend::{AttnShape, Backend, Role, SideLane};
use crate::config::ModelConfig;
use crate::parallel::Collectives;

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
    /// Sequence parallelism: the residual stream holds `n / tp` rows.
    pub sp: bool,
    /// Issue the backward pass's TP collectives (input-gradient reductions, the normalised rows'
    /// re-gather under SP) to the TP side stream.
    pub overlap_tp: bool,
}

impl<B: Backend> Cx<'_, B> {
    /// The backward pass's TP collectives go to the TP side stream.
    fn tp_collectives_on_side(&self) -> bool {
        self.overlap_tp && self.tp.size() > 1
    }

    /// Rows of the residual stream on this rank.
    pub fn rows(&self) -> usize {
        if self.sp {
            self.n / self.lc.tp
        } else {
            self.n
        }
    }
}

/// Saved activations of one decoder layer, `[B*T, ...]` (the norms' `[rows, ...]`).
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
    /// Sequence parallelism: row-parallel outputs reduced to local rows, column input gradients
    /// reduced to local rows, the residual gradient gathered to all rows, and the normalised rows
    /// gathered to all rows (a column-parallel layer's input, forward and weight gradient).
    local: B::Buf,
    ln_local: B::Buf,
    resid_full: B::Buf,
    ln_full: B::Buf,
    /// Host staging for TP collectives.
    host: Vec<f32>,
    host_local: Vec<f32>,
    host_stats: Vec<f32>,
}

fn dims<B: Backend>(cfg: &ModelConfig, lc: &LocalDims) -> (usize, usize, usize, usize, usize) {
    let d = cfg.head_dim();
    (cfg.hidden_size, lc.ffn, lc.vocab, lc.heads * d, lc.kv_heads * d)
}

impl<B: Backend> LayerActs<B> {
    /// For micro-batches of `micro_batch` x `seq` tokens, `rows` of them in the residual stream.
    pub fn new(be: &B, cfg: &ModelConfig, lc: &LocalDims, micro_batch: usize, seq: usize, rows: usize) -> Self {
        let n = micro_batch * seq;
        let (h, f, _, qd, kvd) = dims::<B>(cfg, lc);
        LayerActs {
            ln1: be.zeros_as(rows * h, Role::Activation),
            rstd1: be.zeros_as(rows, Role::Stat),
            q: be.zeros_as(n * qd, Role::Activation),
            k: be.zeros_as(n * kvd, Role::Activation),
            v: be.zeros_as(n * kvd, Role::Activation),
            attn: be.zeros_as(n * qd, Role::Activation),
            lse: be.zeros_as(micro_batch * lc.heads * seq, Role::Stat),
            resid_mid: be.zeros_as(rows * h, Role::Activation),
            ln2: be.zeros_as(rows * h, Role::Activation),
            rstd2: be.zeros_as(rows, Role::Stat),
            gate: be.zeros_as(n * f, Role::Activation),
            up: be.zeros_as(n * f, Role::Activation),
            swiglu: be.zeros_as(n * f, Role::Activation),
        }
    }
}

impl<B: Backend> HeadActs<B> {
    pub fn new(be: &B, cfg: &ModelConfig, lc: &LocalDims, n: usize, rows: usize) -> Self {
        HeadActs {
            final_ln: be.zeros_as(rows * cfg.hidden_size, Role::Activation),
            final_rstd: be.zeros_as(rows, Role::Stat),
            logits: be.zeros_as(n * lc.vocab, Role::Activation),
            losses: be.zeros_as(n, Role::Stat),
        }
    }
}

impl<B: Backend> Scratch<B> {
    pub fn new(be: &B, cfg: &ModelConfig, lc: &LocalDims, n: usize, rows: usize) -> Self {
        let (h, f, _, qd, kvd) = dims::<B>(cfg, lc);
        let sp = rows < n;
        Scratch {
            resid: be.zeros_as(rows * h, Role::Activation),
            ln: be.zeros_as(n * h, Role::Activation),
            attn: be.zeros_as(n * qd, Role::Activation),
            q: be.zeros_as(n * qd, Role::Activation),
            k: be.zeros_as(n * kvd, Role::Activation),
            v: be.zeros_as(n * kvd, Role::Activation),
            swiglu: be.zeros_as(n * f, Role::Activation),
            gate: be.zeros_as(n * f, Role::Activation),
            up: be.zeros_as(n * f, Role::Activation),
            partial: be.zeros_as(n * h, Role::Activation),
            ce_stats: be.zeros_as(3 * n, Role::Stat),
            ce_global: be.zeros_as(3 * n, Role::Stat),
            local: be.zeros_as(if sp { rows * h } else { 0 }, Role::Activation),
            ln_local: be.zeros_as(if sp { rows * h } else { 0 }, Role::Activation),
            resid_full: be.zeros_as(if sp { n * h } else { 0 }, Role::Activation),
            ln_full: be.zeros_as(if sp { n * h } else { 0 }, Role::Activation),
            host: vec![0.0; n * h.max(3)],
            host_local: vec![0.0; if sp { rows * h } else { 0 }],
            host_stats: vec![0.0; 3 * n * lc.tp],
        }
    }
}

/// Sums `buf` over the TP group (on the device when the group can, else staged through host
/// memory), a no-op for one rank.
pub fn tp_all_reduce<B: Backend>(be: &B, tp: &dyn Collectives, host: &mut [f32], buf: &mut B::Buf) {
    if tp.size() == 1 || be.all_reduce_on_device(buf, tp) {
        return;
    }
    let host = &mut host[..be.len(buf)];
    be.download_into(buf, host);
    tp.all_reduce_sum_f32(host);
    be.upload(host, buf);
}

/// All-gathers this rank's rows `src` into all rows `dst` over the TP group.
fn gather<B: Backend>(be: &B, tp: &dyn Collectives, host_local: &mut [f32], host: &mut [f32], src: &B::Buf, dst: &mut B::Buf) {
    if be.all_gather_on_device(src, dst, tp) {
        return;
    }
    let (l, f) = (be.len(src), be.len(dst));
    be.download_into(src, &mut host_local[..l]);
    tp.all_gather_f32(&host_local[..l], &mut host[..f]);
    be.upload(&host[..f], dst);
}

/// Sums `src` (all rows) over the TP group and keeps this rank's rows in `dst`.
fn scatter_sum<B: Backend>(be: &B, tp: &dyn Collectives, host: &mut [f32], host_local: &mut [f32], src: &B::Buf, dst: &mut B::Buf) {
    if be.reduce_scatter_on_device(src, dst, tp) {
        return;
    }
    let (f, l) = (be.len(src), be.len(dst));
    be.download_into(src, &mut host[..f]);
    tp.reduce_scatter_sum_f32(&host[..f], &mut host_local[..l]);
    be.upload(&host_local[..l], dst);
}

/// RMSNorm of this rank's rows `x` into `normed` (kept for backward), all-gathered into
/// `s.ln_full` under sequence parallelism; the input of the column-parallel layer is then
/// `column_input(cx, s, normed)`.
fn norm_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, x: &B::Buf, w: &B::Buf, rstd: &mut B::Buf, normed: &mut B::Buf) {
    let (be, h, eps) = (cx.be, cx.cfg.hidden_size, cx.cfg.norm_eps as f32);
    be.rmsnorm_fwd(normed, rstd, x, w, h, eps);
    if cx.sp {
        gather(be, cx.tp, &mut s.host_local, &mut s.host, normed, &mut s.ln_full);
    }
}

/// All rows of the normalised input `normed` of a column-parallel layer: `normed` itself, or its
/// all-gather in `s.ln_full` under sequence parallelism (`norm_fwd`, `start_normed_gather`).
fn column_input<'a, B: Backend>(cx: &Cx<B>, s: &'a Scratch<B>, normed: &'a B::Buf) -> &'a B::Buf {
    if cx.sp {
        &s.ln_full
    } else {
        normed
    }
}

/// The side-stream mark of the gather `start_normed_gather` issues.
const NORMED_GATHERED: usize = 0;

/// Under sequence parallelism, starts all-gathering the saved normalised rows `normed` into
/// `s.ln_full` for a column-parallel layer's weight gradients: on the TP side stream when
/// `cx.overlap_tp`, marked, so that the backward GEMMs issued before `wait_normed_gather` run
/// meanwhile. Issued after the residual gradient's gather, the TP group's last collective on the
/// default stream: one communicator's collectives never run on two streams at once.
fn start_normed_gather<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, normed: &B::Buf) {
    if !cx.sp {
        return;
    }
    if on_tp_lane(cx, &mut || gather(cx.be, cx.tp, &mut s.host_local, &mut s.host, normed, &mut s.ln_full)) {
        cx.be.mark_side_work(SideLane::TensorParallel, NORMED_GATHERED);
    }
}

/// Runs `collective` (a TP collective of the backward pass) on the TP side stream when
/// `cx.overlap_tp` (returns true), else in line.
fn on_tp_lane<B: Backend>(cx: &Cx<B>, collective: &mut dyn FnMut()) -> bool {
    let on_side = cx.tp_collectives_on_side();
    if on_side {
        cx.be.side_work(SideLane::TensorParallel, collective);
    } else {
        collective();
    }
    on_side
}

/// Waits for `start_normed_gather`.
fn wait_normed_gather<B: Backend>(cx: &Cx<B>) {
    if cx.sp && cx.tp_collectives_on_side() {
        cx.be.wait_side_mark(SideLane::TensorParallel, NORMED_GATHERED);
    }
}

/// Row-parallel projection plus residual: `out = x + sum over TP of (a * W^T)` (on this rank's
/// rows under sequence parallelism).
fn row_parallel<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, out: &mut B::Buf, x: &B::Buf, a: &B::Buf, w: &B::Buf, k: usize) {
    let (be, h, n) = (cx.be, cx.cfg.hidden_size, cx.n);
    be.copy(out, x);
    if cx.tp.size() == 1 {
        be.gemm(out, a, w, n, k, h, false, true, 1.0, 1.0);
        return;
    }
    be.gemm(&mut s.partial, a, w, n, k, h, false, true, 1.0, 0.0);
    if cx.sp {
        scatter_sum(be, cx.tp, &mut s.host, &mut s.host_local, &s.partial, &mut s.local);
        be.add_assign(out, &s.local);
    } else {
        tp_all_reduce(be, cx.tp, &mut s.host, &mut s.partial);
        be.add_assign(out, &s.partial);
    }
}

/// Starts the TP reduction of the column-parallel input gradient `s.ln` (all rows, partial over
/// TP): a reduce-scatter into `s.ln_local` under sequence parallelism, else an all-reduce in
/// place; on the TP side stream when `cx.overlap_tp`. Nothing may touch those buffers until
/// `norm_bwd_from_full`.
fn start_input_grad_reduce<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>) {
    let be = cx.be;
    on_tp_lane(cx, &mut || {
        if cx.sp {
            scatter_sum(be, cx.tp, &mut s.host, &mut s.host_local, &s.ln, &mut s.ln_local);
        } else {
            tp_all_reduce(be, cx.tp, &mut s.host, &mut s.ln);
        }
    });
}

/// Waits for `start_input_grad_reduce` and adds the RMSNorm backward of the reduced input
/// gradient into the residual gradient `s.resid`.
fn norm_bwd_from_full<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, dw: &mut B::Buf, x: &B::Buf, w: &B::Buf, rstd: &B::Buf) {
    let (be, h) = (cx.be, cx.cfg.hidden_size);
    if cx.tp_collectives_on_side() {
        be.join_side_work(SideLane::TensorParallel);
    }
    let dln = if cx.sp { &s.ln_local } else { &s.ln };
    be.rmsnorm_bwd(&mut s.resid, dw, dln, x, w, rstd, h);
}

/// The residual gradient over all rows (gathered under sequence parallelism) in `s.resid_full`,
/// or `s.resid` itself; returns whether it is in `resid_full`.
fn gather_resid_grad<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>) -> bool {
    if cx.sp {
        gather(cx.be, cx.tp, &mut s.host_local, &mut s.host, &s.resid, &mut s.resid_full);
    }
    cx.sp
}

/// Decoder layer `ids` forward: `out = layer(x)`, saving what backward needs in `a`.
pub fn layer_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, ids: &LayerIds, x: &B::Buf, out: &mut B::Buf, a: &mut LayerActs<B>) {
    layer_saved_fwd(cx, s, ids, x, a);
    let f = cx.lc.ffn;
    row_parallel(cx, s, out, &a.resid_mid, &a.swiglu, &cx.w[ids.down], f);
}

/// The forward of layer `ids` up to what its backward reads, into `a`: all of it but the last
/// projection (down_proj, its TP reduction and residual add), whose output is the next layer's
/// input. Full recomputation runs this again, with the same TP collectives, just before the
/// layer's backward; the ops are deterministic, so `a` gets the very values of the first forward.
pub fn layer_saved_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, ids: &LayerIds, x: &B::Buf, a: &mut LayerActs<B>) {
    let (be, w, n, sh) = (cx.be, cx.w, cx.n, cx.shape);
    let (h, f, _, qd, kvd) = dims::<B>(cx.cfg, &cx.lc);
    let d = cx.cfg.head_dim();
    norm_fwd(cx, s, x, &w[ids.input_norm], &mut a.rstd1, &mut a.ln1);
    let ln1 = column_input(cx, s, &a.ln1);
    be.gemm(&mut a.q, ln1, &w[ids.q], n, h, qd, false, true, 1.0, 0.0);
    be.gemm(&mut a.k, ln1, &w[ids.k], n, h, kvd, false, true, 1.0, 0.0);
    be.gemm(&mut a.v, ln1, &w[ids.v], n, h, kvd, false, true, 1.0, 0.0);
    be.rope_fwd(&mut a.q, cx.cos, cx.sin, sh.batch, sh.seq, sh.heads, d);
    be.rope_fwd(&mut a.k, cx.cos, cx.sin, sh.batch, sh.seq, sh.kv_heads, d);
    be.attention_fwd(&mut a.attn, &mut a.lse, &a.q, &a.k, &a.v, sh);
    row_parallel(cx, s, &mut a.resid_mid, x, &a.attn, &w[ids.o], qd);
    norm_fwd(cx, s, &a.resid_mid, &w[ids.post_norm], &mut a.rstd2, &mut a.ln2);
    let ln2 = column_input(cx, s, &a.ln2);
    be.gemm(&mut a.gate, ln2, &w[ids.gate], n, h, f, false, true, 1.0, 0.0);
    be.gemm(&mut a.up, ln2, &w[ids.up], n, h, f, false, true, 1.0, 0.0);
    be.swiglu_fwd(&mut a.swiglu, &a.gate, &a.up);
}

/// `dw += dy^T x` over the micro-batch's tokens: the weight gradient of a linear map `y = x W^T`
/// with `W` of `[out_dim, in_dim]` (`dy`: `[n, out_dim]`, `x`: `[n, in_dim]`).
fn weight_grad<B: Backend>(cx: &Cx<B>, dw: &mut B::Buf, dy: &B::Buf, x: &B::Buf, out_dim: usize, in_dim: usize) {
    cx.be.gemm(dw, dy, x, out_dim, cx.n, in_dim, true, false, 1.0, 1.0);
}

/// Decoder layer backward: `s.resid` holds d(out) on entry and d(x) on return; the norm weights'
/// gradients accumulate into `gr`. With `deferred = None` (the fused backward) the seven linear
/// maps' weight gradients accumulate into `gr` too, each GEMM issued while the TP reduction of
/// an input gradient runs. With `deferred = Some(out)` this is ZeroBubble's B pass: only input
/// gradients, and each linear map's output gradient left for `layer_bwd_weight` in a buffer the
/// backward no longer reads (this rank's rows where the residual stream is split):
/// d(out) in `out` (the layer's output buffer), d(mid) in `a.resid_mid`, d(gate), d(up) in
/// `a.gate`, `a.up`, and d(q), d(k) (after RoPE's backward), d(v) in `a.q`, `a.k`, `a.v`.
/// The inputs of the linear maps (`a.ln1`, `a.attn`, `a.ln2`, `a.swiglu`) stay as they are.
pub fn layer_bwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, gr: &mut [B::Buf], ids: &LayerIds, x: &B::Buf, a: &mut LayerActs<B>, mut deferred: Option<&mut B::Buf>) {
    let (be, w, n, sh) = (cx.be, cx.w, cx.n, cx.shape);
    let (h, f, _, qd, kvd) = dims::<B>(cx.cfg, &cx.lc);
    let d = cx.cfg.head_dim();
    let fused = deferred.is_none();
    // MLP: out = mid + down(swiglu(gate(ln2), up(ln2)))
    let full = gather_resid_grad(cx, s);
    if fused {
        start_normed_gather(cx, s, &a.ln2);
    }
    let dout = if full { &s.resid_full } else { &s.resid };
    be.gemm(&mut s.swiglu, dout, &w[ids.down], n, h, f, false, false, 1.0, 0.0);
    match deferred.as_mut() {
        None => weight_grad(cx, &mut gr[ids.down], dout, &a.swiglu, h, f),
        Some(out) => be.copy(out, &s.resid),
    }
    be.swiglu_bwd(&mut s.gate, &mut s.up, &s.swiglu, &a.gate, &a.up);
    be.gemm(&mut s.ln, &s.gate, &w[ids.gate], n, f, h, false, false, 1.0, 0.0);
    be.gemm(&mut s.ln, &s.up, &w[ids.up], n, f, h, false, false, 1.0, 1.0);
    start_input_grad_reduce(cx, s);
    if fused {
        wait_normed_gather(cx);
        let ln2 = column_input(cx, s, &a.ln2);
        weight_grad(cx, &mut gr[ids.gate], &s.gate, ln2, f, h);
        weight_grad(cx, &mut gr[ids.up], &s.up, ln2, f, h);
    } else {
        be.copy(&mut a.gate, &s.gate);
        be.copy(&mut a.up, &s.up);
    }
    norm_bwd_from_full(cx, s, &mut gr[ids.post_norm], &a.resid_mid, &w[ids.post_norm], &a.rstd2);
    // Attention: mid = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1)))
    let full = gather_resid_grad(cx, s);
    if fused {
        start_normed_gather(cx, s, &a.ln1);
    }
    let dmid = if full { &s.resid_full } else { &s.resid };
    be.gemm(&mut s.attn, dmid, &w[ids.o], n, h, qd, false, false, 1.0, 0.0);
    if fused {
        weight_grad(cx, &mut gr[ids.o], dmid, &a.attn, h, qd);
    } else {
        be.copy(&mut a.resid_mid, &s.resid);
    }
    be.attention_bwd(&mut s.q, &mut s.k, &mut s.v, &s.attn, &a.q, &a.k, &a.v, &a.attn, &a.lse, sh);
    be.rope_bwd(&mut s.q, cx.cos, cx.sin, sh.batch, sh.seq, sh.heads, d);
    be.rope_bwd(&mut s.k, cx.cos, cx.sin, sh.batch, sh.seq, sh.kv_heads, d);
    be.gemm(&mut s.ln, &s.q, &w[ids.q], n, qd, h, false, false, 1.0, 0.0);
    be.gemm(&mut s.ln, &s.k, &w[ids.k], n, kvd, h, false, false, 1.0, 1.0);
    be.gemm(&mut s.ln, &s.v, &w[ids.v], n, kvd, h, false, false, 1.0, 1.0);
    start_input_grad_reduce(cx, s);
    if fused {
        wait_normed_gather(cx);
        let ln1 = column_input(cx, s, &a.ln1);
        weight_grad(cx, &mut gr[ids.q], &s.q, ln1, qd, h);
        weight_grad(cx, &mut gr[ids.k], &s.k, ln1, kvd, h);
        weight_grad(cx, &mut gr[ids.v], &s.v, ln1, kvd, h);
    } else {
        be.copy(&mut a.q, &s.q);
        be.copy(&mut a.k, &s.k);
        be.copy(&mut a.v, &s.v);
    }
    norm_bwd_from_full(cx, s, &mut gr[ids.input_norm], x, &w[ids.input_norm], &a.rstd1);
}

/// All rows of `local` (this rank's rows of a residual-stream-shaped buffer) in `s.resid_full`
/// under sequence parallelism, else `local` itself.
fn all_rows<'a, B: Backend>(cx: &Cx<B>, s: &'a mut Scratch<B>, local: &'a B::Buf) -> &'a B::Buf {
    if !cx.sp {
        return local;
    }
    gather(cx.be, cx.tp, &mut s.host_local, &mut s.host, local, &mut s.resid_full);
    &s.resid_full
}

/// ZeroBubble's W pass of layer `ids`: the seven weight gradients from what `layer_bwd` with
/// `deferred = Some(dout)` left, the same GEMMs the fused backward runs. Under sequence
/// parallelism the kept rows (output gradients, normalised inputs) are all-gathered again.
pub fn layer_bwd_weight<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, gr: &mut [B::Buf], ids: &LayerIds, dout: &B::Buf, a: &LayerActs<B>) {
    let (h, f, _, qd, kvd) = dims::<B>(cx.cfg, &cx.lc);
    let dout = all_rows(cx, s, dout);
    weight_grad(cx, &mut gr[ids.down], dout, &a.swiglu, h, f);
    normed_rows(cx, s, &a.ln2);
    let ln2 = column_input(cx, s, &a.ln2);
    weight_grad(cx, &mut gr[ids.gate], &a.gate, ln2, f, h);
    weight_grad(cx, &mut gr[ids.up], &a.up, ln2, f, h);
    let dmid = all_rows(cx, s, &a.resid_mid);
    weight_grad(cx, &mut gr[ids.o], dmid, &a.attn, h, qd);
    normed_rows(cx, s, &a.ln1);
    let ln1 = column_input(cx, s, &a.ln1);
    weight_grad(cx, &mut gr[ids.q], &a.q, ln1, qd, h);
    weight_grad(cx, &mut gr[ids.k], &a.k, ln1, kvd, h);
    weight_grad(cx, &mut gr[ids.v], &a.v, ln1, kvd, h);
}

/// Under sequence parallelism, all-gathers the saved normalised rows `normed` into `s.ln_full`
/// (in line), for `column_input`.
fn normed_rows<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, normed: &B::Buf) {
    if cx.sp {
        gather(cx.be, cx.tp, &mut s.host_local, &mut s.host, normed, &mut s.ln_full);
    }
}

/// Final norm, LM head and cross-entropy of `x`; returns the summed token loss and leaves
/// `grad_scale * dloss/dlogits` in `hd.logits`.
pub fn head_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, x: &B::Buf, targets: &B::Ids, hd: &mut HeadActs<B>, grad_scale: f32) -> f64 {
    let (be, w, t, n, lc) = (cx.be, cx.w, cx.table, cx.n, cx.lc);
    let h = cx.cfg.hidden_size;
    norm_fwd(cx, s, x, &w[t.final_norm], &mut hd.final_rstd, &mut hd.final_ln);
    be.gemm(&mut hd.logits, column_input(cx, s, &hd.final_ln), &w[t.lm_head], n, h, lc.vocab, false, true, 1.0, 0.0);
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

/// Head backward: `s.resid` = d(x) on return (overwritten, not accumulated); the final norm's
/// weight gradient into `gr`, and the LM head's too unless `deferred` (ZeroBubble's B pass:
/// `head_bwd_weight` computes it later from the dlogits kept in `hd.logits`).
pub fn head_bwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, gr: &mut [B::Buf], x: &B::Buf, hd: &HeadActs<B>, deferred: bool) {
    let (be, w, t, n, lc) = (cx.be, cx.w, cx.table, cx.n, cx.lc);
    let h = cx.cfg.hidden_size;
    if !deferred {
        start_normed_gather(cx, s, &hd.final_ln);
    }
    be.gemm(&mut s.ln, &hd.logits, &w[t.lm_head], n, lc.vocab, h, false, false, 1.0, 0.0);
    start_input_grad_reduce(cx, s);
    if !deferred {
        wait_normed_gather(cx);
        weight_grad(cx, &mut gr[t.lm_head], &hd.logits, column_input(cx, s, &hd.final_ln), lc.vocab, h);
    }
    be.fill_zero(&mut s.resid);
    norm_bwd_from_full(cx, s, &mut gr[t.final_norm], x, &w[t.final_norm], &hd.final_rstd);
}

/// ZeroBubble's W pass of the head: the LM head's weight gradient (`head_bwd` with `deferred`).
pub fn head_bwd_weight<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, gr: &mut [B::Buf], hd: &HeadActs<B>) {
    normed_rows(cx, s, &hd.final_ln);
    weight_grad(cx, &mut gr[cx.table.lm_head], &hd.logits, column_input(cx, s, &hd.final_ln), cx.lc.vocab, cx.cfg.hidden_size);
}

/// Embedding forward (vocab-parallel): `out` = the rows of `ids`, summed over the TP shards (this
/// rank's rows of it under sequence parallelism).
pub fn embed_fwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, ids: &B::Ids, out: &mut B::Buf) {
    let (be, h, start) = (cx.be, cx.cfg.hidden_size, cx.lc.vocab_start);
    if cx.sp {
        be.embedding_fwd(&mut s.partial, &cx.w[cx.table.embed], ids, h, start);
        scatter_sum(be, cx.tp, &mut s.host, &mut s.host_local, &s.partial, out);
    } else {
        be.embedding_fwd(out, &cx.w[cx.table.embed], ids, h, start);
        tp_all_reduce(be, cx.tp, &mut s.host, out);
    }
}

/// Embedding backward from the residual gradient `s.resid`.
pub fn embed_bwd<B: Backend>(cx: &Cx<B>, s: &mut Scratch<B>, gr: &mut [B::Buf], ids: &B::Ids) {
    let full = gather_resid_grad(cx, s);
    let d = if full { &s.resid_full } else { &s.resid };
    cx.be.embedding_bwd(&mut gr[cx.table.embed], d, ids, cx.cfg.hidden_size, cx.lc.vocab_start);
}
