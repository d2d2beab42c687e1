//! The compute backend trait: every numerical op the model needs, forward and backward.
//!
//! The model (src/model/) talks only to this trait, so the CPU reference backend (f32 for
//! training, f64 for finite-difference tests) and the CUDA backend (bf16 storage, fp32 master
//! weights) are implementations, not branches in the model. Buffers are opaque and owned by the
//! backend; shapes are passed explicitly. Layout conventions (all row-major):
//! - activations `[B*T, C]` (token-major), attention heads `[B, T, H, D]` i.e. `[B*T, H*D]`;
//! - linear weights as Hugging Face stores them, `[out_features, in_features]`;
//! - "accumulate" ops add into their output (weight gradients over micro-batches, residual grads).

pub mod cpu;
pub mod cuda;

use crate::parallel::Collectives;

/// Shape of one attention call (GQA when `kv_heads < heads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// A side stream of the device (`Backend::side_work`): collectives issued to one run while the
/// work issued after them does. Each lane is a stream of its own, so that a TP reduction the
/// backward pass needs soon never queues behind a DP bucket's exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideLane {
    /// The DP gradient buckets' exchange and ZeRO-1's weight all-gather.
    DataParallel = 0,
    /// The backward pass's TP collectives (model/layer.rs): a column-parallel layer's
    /// input-gradient reduction and, under sequence parallelism, its normalised input's re-gather.
    TensorParallel = 1,
}

impl SideLane {
    pub const ALL: [SideLane; 2] = [SideLane::DataParallel, SideLane::TensorParallel];
}

/// AdamW hyper-parameters for one update of one tensor.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step count used for bias correction.
    pub step: u64,
}

/// LAMB's hyper-parameters for the first phase of one update (`Backend::lamb_moments_all`).
#[derive(Clone, Copy, Debug)]
pub struct LambStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1-based step count; with `bias_correction` the moments are divided by `1 - beta^step`.
    pub step: u64,
    pub bias_correction: bool,
}

/// What a buffer holds, so that a backend may choose its storage per buffer (docs/GPU_PATH.md):
/// the CUDA backend keeps activations in bf16, gradients, statistics and optimizer state in
/// fp32, weights as an fp32 master with a bf16 copy. The CPU backend stores every role alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A model parameter (this rank's shard), read by GEMMs and kernels, updated by the optimizer.
    Weight,
    /// A model parameter whose fp32 master the optimizer keeps elsewhere (ZeRO-1's segments): the
    /// copy GEMMs and kernels read, overwritten after each update (bf16 only on the GPU).
    WeightCopy,
    /// A parameter's gradient, accumulated over micro-batches.
    Grad,
    /// Residual stream, layer inputs and outputs, attention and MLP intermediates, logits, and
    /// their gradients flowing backward.
    Activation,
    /// Per-row or per-token statistics and tables: RMSNorm `rstd`, attention `lse`, losses,
    /// cross-entropy stats, RoPE cos/sin.
    Stat,
    /// Optimizer moments, and ZeRO-1's fp32 master segments of this rank.
    OptimState,
}

/// One tensor of a multi-tensor AdamW update (`Backend::adamw_all`).
pub struct AdamTensor<'a, B: Backend + ?Sized> {
    pub param: &'a mut B::Buf,
    pub grad: &'a B::Buf,
    pub m: &'a mut B::Buf,
    pub v: &'a mut B::Buf,
}

/// One tensor of a LAMB update (`Backend::lamb_moments_all`, `Backend::lamb_apply_all`): the
/// gradient buffer receives the update direction, which the second phase subtracts, scaled.
pub struct LambTensor<'a, B: Backend + ?Sized> {
    pub param: &'a mut B::Buf,
    pub grad: &'a mut B::Buf,
    pub m: &'a mut B::Buf,
    pub v: &'a mut B::Buf,
    /// Decoupled weight decay of this tensor (0 for none).
    pub weight_decay: f32,
}

pub trait Backend: Send + Sync {
    /// A buffer of real numbers (f32/f64 on CPU, bf16 or f32 on GPU).
    type Buf: Send + Sync;
    /// A buffer of token ids.
    type Ids: Send + Sync;

    fn name(&self) -> &'static str;

    // ---- memory -------------------------------------------------------------------------
    /// A zero-filled buffer of `len` elements.
    fn zeros(&self, len: usize) -> Self::Buf;
    /// A zero-filled buffer of `len` elements holding `role` (the model and optimizers allocate
    /// through this; backends that store every role alike keep the default).
    fn zeros_as(&self, len: usize, role: Role) -> Self::Buf {
        let _ = role;
        self.zeros(len)
    }
    /// Buffers of `role` (gradients, or weight copies) that share one zero-filled allocation of
    /// `total` elements: one per `(start, len)` of `places` (which may overlap: a parameter's
    /// gradient, and a bucket of several), so that one collective can run on a range spanning
    /// several of them. `None` where buffers cannot share memory (the CPU backend): callers then
    /// allocate each one.
    fn shared_views(&self, total: usize, places: &[(usize, usize)], role: Role) -> Option<Vec<Self::Buf>> {
        let _ = (total, places, role);
        None
    }
    fn len(&self, buf: &Self::Buf) -> usize;
    fn upload(&self, host: &[f32], dst: &mut Self::Buf);
    fn download(&self, src: &Self::Buf) -> Vec<f32>;
    /// Copies `src` into `dst` (same length) without allocating.
    fn download_into(&self, src: &Self::Buf, dst: &mut [f32]);
    fn upload_ids(&self, host: &[u32], dst: &mut Self::Ids);
    fn zeros_ids(&self, len: usize) -> Self::Ids;
    fn fill_zero(&self, buf: &mut Self::Buf);
    /// `dst[..] = src[..]`
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// `dst[dst_at..dst_at + n] = src[src_at..src_at + n]`, converted to `dst`'s storage (a
    /// weight's master and its bf16 copy both written; a weight read from its master).
    fn copy_range(&self, dst: &mut Self::Buf, dst_at: usize, src: &Self::Buf, src_at: usize, n: usize);
    /// `dst += src`
    fn add_assign(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// `buf *= s`
    fn scale(&self, buf: &mut Self::Buf, s: f32);
    /// Sum of squares, accumulated in f64.
    fn sum_squares(&self, buf: &Self::Buf) -> f64;
    /// Sum of squares over every buffer of `bufs`, accumulated in f64 (the gradient norm: one pass
    /// over all of them where the backend can).
    fn sum_squares_all(&self, bufs: &[&Self::Buf]) -> f64 {
        bufs.iter().map(|b| self.sum_squares(b)).sum()
    }
    /// `out[i]` = the sum of squares of `bufs[i]`, accumulated in f64 (LAMB's per-tensor norms:
    /// one pass over all of them where the backend can).
    fn sum_squares_each(&self, bufs: &[&Self::Buf], out: &mut [f64]) {
        for (o, b) in out.iter_mut().zip(bufs) {
            *o = self.sum_squares(b);
        }
    }
    /// Sum of the elements, accumulated in f64 in a fixed order (loss totals).
    fn sum(&self, buf: &Self::Buf) -> f64;

    // ---- GEMM ---------------------------------------------------------------------------
    /// `c[m,n] = alpha * op(a) * op(b) + beta * c`, where `op(a)` is `[m,k]` (stored `[k,m]` when
    /// `trans_a`) and `op(b)` is `[k,n]` (stored `[n,k]` when `trans_b`).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        c: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        m: usize,
        k: usize,
        n: usize,
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
    );

    // ---- embedding ----------------------------------------------------------------------
    /// `out[i, :] = table[ids[i] - vocab_start, :]`; `table` is this shard's `[rows, dim]`, holding
    /// vocabulary rows `[vocab_start, vocab_start + rows)`; ids outside it give zero rows.
    fn embedding_fwd(&self, out: &mut Self::Buf, table: &Self::Buf, ids: &Self::Ids, dim: usize, vocab_start: usize);
    /// `dtable[ids[i] - vocab_start, :] += dout[i, :]` for ids of the shard, deterministic.
    fn embedding_bwd(&self, dtable: &mut Self::Buf, dout: &Self::Buf, ids: &Self::Ids, dim: usize, vocab_start: usize);

    // ---- RMSNorm ------------------------------------------------------------------------
    /// Row-wise over `[rows, dim]`: `rstd = 1/sqrt(mean(x^2) + eps)`, `out = x * rstd * w`.
    fn rmsnorm_fwd(&self, out: &mut Self::Buf, rstd: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, dim: usize, eps: f32);
    /// Accumulates: `dx += d/dx`, `dw += d/dw`.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_bwd(
        &self,
        dx: &mut Self::Buf,
        dw: &mut Self::Buf,
        dout: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        dim: usize,
    );

    // ---- RoPE (rotate-half convention of HF Llama) -----------------------------------------
    /// In place on `x` of shape `[B, T, H, D]`; `cos`/`sin` are `[T, D/2]` tables
    /// (`x1' = x1 cos - x2 sin`, `x2' = x2 cos + x1 sin` with `x1 = x[..D/2]`, `x2 = x[D/2..]`).
    fn rope_fwd(&self, x: &mut Self::Buf, cos: &Self::Buf, sin: &Self::Buf, batch: usize, seq: usize, heads: usize, head_dim: usize);
    /// In place on the gradient (the transpose rotation).
    fn rope_bwd(&self, dx: &mut Self::Buf, cos: &Self::Buf, sin: &Self::Buf, batch: usize, seq: usize, heads: usize, head_dim: usize);

    // ---- attention ----------------------------------------------------------------------
    /// Causal softmax attention with scale `1/sqrt(D)`. `q` `[B,T,H,D]`, `k`/`v` `[B,T,Hkv,D]`,
    /// `out` `[B,T,H,D]`, `lse` `[B,H,T]` (log-sum-exp of the scaled scores, saved for backward).
    /// Never materialises more than a tile of the `T x T` scores per head.
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(&self, out: &mut Self::Buf, lse: &mut Self::Buf, q: &Self::Buf, k: &Self::Buf, v: &Self::Buf, s: AttnShape);
    /// Overwrites `dq`, `dk`, `dv` (recomputing the probabilities tile by tile from `lse`).
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
        dout: &Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        s: AttnShape,
    );

    // ---- SwiGLU -------------------------------------------------------------------------
    /// `out = silu(gate) * up`, elementwise.
    fn swiglu_fwd(&self, out: &mut Self::Buf, gate: &Self::Buf, up: &Self::Buf);
    /// Overwrites `dgate`, `dup`.
    fn swiglu_bwd(&self, dgate: &mut Self::Buf, dup: &mut Self::Buf, dout: &Self::Buf, gate: &Self::Buf, up: &Self::Buf);

    // ---- loss ---------------------------------------------------------------------------
    /// Fused softmax cross-entropy over `logits` `[rows, vocab]` (only the first `valid_vocab`
    /// columns are real; padding columns get probability 0 and gradient 0). Writes the per-row
    /// loss into `losses` `[rows]` and overwrites `logits` with `grad_scale * dloss/dlogits`.
    fn cross_entropy_fwd_bwd(
        &self,
        logits: &mut Self::Buf,
        losses: &mut Self::Buf,
        targets: &Self::Ids,
        vocab: usize,
        valid_vocab: usize,
        grad_scale: f32,
    );

    /// Vocab-parallel cross-entropy, phase 1 (see `cross_entropy_fwd_bwd`): for this shard's
    /// logits `[rows, vocab_local]` (first `valid_local` columns real, global columns from
    /// `vocab_start`), `stats` `[rows, 3]` = (local max, sum exp(logit - local max), target logit
    /// or 0 when the target is on another shard).
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_local_stats(
        &self,
        logits: &Self::Buf,
        stats: &mut Self::Buf,
        targets: &Self::Ids,
        vocab_local: usize,
        valid_local: usize,
        vocab_start: usize,
    );
    /// Phase 2, from the stats combined over the TP group, `global` `[rows, 3]` = (max, sum
    /// exp(logit - max), target logit): writes `losses` and overwrites the shard's logits with
    /// `grad_scale * (softmax - onehot)`.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_finish(
        &self,
        logits: &mut Self::Buf,
        losses: &mut Self::Buf,
        global: &Self::Buf,
        targets: &Self::Ids,
        vocab_local: usize,
        valid_local: usize,
        vocab_start: usize,
        grad_scale: f32,
    );

    // ---- collectives on device buffers -----------------------------------------------------
    /// `buf` summed over `group` where it lies, when the group has a device communicator
    /// (`Collectives::device`, `--comm mpi|nccl`): returns true when done, false to leave it to
    /// the caller (staged through host memory), as backends without device collectives do.
    fn all_reduce_on_device(&self, buf: &mut Self::Buf, group: &dyn Collectives) -> bool {
        let _ = (buf, group);
        false
    }
    /// Rank r's `src` becomes block r of every rank's `dst`, on the device (see `all_reduce_on_device`).
    fn all_gather_on_device(&self, src: &Self::Buf, dst: &mut Self::Buf, group: &dyn Collectives) -> bool {
        let _ = (src, dst, group);
        false
    }
    /// Block r of the sum of every rank's `src` lands in rank r's `dst`, on the device.
    fn reduce_scatter_on_device(&self, src: &Self::Buf, dst: &mut Self::Buf, group: &dyn Collectives) -> bool {
        let _ = (src, dst, group);
        false
    }
    /// In place (ZeRO-1's gradient buckets): `buf` holds `group.size()` blocks; block r of the
    /// sum of every rank's `buf` lands in block r of rank r's (the other blocks are left
    /// undefined), on the device (see `all_reduce_on_device`).
    fn reduce_scatter_in_place_on_device(&self, buf: &mut Self::Buf, group: &dyn Collectives) -> bool {
        let _ = (buf, group);
        false
    }
    /// In place: block r of rank r's `buf` becomes block r of every rank's, on the device.
    fn all_gather_in_place_on_device(&self, buf: &mut Self::Buf, group: &dyn Collectives) -> bool {
        let _ = (buf, group);
        false
    }
    /// Runs `f`, whose device collectives then go to side stream `lane`, which first waits for
    /// the work issued so far, so that they overlap the work issued after `f` (NCCL on a GPU);
    /// `join_side_work(lane)` makes later work wait for them. Backends that run everything in
    /// call order keep the defaults.
    fn side_work(&self, lane: SideLane, f: &mut dyn FnMut()) {
        let _ = lane;
        f()
    }
    fn join_side_work(&self, lane: SideLane) {
        let _ = lane;
    }
    /// Marks the work issued to `lane` so far as mark `slot`; `wait_side_mark(lane, slot)` makes
    /// later work wait for it (one DP bucket's weight all-gather before the forward pass reads it).
    fn mark_side_work(&self, lane: SideLane, slot: usize) {
        let _ = (lane, slot);
    }
    fn wait_side_mark(&self, lane: SideLane, slot: usize) {
        let _ = (lane, slot);
    }
    /// How many collectives went to side stream `lane` so far (0 where none is).
    fn side_collectives(&self, lane: SideLane) -> usize {
        let _ = lane;
        0
    }
    /// Sends `buf` to rank `to` of `group` from where it lies (pipeline activations and their
    /// gradients; see `DeviceComm::send` for the ordering); false: the caller stages it.
    fn send_on_device(&self, buf: &Self::Buf, group: &dyn Collectives, to: usize, tag: i32) -> bool {
        let _ = (buf, group, to, tag);
        false
    }
    /// Receives `buf` from rank `from` of `group` into where it lies (see `send_on_device`).
    fn recv_on_device(&self, buf: &mut Self::Buf, group: &dyn Collectives, from: usize, tag: i32) -> bool {
        let _ = (buf, group, from, tag);
        false
    }

    // ---- optimizer ----------------------------------------------------------------------
    /// One AdamW update of `param` (decoupled weight decay `lr * wd * param`), moments `m`, `v`.
    fn adamw(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, h: AdamWStep);
    /// `adamw` on every tensor of `tensors` with the same hyper-parameters (one launch where the
    /// backend can).
    fn adamw_all(&self, tensors: &mut [AdamTensor<'_, Self>], h: AdamWStep) {
        for t in tensors {
            self.adamw(t.param, t.grad, t.m, t.v, h);
        }
    }
    /// LAMB's first phase on every tensor of `tensors` (one launch where the backend can):
    /// `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2`, and the update direction
    /// `u = m̂ / (sqrt(v̂) + eps) + weight_decay * param` written over the gradient (`m̂`, `v̂`: the
    /// moments, bias-corrected when `h.bias_correction`). The parameter is not changed.
    fn lamb_moments_all(&self, tensors: &mut [LambTensor<'_, Self>], h: LambStep);
    /// LAMB's second phase: `param -= steps[i] * u` for tensor i (its gradient buffer holding `u`).
    fn lamb_apply_all(&self, tensors: &mut [LambTensor<'_, Self>], steps: &[f32]);
}
