//! Bytes one rank holds, by category, for a model, a layout and a pipeline stage — two models:
//! - `gpu`: a bf16 Megatron-style run (bf16 weights, fp32 gradients, fp32 master weights and AdamW
//!   moments sharded over DP under ZeRO-1, the activation accounting of Korthikanti et al. 2022
//!   written out for Llama's tensors, communication buffers, a fixed CUDA/NCCL overhead);
//! - `cpu`: what this build's CPU backend allocates (everything f32), buffer by buffer as
//!   model/llama.rs, model/layer.rs, optim/, pipeline/executor.rs and the backend allocate them —
//!   checked against the counting allocator under real mpirun (tests/plan.rs).
//!
//! Activations in flight come from the real pipeline schedule: the slots the executor needs per
//! chunk (`Executor::slots_per_chunk`), not from a closed formula.

use super::{Layout, Recompute};
use crate::config::{Config, ModelConfig};
use crate::model::layout::{chunks, owned_params, Chunk, LocalDims};
use crate::model::params::{ParamTable, ShardKind};
use crate::optim::grad_layout::GradLayout;
use crate::pipeline::Executor;
use anyhow::Result;

/// Fixed per-GPU overhead outside the model: CUDA context, cuBLAS/cuBLASLt workspaces, NCCL
/// communicator buffers (one per group), caching-allocator fragmentation.
pub const CUDA_NCCL_OVERHEAD_BYTES: f64 = 3.0 * (1u64 << 30) as f64;

/// Bytes of one rank by category.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Memory {
    pub weights: f64,
    pub grads: f64,
    /// Master weights and AdamW moments.
    pub optimizer: f64,
    /// Activations kept for backward, for every micro-batch in flight.
    pub activations: f64,
    /// Communication staging: pipeline send/receive, gradient buckets, TP gathers, logits/CE.
    pub buffers: f64,
    /// Backward working set and other scratch.
    pub workspace: f64,
    /// Fixed overhead (CUDA context, NCCL); 0 on the CPU.
    pub overhead: f64,
}

impl Memory {
    pub fn total(&self) -> f64 {
        self.weights + self.grads + self.optimizer + self.activations + self.buffers + self.workspace + self.overhead
    }

    /// (name, bytes) in display order.
    pub fn rows(&self) -> [(&'static str, f64); 7] {
        [
            ("weights", self.weights),
            ("gradients", self.grads),
            ("optimizer", self.optimizer),
            ("activations", self.activations),
            ("comm buffers", self.buffers),
            ("workspace", self.workspace),
            ("CUDA/NCCL fixed", self.overhead),
        ]
    }
}

/// What a pipeline stage holds: its chunks, its TP share of the parameters, and the activation
/// slots the schedule needs per chunk.
pub struct StageShape {
    pub chunks: Vec<Chunk>,
    pub local: LocalDims,
    /// Elements of this rank's parameters (TP shards of the parameters its chunks own).
    pub params: usize,
    /// Elements of each parameter of the table on this rank (0 for those it does not hold).
    pub param_lens: Vec<usize>,
    pub slots: Vec<usize>,
}

impl StageShape {
    pub fn new(cfg: &Config, l: &Layout, stage: usize) -> Result<Self> {
        let m = &cfg.model;
        let chunks = chunks(m.num_layers, l.pp, l.vpp, stage)?;
        let table = ParamTable::llama(m);
        let local = LocalDims::new(m, l.tp, 0);
        let owned = owned_params(&table, &chunks);
        let param_lens: Vec<usize> =
            table.specs.iter().zip(&owned).map(|(s, &o)| if o { s.local_shape(l.tp).iter().product() } else { 0 }).collect();
        let params = param_lens.iter().sum();
        let microbatches = l.microbatches(cfg.train.global_batch);
        let slots = Executor::new(l.schedule, l.pp, l.vpp, stage, microbatches)?.slots_per_chunk();
        Ok(StageShape { chunks, local, params, param_lens, slots })
    }

    /// Layer-activation sets held at once: slots x layers, over the chunks.
    fn layer_sets(&self) -> f64 {
        self.chunks.iter().zip(&self.slots).map(|(c, &s)| (s * c.layers.len()) as f64).sum()
    }

    /// Slots of the chunk with the head (0 off the last stage).
    fn head_slots(&self) -> f64 {
        self.chunks.iter().zip(&self.slots).filter(|(c, _)| c.head).map(|(_, &s)| s as f64).sum()
    }

    fn has_head(&self) -> bool {
        self.chunks.iter().any(|c| c.head)
    }
}

/// Per-micro-batch sizes of one rank under layout `l`.
struct Dims {
    /// Tokens of a micro-batch.
    n: f64,
    /// Rows of the residual stream on this rank (n / tp under sequence parallelism).
    rows: f64,
    h: f64,
    /// Widths of this rank's shard: query heads x head dim, KV heads x head dim, FFN, vocabulary.
    qd: f64,
    kvd: f64,
    ffn: f64,
    vocab: f64,
    heads: f64,
    seq: f64,
    batch: f64,
}

fn dims(m: &ModelConfig, seq: usize, l: &Layout, local: &LocalDims) -> Dims {
    let n = (l.micro_batch * seq) as f64;
    let d = m.head_dim() as f64;
    Dims {
        n,
        rows: if l.sequence_parallel { n / l.tp as f64 } else { n },
        h: m.hidden_size as f64,
        qd: local.heads as f64 * d,
        kvd: local.kv_heads as f64 * d,
        ffn: local.ffn as f64,
        vocab: local.vocab as f64,
        heads: local.heads as f64,
        seq: seq as f64,
        batch: l.micro_batch as f64,
    }
}

/// Bytes one decoder layer keeps for backward per micro-batch in bf16 (Korthikanti et al. 2022,
/// section 4, counted for Llama's tensors: RMSNorm, GQA, SwiGLU, no dropout). Kept: both norm
/// inputs and both norm outputs (rows of the residual stream: split over TP under sequence
/// parallelism), Q, K, V, the attention output, gate, up and their SwiGLU product (split over TP),
/// and the attention probabilities `2 a s^2 b` without recomputation, or the flash-attention row
/// statistics (fp32) when the attention core is recomputed (selective). Full recomputation keeps
/// only the layer input.
pub fn gpu_layer_bytes(m: &ModelConfig, seq: usize, l: &Layout, local: &LocalDims, recompute: Recompute) -> f64 {
    let x = dims(m, seq, l, local);
    let resid = 2.0 * x.rows * x.h;
    if recompute == Recompute::Full {
        return resid;
    }
    let core = match recompute {
        Recompute::None => 2.0 * x.batch * x.heads * x.seq * x.seq,
        _ => 4.0 * x.batch * x.heads * x.seq,
    };
    4.0 * resid + 2.0 * x.n * (2.0 * x.qd + 2.0 * x.kvd + 3.0 * x.ffn) + core
}

/// Per-rank bytes of a bf16 GPU run in pipeline `stage`.
pub fn gpu(cfg: &Config, l: &Layout, stage: usize) -> Result<Memory> {
    let (m, t) = (&cfg.model, &cfg.train);
    let st = StageShape::new(cfg, l, stage)?;
    let x = dims(m, t.seq_len, l, &st.local);
    let p = st.params as f64;
    let layer = gpu_layer_bytes(m, t.seq_len, l, &st.local, l.recompute);
    let resid = 2.0 * x.rows * x.h;
    // The head keeps the final norm's input and output per micro-batch in flight.
    let activations = st.layer_sets() * layer + st.head_slots() * 2.0 * resid;
    let mut buffers = 0.0;
    if l.pp > 1 {
        buffers += 2.0 * resid; // an activation and a gradient being received
    }
    if l.sequence_parallel {
        buffers += 2.0 * x.n * x.h; // the all-gathered input of a column-parallel GEMM
    }
    if st.has_head() {
        buffers += 6.0 * x.n * x.vocab; // bf16 logits + fp32 softmax/gradient of one micro-batch
    }
    let bucket = p.min(cfg.parallel.bucket_size as f64);
    if l.dp > 1 {
        // The exchange runs in place in the gradient buffer; CUDA-aware MPI stages one block of
        // the largest bucket each way (NCCL's own buffers are in the fixed overhead).
        buffers += 2.0 * 4.0 * bucket / l.dp as f64;
    }
    // fp32 gradients: the whole buffer, or under ZeRO-2 this rank's blocks and two buckets in
    // flight (one filling while the last is reduce-scattered).
    let grads = if l.zero == 2 { 4.0 * p / l.dp as f64 + 2.0 * 4.0 * bucket } else { 4.0 * p };
    // Backward of one layer: the gradients of its activations; under full recomputation also
    // the recomputed activations themselves.
    let flash_layer = gpu_layer_bytes(m, t.seq_len, l, &st.local, Recompute::Selective);
    let workspace = if l.recompute == Recompute::Full { 2.0 * flash_layer } else { flash_layer };
    Ok(Memory {
        weights: 2.0 * p,
        grads,
        optimizer: if l.zero > 0 { 12.0 * p / l.dp as f64 } else { 12.0 * p },
        activations,
        buffers,
        workspace,
        overhead: CUDA_NCCL_OVERHEAD_BYTES,
    })
}

/// Per-rank bytes the CPU backend (f32 everywhere) allocates for training in pipeline `stage`
/// on data-parallel rank `dp_rank`: the model's weights, gradients and activation slots, the
/// optimizer's state and staging, the pipeline and collective staging, layer scratch, the
/// backend's thread scratch, and the step's batch. (Excluded: the data sampler, MPI
/// communicators, configuration — what exists before the trainer is built.)
pub fn cpu(cfg: &Config, l: &Layout, stage: usize, dp_rank: usize) -> Result<Memory> {
    let (m, t) = (&cfg.model, &cfg.train);
    let st = StageShape::new(cfg, l, stage)?;
    let x = dims(m, t.seq_len, l, &st.local);
    let f = 4.0; // bytes of an f32 (and of a u32 token id)
    let p = st.params as f64;
    let (n, rows, h) = (x.n, x.rows, x.h);

    // Activation slots (model/llama.rs Slot, model/layer.rs LayerActs/HeadActs): per layer its
    // input and its activations, or under full recomputation its input only and one set of
    // activations for the rank (counted as workspace below). None and selective are the same
    // here: the attention never keeps its probabilities.
    let layer = rows * h + rows + n * x.qd + 2.0 * n * x.kvd + n * x.qd + x.batch * x.heads * x.seq + rows * h + rows * h + rows + 3.0 * n * x.ffn;
    let full = l.recompute == Recompute::Full;
    let kept_per_layer = if full { rows * h } else { layer + rows * h };
    let head = rows * h + rows + n * x.vocab + n;
    let per_slot_fixed = 2.0 * n + 2.0 * rows * h; // ids, targets, the chunk's output and gradient
    let slots: f64 = st.slots.iter().sum::<usize>() as f64;
    let activations = f * (st.layer_sets() * kept_per_layer + slots * per_slot_fixed + st.head_slots() * head);

    // Optimizer (optim/zero.rs): the state, over the gradient buffer's layout (grad_layout.rs).
    let grads = GradLayout::new(&st.param_lens, cfg.parallel.bucket_size, l.dp);
    let optimizer = if l.zero > 0 {
        // Per segment of this rank's blocks: master, gradient, m, v; and the blocks on the host
        // (under ZeRO-2 the reduced gradient, accumulated over the micro-batches).
        let owned: usize = grads.block_parts(dp_rank).iter().map(|part| part.3).sum();
        f * (4.0 * owned as f64 + grads.block_total() as f64)
    } else {
        f * 2.0 * p // m and v
    };

    // Staging for communication: the host copy of the gradient buffer; pipeline host buffer; the
    // all-reduce send copy (comm.rs) of the TP group (without sequence parallelism, [n, h]), of
    // the DP group (without ZeRO, the largest bucket), of a replicated-KV group and of the
    // tied-embedding group; the host copies of layer.rs's Scratch and of llama.rs.
    let sp = l.sequence_parallel;
    let mut buffers = if l.zero == 2 { 0.0 } else { grads.total as f64 };
    if l.pp > 1 {
        buffers += rows * h;
    }
    if l.tp > 1 && !sp {
        buffers += n * h;
    }
    if l.dp > 1 && l.zero == 0 {
        buffers += grads.buckets.iter().map(|b| l.dp * b.block_len).max().unwrap_or(0) as f64;
    }
    let kv_replicated = l.tp > m.num_kv_heads;
    let kv_grad = h * x.kvd;
    if kv_replicated {
        buffers += kv_grad;
    }
    let tied_split = m.tie_embeddings && l.pp > 1;
    if tied_split && (stage == 0 || stage == l.pp - 1) {
        buffers += x.vocab * h; // the embedding group's all-reduce of the tied matrix's gradient
    }
    buffers += n * h.max(3.0) + if sp { rows * h } else { 0.0 } + 3.0 * n * l.tp as f64; // Scratch host
    buffers += 2.0 * n + kv_grad.max(if tied_split { x.vocab * h } else { 0.0 }); // llama.rs host
    let buffers = f * buffers;

    // Layer scratch (layer.rs Scratch; the recomputed layer activations), RoPE tables, the
    // backend's attention scratch (the largest of forward and backward re-layouts, kept per
    // thread) and the step's token batch (train.rs).
    let mut scratch = rows * h + 2.0 * n * h + 2.0 * n * x.qd + 2.0 * n * x.kvd + 3.0 * n * x.ffn + 6.0 * n;
    if full {
        scratch += layer;
    }
    if sp {
        scratch += 2.0 * rows * h + 2.0 * n * h;
    }
    let rope = 2.0 * x.seq * (m.head_dim() / 2) as f64;
    let attention = crate::backend::cpu::attention_scratch_elems(&crate::backend::AttnShape {
        batch: l.micro_batch,
        seq: t.seq_len,
        heads: st.local.heads,
        kv_heads: st.local.kv_heads,
        head_dim: m.head_dim(),
    }) as f64;
    let batch = (t.global_batch / l.dp * (t.seq_len + 1)) as f64;
    let workspace = f * (scratch + rope + attention + batch);
    let grad_bytes = if l.zero == 2 { f * zero2_grads_in_flight(cfg, l, &st, &grads, stage) as f64 } else { f * p };
    Ok(Memory { weights: f * p, grads: grad_bytes, optimizer, activations, buffers, workspace, overhead: 0.0 })
}

/// Elements of gradient the CPU backend holds at once under ZeRO-2 besides this rank's blocks
/// (optim/zero2.rs): the gradients summed over other ranks after the backward, kept for the
/// step (norm weights under sequence parallelism, replicated KV heads, a tied embedding split
/// over the pipeline: `Llama::reduced_after_backward`), the two largest buckets' staging (one
/// filling while the one before it still waits for its last parameter), the largest block a
/// reduce-scatter receives and the largest group of gradients one backward writes at once (a
/// layer's, the head's or the embedding's).
fn zero2_grads_in_flight(cfg: &Config, l: &Layout, st: &StageShape, grads: &GradLayout, stage: usize) -> usize {
    let m = &cfg.model;
    let table = ParamTable::llama(m);
    let lens = &st.param_lens;
    let tied_split = m.tie_embeddings && l.pp > 1 && (stage == 0 || stage == l.pp - 1);
    let late = |p: usize| match table.specs[p].shard {
        _ if p == table.embed => tied_split,
        ShardKind::KvHeads { .. } => l.tp > m.num_kv_heads,
        ShardKind::Replicated => l.sequence_parallel,
        _ => false,
    };
    let kept: usize = (0..lens.len()).filter(|&p| late(p)).map(|p| lens[p]).sum();
    let mut buckets: Vec<usize> = grads.buckets.iter().map(|b| l.dp * b.block_len).collect();
    buckets.sort_unstable_by(|a, b| b.cmp(a));
    let staging: usize = buckets.iter().take(2).sum();
    let group = |ids: &[usize]| ids.iter().map(|&p| lens[p]).sum::<usize>();
    let head = group(&[table.final_norm, table.lm_head]);
    let largest = table.layers.iter().map(|ids| group(&ids.all())).chain([head, lens[table.embed]]).max().unwrap_or(0);
    let block = grads.buckets.iter().map(|b| b.block_len).max().unwrap_or(0);
    kept + staging + block + largest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn layout(cfg: &Config, world: usize, recompute: Recompute) -> Layout {
        Layout::from_config(cfg, world, recompute).unwrap()
    }

    #[test]
    fn model_state_is_counted_by_hand_for_swallow_7b() {
        // tp 2, pp 2, dp 8, ZeRO-1. Stage 0: half the (43,176 x 4,096) embedding and 16 layers of
        // 4 attention matrices 4096 x 4096 / 2, 3 MLP matrices 4096 x 11008 / 2, two full norms.
        let cfg = Config::load("swallow-7b", &[]).unwrap();
        let l = layout(&cfg, 32, Recompute::Selective);
        let p0 = 43_176.0 * 4096.0 / 2.0 + 16.0 * (4.0 * 4096.0 * 4096.0 / 2.0 + 3.0 * 4096.0 * 11008.0 / 2.0 + 2.0 * 4096.0);
        let m = gpu(&cfg, &l, 0).unwrap();
        assert_eq!((m.weights, m.grads, m.optimizer), (2.0 * p0, 4.0 * p0, 12.0 * p0 / 8.0));
        // REFERENCE.md: the distributed optimizer holds 6 + 12/DP bytes per parameter, 18 without.
        assert_eq!((m.weights + m.grads + m.optimizer) / p0, 6.0 + 12.0 / 8.0);
        let plain = gpu(&cfg, &Layout { zero: 0, ..l }, 0).unwrap();
        assert_eq!((plain.weights + plain.grads + plain.optimizer) / p0, 18.0);
        // ZeRO-2: the gradients sharded too, with two buckets of 40M fp32 elements in flight.
        let z2 = gpu(&cfg, &Layout { zero: 2, ..l }, 0).unwrap();
        assert_eq!((z2.weights, z2.grads, z2.optimizer), (2.0 * p0, 4.0 * p0 / 8.0 + 2.0 * 4.0 * 40e6, 12.0 * p0 / 8.0));
    }

    #[test]
    fn layer_activations_follow_korthikanti() {
        let cfg = Config::load("llama2-7b", &["train.seq_len=2048".into(), "train.micro_batch=2".into()]).unwrap();
        let (m, s, b, h, a) = (&cfg.model, 2048.0, 2.0, 4096.0, 32.0);
        let one = layout(&cfg, 1, Recompute::None);
        let bytes = |l: &Layout, r: Recompute| gpu_layer_bytes(m, 2048, l, &LocalDims::new(m, l.tp, 0), r);
        // Without recomputation the attention probabilities (bf16, no dropout in Llama) are kept;
        // selective recomputation replaces them by fp32 row statistics.
        let none = bytes(&one, Recompute::None);
        let selective = bytes(&one, Recompute::Selective);
        assert_eq!(none - selective, 2.0 * a * s * s * b - 4.0 * a * s * b);
        // Korthikanti's 34 s b h is GPT's (4h GeLU MLP, dropout masks); Llama-2-7B's bf16 tensors
        // give 16 + 6 x 11008 / 4096 = 32.1 of them (8: both norms' inputs and outputs; 8: q, k,
        // v and the attention output; 6 f / h: gate, up and the SwiGLU output), plus the statistics.
        let per_sbh = (selective - 4.0 * a * s * b) / (s * b * h);
        assert!((per_sbh - (16.0 + 6.0 * 11008.0 / 4096.0)).abs() < 1e-9, "{per_sbh}");
        // TP with sequence parallelism divides every term by t.
        for tp in [2, 4, 8] {
            let l = Layout { tp, dp: 1, sequence_parallel: true, ..one };
            assert!((bytes(&l, Recompute::Selective) * tp as f64 - selective).abs() < 1e-6);
            assert!((bytes(&l, Recompute::None) * tp as f64 - none).abs() < 1e-6);
            // Full recomputation keeps the layer input only: 2 s b h / t.
            assert_eq!(bytes(&l, Recompute::Full), 2.0 * s * b * h / tp as f64);
        }
    }

    #[test]
    fn activations_scale_with_the_micro_batches_the_schedule_keeps_in_flight() {
        // 1F1B: stage s runs pp - s forwards before its first backward (Megatron's warm-up + 1);
        // the executor's lists may post one receive before a slot frees, so one more at most.
        let cfg = Config::load("llama2-7b", &["parallel.pp=4".into(), "train.global_batch=64".into()]).unwrap();
        let l = layout(&cfg, 4, Recompute::Selective);
        let per_layer = gpu_layer_bytes(&cfg.model, cfg.train.seq_len, &l, &LocalDims::new(&cfg.model, 1, 0), Recompute::Selective);
        for stage in 0..4 {
            let slots = StageShape::new(&cfg, &l, stage).unwrap().slots;
            assert_eq!(slots.len(), 1);
            assert!(slots[0] >= 4 - stage && slots[0] <= 5 - stage, "stage {stage}: {slots:?}");
            if stage == 0 {
                assert_eq!(slots[0], 4);
            }
            let acts = gpu(&cfg, &l, stage).unwrap().activations;
            let head = if stage == 3 { 4.0 * cfg.train.seq_len as f64 * 4096.0 } else { 0.0 };
            assert!((acts - slots[0] as f64 * (8.0 * per_layer + head)).abs() < 1.0, "stage {stage}");
        }
    }
}
