//! The Llama decoder with an explicit forward and backward over the backend trait (no autograd),
//! computing exactly what Hugging Face's LlamaForCausalLM computes:
//! embedding -> N x [RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> SwiGLU -> residual]
//! -> RMSNorm -> LM head -> mean token cross-entropy.
//!
//! A `Llama` is this rank's part of the model (layout.rs): its tensor-parallel shard of every
//! parameter it holds and its pipeline chunks. Activations live in slots, one per micro-batch in
//! flight on a chunk (the pipeline executor assigns them; one slot without pipelining), all
//! allocated once for a (micro-batch, sequence) shape, so a step allocates nothing. The layer
//! compute itself is in layer.rs.
//!
//! Full activation recomputation (`train.recompute = "full"`): a slot keeps only its residual
//! stream (each layer's input); the layer activations live in one set per rank, written by every
//! layer's forward and rewritten by `layer::layer_saved_fwd` from the slot's layer input just
//! before that layer's backward.

use super::layer::{self, Cx, HeadActs, LayerActs, Scratch};
use super::layout::{self, Chunk, LocalDims};
use super::params::ParamTable;
use super::{init, rope};
use crate::backend::{AttnShape, Backend, Role};
use crate::config::{ModelConfig, Recompute};
use crate::parallel::{Collectives, LocalGroup};
use std::sync::Arc;

/// The activations of one micro-batch on one chunk.
struct Slot<B: Backend> {
    chunk: usize,
    inputs: B::Ids,
    targets: B::Ids,
    /// `resid[i]` is the input of the chunk's layer i; the last one is the chunk's output.
    resid: Vec<B::Buf>,
    /// The activations of each of the chunk's layers (none under full recomputation).
    layers: Vec<LayerActs<B>>,
    head: Option<HeadActs<B>>,
    /// Gradient of the chunk's output on arrival from the next stage; of its input after backward.
    grad: B::Buf,
}

pub struct Llama<B: Backend> {
    pub backend: Arc<B>,
    pub cfg: ModelConfig,
    pub table: ParamTable,
    pub local: LocalDims,
    pub tp: Box<dyn Collectives>,
    pub chunks: Vec<Chunk>,
    /// Per parameter: held by this rank (others have empty buffers).
    pub owned: Vec<bool>,
    pub weights: Vec<B::Buf>,
    pub grads: Vec<B::Buf>,
    pub micro_batch: usize,
    pub seq: usize,
    /// Residual stream split over the TP group along the tokens.
    pub sequence_parallel: bool,
    /// The backward pass's TP collectives on the backend's TP side stream, overlapping the
    /// layers' other GEMMs (`parallel.overlap_tp_backward`; default on).
    pub overlap_tp_backward: bool,
    rope_cos: B::Buf,
    rope_sin: B::Buf,
    host_inputs: Vec<u32>,
    host_targets: Vec<u32>,
    /// The TP ranks holding the same KV heads, when KV heads are replicated (tp > kv heads).
    kv_group: Option<Box<dyn Collectives>>,
    /// The first and last pipeline stages, when tied embeddings are split between them.
    embedding_group: Option<Box<dyn Collectives>>,
    first_stage: bool,
    /// Host staging for `reduce_replicated_grads` (norm weights, k/v weights, tied embeddings).
    host_grad: Vec<f32>,
    /// Per parameter: its gradient is summed over other ranks by `reduce_replicated_grads`.
    reduced_after_backward: Vec<bool>,
    slots: Vec<Slot<B>>,
    /// Full recomputation: the one set of layer activations every slot and layer shares.
    recomputed: Option<LayerActs<B>>,
    scratch: Scratch<B>,
}

/// The read-only compute context, borrowing fields of `$m` one by one so that slots and scratch
/// stay mutably borrowable.
macro_rules! cx {
    ($m:expr) => {
        Cx {
            be: &*$m.backend,
            cfg: &$m.cfg,
            table: &$m.table,
            lc: $m.local,
            tp: &*$m.tp,
            w: &$m.weights,
            cos: &$m.rope_cos,
            sin: &$m.rope_sin,
            n: $m.micro_batch * $m.seq,
            shape: AttnShape {
                batch: $m.micro_batch,
                seq: $m.seq,
                heads: $m.local.heads,
                kv_heads: $m.local.kv_heads,
                head_dim: $m.cfg.head_dim(),
            },
            sp: $m.sequence_parallel,
            overlap_tp: $m.overlap_tp_backward,
        }
    };
}

impl<B: Backend> Llama<B> {
    /// The whole model on one rank, one activation slot: weights (zero), gradients and
    /// activations for micro-batches of `micro_batch` sequences of `seq` tokens.
    pub fn new(backend: Arc<B>, cfg: &ModelConfig, micro_batch: usize, seq: usize) -> Self {
        let chunks = layout::chunks(cfg.num_layers, 1, 1, 0).expect("one stage holds every layer");
        Self::new_parallel(backend, cfg, micro_batch, seq, Box::new(LocalGroup), &LocalGroup, false, chunks, &[1], Recompute::Selective, Role::Weight)
    }

    /// This rank's part of the model: its shard within the TP group `tp` (with the residual stream
    /// split along the tokens when `sequence_parallel`; `micro_batch * seq` must then divide by the
    /// TP size), the pipeline `chunks` it runs within the PP group `pp`, and `slots[c]`
    /// activation slots for chunk c, each keeping every layer's activations or, under
    /// `Recompute::Full`, only the residual stream.
    #[allow(clippy::too_many_arguments)]
    pub fn new_parallel(
        backend: Arc<B>,
        cfg: &ModelConfig,
        micro_batch: usize,
        seq: usize,
        tp: Box<dyn Collectives>,
        pp: &dyn Collectives,
        sequence_parallel: bool,
        chunks: Vec<Chunk>,
        slots: &[usize],
        recompute: Recompute,
        weight_role: Role,
    ) -> Self {
        let sequence_parallel = sequence_parallel && tp.size() > 1;
        let table = ParamTable::llama(cfg);
        let local = LocalDims::new(cfg, tp.size(), tp.rank());
        let owned = layout::owned_params(&table, &chunks);
        let kv_replicas = tp.size() / tp.size().min(cfg.num_kv_heads);
        let kv_group = (kv_replicas > 1).then(|| tp.split(tp.rank() / kv_replicas, tp.rank()));
        // Tied embeddings over several stages: the first stage's embedding and the last stage's
        // LM head are two copies of one matrix whose gradients are summed (Megatron's embedding group).
        let ends = pp.rank() == 0 || pp.rank() == pp.size() - 1;
        let tied_split = cfg.tie_embeddings && pp.size() > 1;
        let embedding_group = if tied_split { Some(pp.split(ends as usize, pp.rank())).filter(|_| ends) } else { None };
        let be = &*backend;
        let numel = |p: usize| if owned[p] { table.specs[p].local_shape(local.tp).iter().product() } else { 0 };
        let weights: Vec<B::Buf> = (0..table.specs.len()).map(|p| be.zeros_as(numel(p), weight_role)).collect();
        let grads: Vec<B::Buf> = (0..table.specs.len()).map(|p| be.zeros_as(numel(p), Role::Grad)).collect();
        let n = micro_batch * seq;
        let rows = if sequence_parallel { n / local.tp } else { n };
        let h = cfg.hidden_size;
        let full = recompute == Recompute::Full;
        let acts = || LayerActs::new(be, cfg, &local, micro_batch, seq, rows);
        let mut all_slots = Vec::new();
        for (c, ch) in chunks.iter().enumerate() {
            for _ in 0..slots[c] {
                all_slots.push(Slot {
                    chunk: c,
                    inputs: be.zeros_ids(n),
                    targets: be.zeros_ids(n),
                    resid: (0..=ch.layers.len()).map(|_| be.zeros_as(rows * h, Role::Activation)).collect(),
                    layers: if full { Vec::new() } else { ch.layers.clone().map(|_| acts()).collect() },
                    head: ch.head.then(|| HeadActs::new(be, cfg, &local, n, rows)),
                    grad: be.zeros_as(rows * h, Role::Activation),
                });
            }
        }
        let reduced_after_backward = (0..table.specs.len())
            .map(|p| {
                let tied = p == table.embed && embedding_group.is_some();
                let kv = matches!(table.specs[p].shard, super::ShardKind::KvHeads { .. }) && kv_group.is_some();
                owned[p] && (tied || kv || (table.specs[p].shard == super::ShardKind::Replicated && sequence_parallel))
            })
            .collect();
        let (cos, sin) = rope::tables(cfg, seq);
        let mut rope_cos = be.zeros_as(cos.len(), Role::Stat);
        let mut rope_sin = be.zeros_as(sin.len(), Role::Stat);
        be.upload(&cos, &mut rope_cos);
        be.upload(&sin, &mut rope_sin);
        Llama {
            scratch: Scratch::new(be, cfg, &local, n, rows),
            sequence_parallel,
            overlap_tp_backward: true,
            cfg: cfg.clone(),
            table,
            local,
            tp,
            chunks,
            owned,
            weights,
            grads,
            micro_batch,
            seq,
            rope_cos,
            rope_sin,
            host_inputs: vec![0; n],
            host_targets: vec![0; n],
            host_grad: vec![0.0; (h * cfg.head_dim() * local.kv_heads).max(if tied_split { local.vocab * h } else { 0 })],
            reduced_after_backward,
            kv_group,
            embedding_group,
            first_stage: pp.rank() == 0,
            slots: all_slots,
            recomputed: full.then(acts),
            backend,
        }
    }

    /// Layout-independent init: every weight from (seed, name, global element index), so each
    /// shard holds exactly its part of the single-rank model.
    pub fn init_weights(&mut self, seed: u64) {
        for p in 0..self.weights.len() {
            if self.owned[p] {
                let vals = self.initial_values(seed, p);
                self.backend.upload(&vals, &mut self.weights[p]);
            }
        }
    }

    /// The initial values of this rank's shard of parameter `p` (empty when it holds none).
    pub fn initial_values(&self, seed: u64, p: usize) -> Vec<f32> {
        if !self.owned[p] {
            return Vec::new();
        }
        let spec = &self.table.specs[p];
        spec.local_ranges(self.local.tp, self.local.tp_rank).into_iter().flat_map(|r| init::init_values(spec, seed, self.cfg.init_std, r)).collect()
    }

    pub fn zero_grads(&mut self) {
        for g in self.grads.iter_mut() {
            self.backend.fill_zero(g);
        }
    }

    /// Whether this rank's copy of each parameter counts in the global gradient norm: held here,
    /// and the first of the copies held by several ranks (TP-replicated shards; a tied embedding
    /// split over the pipeline counts on the first stage).
    pub fn counted_in_norm(&self) -> Vec<bool> {
        (0..self.table.specs.len())
            .map(|p| {
                let tied_copy = p == self.table.embed && self.embedding_group.is_some() && !self.first_stage;
                self.owned[p] && self.table.specs[p].counted_on(self.local.tp, self.local.tp_rank) && !tied_copy
            })
            .collect()
    }

    /// Sums the gradients of parameters held by several ranks over the ranks holding them (after
    /// all micro-batches, before the optimizer): under sequence parallelism each rank computed
    /// the norm-weight gradients from its own tokens only; a replicated KV head's gradient comes
    /// from each holder's own query heads; a tied embedding split over the pipeline gets its
    /// embedding part on the first stage and its LM-head part on the last.
    pub fn reduce_replicated_grads(&mut self) {
        let be = &*self.backend;
        for (p, g) in self.grads.iter_mut().enumerate() {
            if !self.reduced_after_backward[p] {
                continue;
            }
            let group: &dyn Collectives = match (&self.embedding_group, &self.kv_group) {
                (Some(tied), _) if p == self.table.embed => &**tied,
                (_, Some(kv)) if matches!(self.table.specs[p].shard, super::ShardKind::KvHeads { .. }) => &**kv,
                _ => &*self.tp, // a replicated norm weight under sequence parallelism
            };
            let host = &mut self.host_grad[..be.len(g)];
            be.download_into(g, host);
            group.all_reduce_sum_f32(host);
            be.upload(host, g);
        }
    }

    /// Slots of each chunk, in slot order: `(chunk, slot index)`.
    pub fn slot_chunks(&self) -> Vec<usize> {
        self.slots.iter().map(|s| s.chunk).collect()
    }

    /// Puts a micro-batch (`micro_batch` rows of `seq + 1` tokens) into slot `s`: inputs and
    /// next-token targets.
    pub fn load_slot(&mut self, s: usize, samples: &[u32]) {
        let t = self.seq;
        assert_eq!(samples.len(), self.micro_batch * (t + 1), "micro-batch of the wrong size");
        for b in 0..self.micro_batch {
            let row = &samples[b * (t + 1)..(b + 1) * (t + 1)];
            self.host_inputs[b * t..(b + 1) * t].copy_from_slice(&row[..t]);
            self.host_targets[b * t..(b + 1) * t].copy_from_slice(&row[1..]);
        }
        let slot = &mut self.slots[s];
        self.backend.upload_ids(&self.host_inputs, &mut slot.inputs);
        self.backend.upload_ids(&self.host_targets, &mut slot.targets);
    }

    /// The chunk input of slot `s` (filled by the embedding or received from the previous stage).
    pub fn slot_input_mut(&mut self, s: usize) -> &mut B::Buf {
        &mut self.slots[s].resid[0]
    }

    /// The chunk output of slot `s` after its forward.
    pub fn slot_output(&self, s: usize) -> &B::Buf {
        self.slots[s].resid.last().expect("a chunk has an output")
    }

    /// Gradient buffer of slot `s`: of the output before backward, of the input after it.
    pub fn slot_grad_mut(&mut self, s: usize) -> &mut B::Buf {
        &mut self.slots[s].grad
    }

    pub fn slot_grad(&self, s: usize) -> &B::Buf {
        &self.slots[s].grad
    }

    /// Forward of slot `s`'s chunk; returns the summed token loss on the head chunk (0 elsewhere)
    /// and leaves `grad_scale * dloss/dlogits` for the backward. With `weights_needed` (the
    /// chunk's first forward of the step), each group of parameters is passed to it just before
    /// their weights are first read (the embedding's, each layer's, the head's), so a weight
    /// all-gather still in flight can be waited for bucket by bucket.
    pub fn forward_slot(&mut self, s: usize, grad_scale: f32, mut weights_needed: Option<&mut dyn FnMut(&[usize])>) -> f64 {
        let cx = cx!(self);
        let slot = &mut self.slots[s];
        let ch = &self.chunks[slot.chunk];
        let sc = &mut self.scratch;
        let mut need = |params: &[usize]| {
            if let Some(f) = weights_needed.as_mut() {
                f(params)
            }
        };
        if ch.embed {
            need(&[cx.table.embed]);
            layer::embed_fwd(&cx, sc, &slot.inputs, &mut slot.resid[0]);
        }
        for (i, l) in ch.layers.clone().enumerate() {
            let (before, after) = slot.resid.split_at_mut(i + 1);
            let acts = self.recomputed.as_mut().unwrap_or_else(|| &mut slot.layers[i]);
            need(&cx.table.layers[l].all());
            layer::layer_fwd(&cx, sc, &cx.table.layers[l], &before[i], &mut after[0], acts);
        }
        match slot.head.as_mut() {
            Some(hd) => {
                need(&[cx.table.final_norm, cx.table.lm_head]);
                layer::head_fwd(&cx, sc, slot.resid.last().unwrap(), &slot.targets, hd, grad_scale)
            }
            None => 0.0,
        }
    }

    /// Backward of slot `s`'s chunk, accumulating into `grads`; leaves the gradient of the chunk's
    /// input in the slot's grad buffer (unless the chunk starts with the embedding). Each group
    /// of parameters whose gradients this backward has then added to is passed to `computed`
    /// with the gradients as soon as it is (the head's, each layer's from the last, the
    /// embedding's), so their DP exchange can start; parameters `reduce_replicated_grads` still
    /// sums are left out (`reduced_after_backward`). A gradient buffer the listener released
    /// (ZeRO-2 keeps no whole gradient: an empty buffer) is allocated again, zeroed, before the
    /// backward next writes it.
    pub fn backward_slot(&mut self, s: usize, computed: Option<&mut dyn FnMut(&[usize], &mut [B::Buf])>) {
        self.backward_pass(s, false, computed);
    }

    /// ZeroBubble's B pass of slot `s`'s chunk: `backward_slot` without the weight gradients of
    /// the linear maps (the norms' and the embedding's are computed here), whose inputs' output
    /// gradients stay in the slot for `backward_weight_slot` (layer.rs, `layer_bwd`). Refused
    /// under full recomputation, whose layer activations all slots share. No listener: the
    /// gradients this pass adds to are reported by the W pass that follows it.
    pub fn backward_input_slot(&mut self, s: usize) {
        assert!(self.recomputed.is_none(), "split backward passes need each slot's own activations (not --recompute full)");
        self.backward_pass(s, true, None);
    }

    /// The fused backward, or only its input-gradient part (`deferred`).
    fn backward_pass(&mut self, s: usize, deferred: bool, mut computed: Option<&mut dyn FnMut(&[usize], &mut [B::Buf])>) {
        let cx = cx!(self);
        let slot = &mut self.slots[s];
        let ch = &self.chunks[slot.chunk];
        let (sc, gr) = (&mut self.scratch, &mut self.grads);
        let later = &self.reduced_after_backward;
        let ensure = |gr: &mut [B::Buf], params: &[usize]| ensure_grads(cx.be, cx.w, gr, params);
        let mut done = |gr: &mut [B::Buf], params: &[usize]| report_computed::<B>(&mut computed, later, gr, params);
        match slot.head.as_ref() {
            Some(hd) => {
                // With a tied LM head this allocates the embedding's gradient, which it writes.
                ensure(gr, &[cx.table.final_norm, cx.table.lm_head]);
                layer::head_bwd(&cx, sc, gr, slot.resid.last().unwrap(), hd, deferred);
                done(gr, &head_params(cx.table));
            }
            None => cx.be.copy(&mut sc.resid, &slot.grad),
        }
        for (i, l) in ch.layers.clone().enumerate().rev() {
            let ids = &cx.table.layers[l];
            let (before, after) = slot.resid.split_at_mut(i + 1);
            let acts = match self.recomputed.as_mut() {
                Some(acts) => {
                    layer::layer_saved_fwd(&cx, sc, ids, &before[i], acts);
                    acts
                }
                None => &mut slot.layers[i],
            };
            ensure(gr, &ids.all());
            layer::layer_bwd(&cx, sc, gr, ids, &before[i], acts, deferred.then_some(&mut after[0]));
            done(gr, &ids.all());
        }
        if ch.embed {
            ensure(gr, &[cx.table.embed]);
            layer::embed_bwd(&cx, sc, gr, &slot.inputs);
            done(gr, &[cx.table.embed]);
        } else {
            cx.be.copy(&mut slot.grad, &sc.resid);
        }
    }

    /// ZeroBubble's W pass of slot `s`'s chunk, after its `backward_input_slot`: the linear maps'
    /// weight gradients (the head's, each layer's from the last), the same GEMMs as the fused
    /// backward's. Each group of parameters is passed to `computed` with the gradients as its
    /// W pass (or, for the norms and the embedding, its B pass before it) has added to them, as
    /// `backward_slot` does; released gradient buffers are allocated again first.
    pub fn backward_weight_slot(&mut self, s: usize, mut computed: Option<&mut dyn FnMut(&[usize], &mut [B::Buf])>) {
        let cx = cx!(self);
        let slot = &self.slots[s];
        let ch = &self.chunks[slot.chunk];
        let (sc, gr) = (&mut self.scratch, &mut self.grads);
        let later = &self.reduced_after_backward;
        let ensure = |gr: &mut [B::Buf], params: &[usize]| ensure_grads(cx.be, cx.w, gr, params);
        let mut done = |gr: &mut [B::Buf], params: &[usize]| report_computed::<B>(&mut computed, later, gr, params);
        if let Some(hd) = slot.head.as_ref() {
            ensure(gr, &[cx.table.final_norm, cx.table.lm_head]);
            layer::head_bwd_weight(&cx, sc, gr, hd);
            done(gr, &head_params(cx.table));
        }
        for (i, l) in ch.layers.clone().enumerate().rev() {
            let ids = &cx.table.layers[l];
            ensure(gr, &ids.all());
            layer::layer_bwd_weight(&cx, sc, gr, ids, &slot.resid[i + 1], &slot.layers[i]);
            done(gr, &ids.all());
        }
        if ch.embed {
            ensure(gr, &[cx.table.embed]);
            done(gr, &[cx.table.embed]);
        }
    }

    /// The parameters held here whose gradients `reduce_replicated_grads` sums over other ranks
    /// (complete only after it).
    pub fn reduced_after_backward(&self) -> Vec<usize> {
        (0..self.reduced_after_backward.len()).filter(|&p| self.reduced_after_backward[p]).collect()
    }

    /// Forward of one micro-batch through the whole model (one rank, one chunk); returns the
    /// summed token loss.
    pub fn forward(&mut self, samples: &[u32], grad_scale: f32) -> f64 {
        assert!(self.chunks.len() == 1 && self.chunks[0].embed && self.chunks[0].head, "forward needs the whole model");
        self.load_slot(0, samples);
        self.forward_slot(0, grad_scale, None)
    }

    /// Backward of the last `forward`.
    pub fn backward(&mut self) {
        self.backward_slot(0, None);
    }

    /// The logits `[B*T, vocab]` of a micro-batch (tests, tools): a forward, then the LM head
    /// again, since the forward turns its logits into gradients.
    pub fn logits(&mut self, samples: &[u32]) -> Vec<f32> {
        assert!(!self.sequence_parallel, "logits needs the final norm's output whole (no sequence parallelism)");
        self.forward(samples, 0.0);
        let (n, h, v) = (self.micro_batch * self.seq, self.cfg.hidden_size, self.local.vocab);
        let hd = self.slots[0].head.as_mut().expect("the whole model has a head");
        self.backend.gemm(&mut hd.logits, &hd.final_ln, &self.weights[self.table.lm_head], n, h, v, false, true, 1.0, 0.0);
        self.backend.download(&hd.logits)
    }
}

/// The head's parameters whose gradients its backward completes: the final norm's and the LM
/// head's, unless the LM head is tied to the embedding (complete after the embedding's backward).
fn head_params(table: &ParamTable) -> Vec<usize> {
    if table.lm_head == table.embed {
        vec![table.final_norm]
    } else {
        vec![table.final_norm, table.lm_head]
    }
}

/// Allocates again, zeroed, each gradient of `params` a listener released (ZeRO-2: an empty
/// buffer) before a backward writes it.
fn ensure_grads<B: Backend>(be: &B, w: &[B::Buf], gr: &mut [B::Buf], params: &[usize]) {
    for &p in params {
        let n = be.len(&w[p]);
        if n > 0 && be.len(&gr[p]) == 0 {
            gr[p] = be.zeros_as(n, Role::Grad);
        }
    }
}

/// Passes `params` with the gradients `gr` to `computed` (if any), less those
/// `reduce_replicated_grads` still sums (`later`): the parameters a backward has just added to.
fn report_computed<B: Backend>(computed: &mut Option<&mut dyn FnMut(&[usize], &mut [B::Buf])>, later: &[bool], gr: &mut [B::Buf], params: &[usize]) {
    if let Some(f) = computed.as_mut() {
        let added: Vec<usize> = params.iter().copied().filter(|&p| !later[p]).collect();
        f(&added, gr);
    }
}
