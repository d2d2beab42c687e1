//! The Llama decoder with an explicit forward and backward over the backend trait (no autograd),
//! computing exactly what Hugging Face's LlamaForCausalLM computes:
//! embedding -> N x [RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> SwiGLU -> residual]
//! -> RMSNorm -> LM head -> mean token cross-entropy.
//!
//! Tensor parallelism (Megatron): each rank of the TP group holds its shard of every parameter
//! (params.rs says how each is split). q/k/v and gate/up are column-parallel (heads and FFN columns
//! split, no communication), o_proj and down_proj row-parallel (partial outputs all-reduced before
//! the residual add), the embedding vocab-parallel (rows of other shards give zeros, all-reduced),
//! the LM head vocab-parallel with a cross-entropy that combines per-shard (max, sum-exp, target
//! logit) and never gathers the logits. In backward the input gradients of the column-parallel
//! layers are all-reduced. With one TP rank all of this reduces to the plain model.
//!
//! Buffers are allocated once for a (micro-batch, sequence) shape; a step allocates nothing.
//! Each layer keeps what its backward needs: the normalised inputs and their 1/rms, q/k/v after
//! RoPE, the attention output and its log-sum-exp, the gate/up projections and the SwiGLU output.

use super::params::{padded_vocab, LayerIds, ParamTable};
use super::{init, rope};
use crate::backend::{AttnShape, Backend};
use crate::config::ModelConfig;
use crate::dist::{Collectives, LocalGroup};
use std::sync::Arc;

/// This rank's share of the model under tensor parallelism.
#[derive(Clone, Copy, Debug)]
pub struct LocalDims {
    pub tp: usize,
    pub tp_rank: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    /// Vocabulary rows of the shard (padded vocabulary / tp).
    pub vocab: usize,
    /// First global vocabulary row of the shard.
    pub vocab_start: usize,
    /// Rows of the shard that are real tokens (not padding).
    pub valid_vocab: usize,
}

impl LocalDims {
    pub fn new(cfg: &ModelConfig, tp: usize, tp_rank: usize) -> Self {
        let vocab = padded_vocab(cfg.vocab_size, tp) / tp;
        let vocab_start = tp_rank * vocab;
        LocalDims {
            tp,
            tp_rank,
            heads: cfg.num_heads / tp,
            kv_heads: cfg.num_kv_heads / tp,
            ffn: cfg.ffn_hidden_size / tp,
            vocab,
            vocab_start,
            valid_vocab: cfg.vocab_size.saturating_sub(vocab_start).min(vocab),
        }
    }
}

/// Sums `buf` over the TP group (staged through host memory), a no-op for one rank.
fn tp_all_reduce<B: Backend>(be: &B, tp: &dyn Collectives, host: &mut [f32], buf: &mut B::Buf) {
    if tp.size() == 1 {
        return;
    }
    let host = &mut host[..be.len(buf)];
    be.download_into(buf, host);
    tp.all_reduce_sum_f32(host);
    be.upload(host, buf);
}

/// Saved activations of one decoder layer, `[B*T, ...]`.
struct LayerActs<B: Backend> {
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

/// Gradient scratch shared by all layers during backward.
struct GradScratch<B: Backend> {
    resid: B::Buf,
    ln: B::Buf,
    attn: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    swiglu: B::Buf,
    gate: B::Buf,
    up: B::Buf,
}

pub struct Llama<B: Backend> {
    pub backend: Arc<B>,
    pub cfg: ModelConfig,
    pub table: ParamTable,
    pub local: LocalDims,
    pub tp: Box<dyn Collectives>,
    pub weights: Vec<B::Buf>,
    pub grads: Vec<B::Buf>,
    pub micro_batch: usize,
    pub seq: usize,
    rope_cos: B::Buf,
    rope_sin: B::Buf,
    inputs: B::Ids,
    targets: B::Ids,
    host_inputs: Vec<u32>,
    host_targets: Vec<u32>,
    /// `resid[l]` is the input of layer `l`; `resid[L]` feeds the final norm.
    resid: Vec<B::Buf>,
    layers: Vec<LayerActs<B>>,
    final_ln: B::Buf,
    final_rstd: B::Buf,
    logits: B::Buf,
    losses: B::Buf,
    g: GradScratch<B>,
    /// Row-parallel partial outputs, summed over TP before the residual add.
    partial: B::Buf,
    /// Vocab-parallel cross-entropy statistics `[rows, 3]`, this shard's and the combined ones.
    ce_stats: B::Buf,
    ce_global: B::Buf,
    /// Host staging for TP collectives.
    host: Vec<f32>,
    host_stats: Vec<f32>,
}

impl<B: Backend> Llama<B> {
    /// The whole model on one rank: allocates weights (zero), gradients and activations for
    /// micro-batches of `micro_batch` sequences of `seq` tokens.
    pub fn new(backend: Arc<B>, cfg: &ModelConfig, micro_batch: usize, seq: usize) -> Self {
        Self::new_sharded(backend, cfg, micro_batch, seq, Box::new(LocalGroup))
    }

    /// This rank's tensor-parallel shard of the model; `tp` is its TP group.
    pub fn new_sharded(backend: Arc<B>, cfg: &ModelConfig, micro_batch: usize, seq: usize, tp: Box<dyn Collectives>) -> Self {
        let table = ParamTable::llama(cfg);
        let local = LocalDims::new(cfg, tp.size(), tp.rank());
        let be = &*backend;
        let numel = |s: &super::params::ParamSpec| s.local_shape(local.tp).iter().product::<usize>();
        let weights: Vec<B::Buf> = table.specs.iter().map(|s| be.zeros(numel(s))).collect();
        let grads: Vec<B::Buf> = table.specs.iter().map(|s| be.zeros(numel(s))).collect();
        let n = micro_batch * seq;
        let (h, f, v) = (cfg.hidden_size, local.ffn, local.vocab);
        let d = cfg.head_dim();
        let (qd, kvd) = (local.heads * d, local.kv_heads * d);
        let layers = (0..cfg.num_layers)
            .map(|_| LayerActs {
                ln1: be.zeros(n * h),
                rstd1: be.zeros(n),
                q: be.zeros(n * qd),
                k: be.zeros(n * kvd),
                v: be.zeros(n * kvd),
                attn: be.zeros(n * qd),
                lse: be.zeros(micro_batch * local.heads * seq),
                resid_mid: be.zeros(n * h),
                ln2: be.zeros(n * h),
                rstd2: be.zeros(n),
                gate: be.zeros(n * f),
                up: be.zeros(n * f),
                swiglu: be.zeros(n * f),
            })
            .collect();
        let g = GradScratch {
            resid: be.zeros(n * h),
            ln: be.zeros(n * h),
            attn: be.zeros(n * qd),
            q: be.zeros(n * qd),
            k: be.zeros(n * kvd),
            v: be.zeros(n * kvd),
            swiglu: be.zeros(n * f),
            gate: be.zeros(n * f),
            up: be.zeros(n * f),
        };
        let (cos, sin) = rope::tables(cfg, seq);
        let mut rope_cos = be.zeros(cos.len());
        let mut rope_sin = be.zeros(sin.len());
        be.upload(&cos, &mut rope_cos);
        be.upload(&sin, &mut rope_sin);
        Llama {
            cfg: cfg.clone(),
            table,
            local,
            tp,
            partial: be.zeros(n * h),
            ce_stats: be.zeros(3 * n),
            ce_global: be.zeros(3 * n),
            host: vec![0.0; n * h.max(3)],
            host_stats: vec![0.0; 3 * n * local.tp],
            weights,
            grads,
            micro_batch,
            seq,
            rope_cos,
            rope_sin,
            inputs: be.zeros_ids(n),
            targets: be.zeros_ids(n),
            host_inputs: vec![0; n],
            host_targets: vec![0; n],
            resid: (0..=cfg.num_layers).map(|_| be.zeros(n * h)).collect(),
            layers,
            final_ln: be.zeros(n * h),
            final_rstd: be.zeros(n),
            logits: be.zeros(n * v),
            losses: be.zeros(n),
            g,
            backend,
        }
    }

    /// Layout-independent init: every weight from (seed, name, global element index), so each TP
    /// shard holds exactly its part of the single-rank model.
    pub fn init_weights(&mut self, seed: u64) {
        let (tp, rank) = (self.local.tp, self.local.tp_rank);
        for (spec, w) in self.table.specs.iter().zip(self.weights.iter_mut()) {
            let vals: Vec<f32> = spec
                .local_ranges(tp, rank)
                .into_iter()
                .flat_map(|r| init::init_values(spec, seed, self.cfg.init_std, r))
                .collect();
            self.backend.upload(&vals, w);
        }
    }

    /// Whether parameter `id` is replicated across the TP group (its gradient is then the same on
    /// every TP rank and must be counted once in the global norm).
    pub fn is_replicated(&self, id: usize) -> bool {
        self.table.specs[id].shard == super::params::ShardKind::Replicated
    }

    pub fn zero_grads(&mut self) {
        for g in self.grads.iter_mut() {
            self.backend.fill_zero(g);
        }
    }

    fn attn_shape(&self) -> AttnShape {
        AttnShape {
            batch: self.micro_batch,
            seq: self.seq,
            heads: self.local.heads,
            kv_heads: self.local.kv_heads,
            head_dim: self.cfg.head_dim(),
        }
    }

    /// Splits `samples` (`micro_batch` rows of `seq + 1` tokens) into inputs and next-token targets.
    fn load_batch(&mut self, samples: &[u32]) {
        let (t, n) = (self.seq, self.micro_batch * self.seq);
        assert_eq!(samples.len(), self.micro_batch * (t + 1), "micro-batch of the wrong size");
        for b in 0..self.micro_batch {
            let row = &samples[b * (t + 1)..(b + 1) * (t + 1)];
            self.host_inputs[b * t..(b + 1) * t].copy_from_slice(&row[..t]);
            self.host_targets[b * t..(b + 1) * t].copy_from_slice(&row[1..]);
        }
        debug_assert_eq!(self.host_inputs.len(), n);
        self.backend.upload_ids(&self.host_inputs, &mut self.inputs);
        self.backend.upload_ids(&self.host_targets, &mut self.targets);
    }

    /// Forward pass over one micro-batch; returns the summed token loss. Leaves
    /// `grad_scale * dloss/dlogits` in the logits buffer for `backward`.
    pub fn forward(&mut self, samples: &[u32], grad_scale: f32) -> f64 {
        self.load_batch(samples);
        let be = &*self.backend;
        let c = &self.cfg;
        let lc = self.local;
        let tp = &*self.tp;
        let n = self.micro_batch * self.seq;
        let (h, f, v) = (c.hidden_size, lc.ffn, lc.vocab);
        let d = c.head_dim();
        let (qd, kvd) = (lc.heads * d, lc.kv_heads * d);
        let eps = c.norm_eps as f32;
        let shape = self.attn_shape();
        let w = &self.weights;
        let t = &self.table;
        let host = &mut self.host;
        let partial = &mut self.partial;
        // Row-parallel output + residual: out = x + sum over TP of (a * W^T).
        let row_parallel = |out: &mut B::Buf, x: &B::Buf, a: &B::Buf, wt: &B::Buf, k: usize, partial: &mut B::Buf, host: &mut [f32]| {
            be.copy(out, x);
            if tp.size() == 1 {
                be.gemm(out, a, wt, n, k, h, false, true, 1.0, 1.0);
            } else {
                be.gemm(partial, a, wt, n, k, h, false, true, 1.0, 0.0);
                tp_all_reduce(be, tp, host, partial);
                be.add_assign(out, partial);
            }
        };

        be.embedding_fwd(&mut self.resid[0], &w[t.embed], &self.inputs, h, lc.vocab_start);
        tp_all_reduce(be, tp, host, &mut self.resid[0]);
        for (l, ids) in t.layers.iter().enumerate() {
            let (before, after) = self.resid.split_at_mut(l + 1);
            let x = &before[l];
            let out = &mut after[0];
            let a = &mut self.layers[l];
            be.rmsnorm_fwd(&mut a.ln1, &mut a.rstd1, x, &w[ids.input_norm], h, eps);
            be.gemm(&mut a.q, &a.ln1, &w[ids.q], n, h, qd, false, true, 1.0, 0.0);
            be.gemm(&mut a.k, &a.ln1, &w[ids.k], n, h, kvd, false, true, 1.0, 0.0);
            be.gemm(&mut a.v, &a.ln1, &w[ids.v], n, h, kvd, false, true, 1.0, 0.0);
            be.rope_fwd(&mut a.q, &self.rope_cos, &self.rope_sin, shape.batch, shape.seq, lc.heads, d);
            be.rope_fwd(&mut a.k, &self.rope_cos, &self.rope_sin, shape.batch, shape.seq, lc.kv_heads, d);
            be.attention_fwd(&mut a.attn, &mut a.lse, &a.q, &a.k, &a.v, shape);
            row_parallel(&mut a.resid_mid, x, &a.attn, &w[ids.o], qd, partial, host);
            be.rmsnorm_fwd(&mut a.ln2, &mut a.rstd2, &a.resid_mid, &w[ids.post_norm], h, eps);
            be.gemm(&mut a.gate, &a.ln2, &w[ids.gate], n, h, f, false, true, 1.0, 0.0);
            be.gemm(&mut a.up, &a.ln2, &w[ids.up], n, h, f, false, true, 1.0, 0.0);
            be.swiglu_fwd(&mut a.swiglu, &a.gate, &a.up);
            row_parallel(out, &a.resid_mid, &a.swiglu, &w[ids.down], f, partial, host);
        }
        let last = &self.resid[c.num_layers];
        be.rmsnorm_fwd(&mut self.final_ln, &mut self.final_rstd, last, &w[t.final_norm], h, eps);
        be.gemm(&mut self.logits, &self.final_ln, &w[t.lm_head], n, h, v, false, true, 1.0, 0.0);
        if tp.size() == 1 {
            be.cross_entropy_fwd_bwd(&mut self.logits, &mut self.losses, &self.targets, v, lc.valid_vocab, grad_scale);
        } else {
            self.vocab_parallel_cross_entropy(grad_scale);
        }
        self.backend.sum(&self.losses)
    }

    /// Combines every shard's (max, sum-exp, target logit) per row through an all-gather of 3
    /// numbers per token, then finishes the loss and this shard's dlogits locally.
    fn vocab_parallel_cross_entropy(&mut self, grad_scale: f32) {
        let be = &*self.backend;
        let lc = self.local;
        let rows = self.micro_batch * self.seq;
        be.cross_entropy_local_stats(&self.logits, &mut self.ce_stats, &self.targets, lc.vocab, lc.valid_vocab, lc.vocab_start);
        let mine = &mut self.host[..3 * rows];
        be.download_into(&self.ce_stats, mine);
        self.tp.all_gather_f32(mine, &mut self.host_stats);
        let all = &self.host_stats;
        for r in 0..rows {
            let shard = |k: usize| &all[k * 3 * rows + 3 * r..k * 3 * rows + 3 * r + 3];
            let m = (0..lc.tp).map(|k| shard(k)[0]).fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = (0..lc.tp).map(|k| shard(k)[1] as f64 * ((shard(k)[0] - m) as f64).exp()).sum();
            let target: f32 = (0..lc.tp).map(|k| shard(k)[2]).sum();
            mine[3 * r..3 * r + 3].copy_from_slice(&[m, sum as f32, target]);
        }
        be.upload(mine, &mut self.ce_global);
        be.cross_entropy_finish(
            &mut self.logits,
            &mut self.losses,
            &self.ce_global,
            &self.targets,
            lc.vocab,
            lc.valid_vocab,
            lc.vocab_start,
            grad_scale,
        );
    }

    /// Backward pass of the last `forward`, accumulating into `grads`.
    pub fn backward(&mut self) {
        let be = &*self.backend;
        let c = &self.cfg;
        let lc = self.local;
        let tp = &*self.tp;
        let n = self.micro_batch * self.seq;
        let (h, f, v) = (c.hidden_size, lc.ffn, lc.vocab);
        let d = c.head_dim();
        let (qd, kvd) = (lc.heads * d, lc.kv_heads * d);
        let shape = self.attn_shape();
        let (w, gr, t, g) = (&self.weights, &mut self.grads, &self.table, &mut self.g);
        let host = &mut self.host;

        // LM head and final norm; `logits` now holds dloss/dlogits (this vocabulary shard's).
        be.gemm(&mut g.ln, &self.logits, &w[t.lm_head], n, v, h, false, false, 1.0, 0.0);
        tp_all_reduce(be, tp, host, &mut g.ln);
        be.gemm(&mut gr[t.lm_head], &self.logits, &self.final_ln, v, n, h, true, false, 1.0, 1.0);
        be.fill_zero(&mut g.resid);
        let last = &self.resid[c.num_layers];
        be.rmsnorm_bwd(&mut g.resid, &mut gr[t.final_norm], &g.ln, last, &w[t.final_norm], &self.final_rstd, h);

        for l in (0..c.num_layers).rev() {
            let ids: &LayerIds = &t.layers[l];
            let a = &self.layers[l];
            let x = &self.resid[l];
            // MLP: out = mid + down(swiglu(gate(ln2), up(ln2)))
            be.gemm(&mut g.swiglu, &g.resid, &w[ids.down], n, h, f, false, false, 1.0, 0.0);
            be.gemm(&mut gr[ids.down], &g.resid, &a.swiglu, h, n, f, true, false, 1.0, 1.0);
            be.swiglu_bwd(&mut g.gate, &mut g.up, &g.swiglu, &a.gate, &a.up);
            be.gemm(&mut g.ln, &g.gate, &w[ids.gate], n, f, h, false, false, 1.0, 0.0);
            be.gemm(&mut g.ln, &g.up, &w[ids.up], n, f, h, false, false, 1.0, 1.0);
            be.gemm(&mut gr[ids.gate], &g.gate, &a.ln2, f, n, h, true, false, 1.0, 1.0);
            be.gemm(&mut gr[ids.up], &g.up, &a.ln2, f, n, h, true, false, 1.0, 1.0);
            tp_all_reduce(be, tp, host, &mut g.ln);
            be.rmsnorm_bwd(&mut g.resid, &mut gr[ids.post_norm], &g.ln, &a.resid_mid, &w[ids.post_norm], &a.rstd2, h);
            // Attention: mid = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1)))
            be.gemm(&mut g.attn, &g.resid, &w[ids.o], n, h, qd, false, false, 1.0, 0.0);
            be.gemm(&mut gr[ids.o], &g.resid, &a.attn, h, n, qd, true, false, 1.0, 1.0);
            be.attention_bwd(&mut g.q, &mut g.k, &mut g.v, &g.attn, &a.q, &a.k, &a.v, &a.attn, &a.lse, shape);
            be.rope_bwd(&mut g.q, &self.rope_cos, &self.rope_sin, shape.batch, shape.seq, lc.heads, d);
            be.rope_bwd(&mut g.k, &self.rope_cos, &self.rope_sin, shape.batch, shape.seq, lc.kv_heads, d);
            be.gemm(&mut g.ln, &g.q, &w[ids.q], n, qd, h, false, false, 1.0, 0.0);
            be.gemm(&mut g.ln, &g.k, &w[ids.k], n, kvd, h, false, false, 1.0, 1.0);
            be.gemm(&mut g.ln, &g.v, &w[ids.v], n, kvd, h, false, false, 1.0, 1.0);
            be.gemm(&mut gr[ids.q], &g.q, &a.ln1, qd, n, h, true, false, 1.0, 1.0);
            be.gemm(&mut gr[ids.k], &g.k, &a.ln1, kvd, n, h, true, false, 1.0, 1.0);
            be.gemm(&mut gr[ids.v], &g.v, &a.ln1, kvd, n, h, true, false, 1.0, 1.0);
            tp_all_reduce(be, tp, host, &mut g.ln);
            be.rmsnorm_bwd(&mut g.resid, &mut gr[ids.input_norm], &g.ln, x, &w[ids.input_norm], &a.rstd1, h);
        }
        be.embedding_bwd(&mut gr[t.embed], &g.resid, &self.inputs, h, lc.vocab_start);
    }

    /// Logits of the last forward (before it overwrote them with gradients) are not kept; this
    /// runs a forward and returns the logits `[B*T, vocab]` for inspection (tests, eval tools).
    pub fn logits(&mut self, samples: &[u32]) -> Vec<f32> {
        let n = self.micro_batch * self.seq;
        self.forward(samples, 0.0);
        let be = &*self.backend;
        be.gemm(&mut self.logits, &self.final_ln, &self.weights[self.table.lm_head], n, self.cfg.hidden_size, self.local.vocab, false, true, 1.0, 0.0);
        be.download(&self.logits)
    }
}
