//! Launch geometry of every kernel in kernels/*.cu: the one place that decides grid, block,
//! dynamic shared memory and argument order, used alike by real CUDA launches and by the
//! emulation build (emu.rs). Pointers are device addresses (`DevPtr`; host addresses under
//! emulation). Multi-kernel ops return their launches in order, and say how much scratch they
//! need; multi-tensor ops (AdamW, LAMB, grad norm, sum) take a segment table built here and uploaded by
//! the caller.

use crate::backend::{AdamWStep, AttnShape, LambStep};
use std::ffi::c_void;

/// A device address (a host address under emulation).
pub type DevPtr = u64;

/// Threads per block of the RMSNorm kernels (one warp per row in the forward).
const RMSNORM_THREADS: u32 = 128;
/// Threads per block of the RMSNorm backward: 8 warps, 4 of its rows each, so that the one
/// block per SM that 4096 rows give keeps twice the loads in flight of 4 warps.
const RMSNORM_BWD_THREADS: u32 = 256;
/// Rows per block of the RMSNorm backward: one dw partial per this many rows.
pub const RMSNORM_BWD_ROWS: usize = 32;
const ELEMWISE_THREADS: u32 = 256;
const CE_MAX_THREADS: usize = 256;
/// Elements per block of the multi-tensor kernels (AdamW, LAMB, grad norm, sum).
pub const MULTI_BLOCK_ELEMS: usize = 4096;
const MULTI_THREADS: u32 = 256;
const REDUCE_THREADS: u32 = 256;

/// Every kernel this file launches. `Launch::new` refuses any other name; tests check that these
/// are exactly the kernels of kernels/*.cu and that the run-time NVRTC build defines each.
pub const KERNELS: &[&str] = &[
    "rmsnorm_fwd",
    "rmsnorm_residual_fwd",
    "rmsnorm_bwd",
    "rmsnorm_dw_reduce",
    "rope_fwd",
    "rope_bwd",
    "swiglu_fwd",
    "swiglu_bwd",
    "cast_f32_to_bf16",
    "cast_bf16_to_f32",
    "add_assign_bf16",
    "add_assign_f32",
    "scale_bf16",
    "scale_f32",
    "fill_zero_bytes",
    "copy_bytes",
    "embedding_fwd",
    "embedding_bwd_links",
    "embedding_bwd",
    "cross_entropy_fwd_bwd",
    "cross_entropy_local_stats",
    "cross_entropy_finish",
    "adamw",
    "lamb_moments",
    "lamb_apply",
    "sumsq_partials",
    "sum_partials",
    "sumsq_reduce",
    "sumsq_reduce_each",
    "selftest_mma",
    "selftest_ldmatrix",
    "selftest_warp",
    "selftest_block",
    "flash_attn_fwd_d64",
    "flash_attn_fwd_d128",
    "flash_attn_bwd_dot",
    "flash_attn_bwd_dkdv_d64",
    "flash_attn_bwd_dkdv_d128",
    "flash_attn_bwd_dq_d64",
    "flash_attn_bwd_dq_d128",
];

/// One kernel launch: what cuLaunchKernel (or the emulation) needs.
#[derive(Clone, Debug)]
pub struct Launch {
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem: u32,
    /// Argument values in declaration order, each in the low bytes of a 64-bit slot.
    args: Vec<u64>,
}

fn to_u32(what: &str, v: usize) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| panic!("launch: {what} = {v} does not fit in 32 bits"))
}

fn to_i32(v: usize) -> u64 {
    i32::try_from(v).unwrap_or_else(|_| panic!("launch: argument {v} does not fit in an int")) as u32 as u64
}

impl Launch {
    fn new(kernel: &'static str, blocks: usize, threads: u32) -> Self {
        assert!(KERNELS.contains(&kernel), "launch: kernel {kernel} is not listed in launch::KERNELS");
        Launch { kernel, grid: [to_u32("grid", blocks.max(1)), 1, 1], block: [threads, 1, 1], smem: 0, args: Vec::new() }
    }
    fn ptr(mut self, p: DevPtr) -> Self {
        self.args.push(p);
        self
    }
    fn int(mut self, v: usize) -> Self {
        self.args.push(to_i32(v));
        self
    }
    fn u64(mut self, v: usize) -> Self {
        self.args.push(v as u64);
        self
    }
    fn f32(mut self, v: f32) -> Self {
        self.args.push(v.to_bits() as u64);
        self
    }
    /// cuLaunchKernel's `kernelParams`: one pointer per argument value, valid while `self` lives.
    /// (x86-64 and the GPU are little-endian, so a 32-bit argument is its slot's first bytes.)
    pub fn params(&self) -> Vec<*mut c_void> {
        self.args.iter().map(|a| a as *const u64 as *mut c_void).collect()
    }
}

// ---- RMSNorm ------------------------------------------------------------------------------
pub fn rmsnorm_fwd(out: DevPtr, rstd: DevPtr, x: DevPtr, w: DevPtr, rows: usize, dim: usize, eps: f32) -> Launch {
    let rows_per_block = (RMSNORM_THREADS / 32) as usize;
    Launch::new("rmsnorm_fwd", rows.div_ceil(rows_per_block), RMSNORM_THREADS)
        .ptr(out)
        .ptr(rstd)
        .ptr(x)
        .ptr(w)
        .int(rows)
        .int(dim)
        .f32(eps)
}

/// Fused residual add: `residual_out = x + res` (bf16; may alias `x` or `res`), then
/// `out = RMSNorm(residual_out)` with fp32 `rstd`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_residual_fwd(residual_out: DevPtr, out: DevPtr, rstd: DevPtr, x: DevPtr, res: DevPtr, w: DevPtr, rows: usize, dim: usize, eps: f32) -> Launch {
    let rows_per_block = (RMSNORM_THREADS / 32) as usize;
    Launch::new("rmsnorm_residual_fwd", rows.div_ceil(rows_per_block), RMSNORM_THREADS)
        .ptr(residual_out)
        .ptr(out)
        .ptr(rstd)
        .ptr(x)
        .ptr(res)
        .ptr(w)
        .int(rows)
        .int(dim)
        .f32(eps)
}

/// fp32 elements of scratch the RMSNorm backward needs (the dw partials).
pub fn rmsnorm_bwd_scratch(rows: usize, dim: usize) -> usize {
    rows.div_ceil(RMSNORM_BWD_ROWS) * dim
}

/// Accumulates `dx` (bf16) and `dw` (fp32); `scratch` holds `rmsnorm_bwd_scratch` floats.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd(
    dx: DevPtr,
    dw: DevPtr,
    scratch: DevPtr,
    dout: DevPtr,
    x: DevPtr,
    w: DevPtr,
    rstd: DevPtr,
    rows: usize,
    dim: usize,
) -> [Launch; 2] {
    let parts = rows.div_ceil(RMSNORM_BWD_ROWS);
    [
        Launch::new("rmsnorm_bwd", parts, RMSNORM_BWD_THREADS)
            .ptr(dx)
            .ptr(scratch)
            .ptr(dout)
            .ptr(x)
            .ptr(w)
            .ptr(rstd)
            .int(rows)
            .int(dim)
            .int(RMSNORM_BWD_ROWS),
        Launch::new("rmsnorm_dw_reduce", dim.div_ceil(RMSNORM_THREADS as usize), RMSNORM_THREADS)
            .ptr(dw)
            .ptr(scratch)
            .int(parts)
            .int(dim),
    ]
}

// ---- RoPE ---------------------------------------------------------------------------------
/// In place on bf16 `[batch, seq, heads, head_dim]` with fp32 `[seq, head_dim/2]` tables;
/// `inverse` selects the backward (transpose) rotation.
#[allow(clippy::too_many_arguments)]
pub fn rope(x: DevPtr, cos: DevPtr, sin: DevPtr, batch: usize, seq: usize, heads: usize, head_dim: usize, inverse: bool) -> Launch {
    assert!(head_dim.is_multiple_of(2), "rope: head_dim {head_dim} must be even");
    let pairs = batch * seq * heads * head_dim / 2;
    let name = if inverse { "rope_bwd" } else { "rope_fwd" };
    Launch::new(name, pairs.div_ceil(ELEMWISE_THREADS as usize), ELEMWISE_THREADS)
        .ptr(x)
        .ptr(cos)
        .ptr(sin)
        .int(batch * seq)
        .int(seq)
        .int(heads)
        .int(head_dim / 2)
}

// ---- elementwise: SwiGLU, casts (one thread per 8 elements) ---------------------------------
fn per8(kernel: &'static str, n: usize) -> Launch {
    Launch::new(kernel, n.div_ceil(8).div_ceil(ELEMWISE_THREADS as usize), ELEMWISE_THREADS)
}

pub fn swiglu_fwd(out: DevPtr, gate: DevPtr, up: DevPtr, n: usize) -> Launch {
    per8("swiglu_fwd", n).ptr(out).ptr(gate).ptr(up).u64(n)
}

pub fn swiglu_bwd(dgate: DevPtr, dup: DevPtr, dout: DevPtr, gate: DevPtr, up: DevPtr, n: usize) -> Launch {
    per8("swiglu_bwd", n).ptr(dgate).ptr(dup).ptr(dout).ptr(gate).ptr(up).u64(n)
}

pub fn cast_f32_to_bf16(out: DevPtr, input: DevPtr, n: usize) -> Launch {
    per8("cast_f32_to_bf16", n).ptr(out).ptr(input).u64(n)
}

pub fn cast_bf16_to_f32(out: DevPtr, input: DevPtr, n: usize) -> Launch {
    per8("cast_bf16_to_f32", n).ptr(out).ptr(input).u64(n)
}

// ---- elementwise: add, scale, zero fill, copy (one thread per 16 bytes) ---------------------
/// Element type of a buffer of the elementwise kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Bf16,
    F32,
}

impl Dtype {
    pub fn bytes(self) -> usize {
        match self {
            Dtype::Bf16 => 2,
            Dtype::F32 => 4,
        }
    }
}

/// A launch with one thread per 16 bytes of a `bytes`-byte output.
fn per16_bytes(kernel: &'static str, bytes: usize) -> Launch {
    Launch::new(kernel, bytes.div_ceil(16).div_ceil(ELEMWISE_THREADS as usize), ELEMWISE_THREADS)
}

/// `dst[..n] += src[..n]`, both of type `t`, summed in fp32 and rounded once to `t`.
pub fn add_assign(t: Dtype, dst: DevPtr, src: DevPtr, n: usize) -> Launch {
    let kernel = match t {
        Dtype::Bf16 => "add_assign_bf16",
        Dtype::F32 => "add_assign_f32",
    };
    per16_bytes(kernel, n * t.bytes()).ptr(dst).ptr(src).u64(n)
}

/// `x[..n] *= s` in fp32, rounded once to `t`.
pub fn scale(t: Dtype, x: DevPtr, s: f32, n: usize) -> Launch {
    let kernel = match t {
        Dtype::Bf16 => "scale_bf16",
        Dtype::F32 => "scale_f32",
    };
    per16_bytes(kernel, n * t.bytes()).ptr(x).f32(s).u64(n)
}

/// Zeroes `bytes` bytes at `dst` (+0 in any dtype).
pub fn fill_zero(dst: DevPtr, bytes: usize) -> Launch {
    per16_bytes("fill_zero_bytes", bytes).ptr(dst).u64(bytes)
}

/// Copies `bytes` bytes from `src` to a distinct `dst`.
pub fn copy(dst: DevPtr, src: DevPtr, bytes: usize) -> Launch {
    per16_bytes("copy_bytes", bytes).ptr(dst).ptr(src).u64(bytes)
}

// ---- embedding ----------------------------------------------------------------------------
/// `out[i] = table[ids[i] - vocab_start]` for `n` ids, bf16 rows of `dim`; `table` holds the
/// `rows` vocabulary rows from `vocab_start` (zero rows for ids outside them).
pub fn embedding_fwd(out: DevPtr, table: DevPtr, ids: DevPtr, n: usize, dim: usize, rows: usize, vocab_start: usize) -> Launch {
    let threads = n * dim.div_ceil(8);
    Launch::new("embedding_fwd", threads.div_ceil(ELEMWISE_THREADS as usize), ELEMWISE_THREADS)
        .ptr(out)
        .ptr(table)
        .ptr(ids)
        .int(n)
        .int(dim)
        .int(rows)
        .int(vocab_start)
}

/// Tokens j per block of `embedding_bwd_links` (kernels/embedding.cu's EMB_LINK_TILE).
const EMB_LINK_TILE: usize = 1024;

/// fp32-sized elements of scratch the embedding backward needs: two ints per token (its id's
/// next token, whether an earlier token has its id).
pub fn embedding_bwd_scratch(n: usize) -> usize {
    2 * n
}

/// `dtable[ids[i] - vocab_start] += dout[i]` for the ids of the shard's `rows` rows (fp32 table
/// gradient, bf16 `dout`), each element summed in token order; `scratch` holds
/// `embedding_bwd_scratch(n)` elements: zeroed, linked, then each distinct id's row written once.
#[allow(clippy::too_many_arguments)]
pub fn embedding_bwd(dtable: DevPtr, dout: DevPtr, ids: DevPtr, scratch: DevPtr, n: usize, dim: usize, rows: usize, vocab_start: usize) -> [Launch; 3] {
    let mut links = Launch::new("embedding_bwd_links", n.div_ceil(ELEMWISE_THREADS as usize), ELEMWISE_THREADS)
        .ptr(scratch)
        .ptr(ids)
        .int(n)
        .int(rows)
        .int(vocab_start);
    links.grid[1] = to_u32("grid", n.div_ceil(EMB_LINK_TILE));
    assert!(links.grid[1] <= 65535, "embedding_bwd: {n} tokens need more than 65535 tiles");
    let mut rows_once = Launch::new("embedding_bwd", n, ELEMWISE_THREADS)
        .ptr(dtable)
        .ptr(dout)
        .ptr(ids)
        .ptr(scratch)
        .int(n)
        .int(dim)
        .int(rows)
        .int(vocab_start);
    rows_once.grid[1] = to_u32("grid", dim.div_ceil(ELEMWISE_THREADS as usize));
    assert!(rows_once.grid[1] <= 65535, "embedding_bwd: dim {dim} needs more than 65535 column blocks");
    [fill_zero(scratch, embedding_bwd_scratch(n) * 4), links, rows_once]
}

// ---- cross-entropy ------------------------------------------------------------------------
/// A launch with one block per row whose threads cover a row in 8-element chunks (at most
/// `CE_MAX_THREADS`), with shared memory for the per-warp (max, sum) pairs.
fn ce_row_blocks(kernel: &'static str, rows: usize, vocab: usize) -> Launch {
    let threads = vocab.div_ceil(8).next_multiple_of(32).min(CE_MAX_THREADS) as u32;
    let mut l = Launch::new(kernel, rows, threads);
    l.smem = 2 * 4 * threads / 32;
    l
}

/// Fused softmax cross-entropy, one block per row: `losses` fp32 `[rows]`, bf16 `logits`
/// `[rows, vocab]` overwritten by `grad_scale * (softmax - onehot)` (0 in padding columns).
pub fn cross_entropy(logits: DevPtr, losses: DevPtr, targets: DevPtr, rows: usize, vocab: usize, valid_vocab: usize, grad_scale: f32) -> Launch {
    assert!(valid_vocab >= 1 && valid_vocab <= vocab, "cross_entropy: valid_vocab {valid_vocab} must be in 1..={vocab}");
    ce_row_blocks("cross_entropy_fwd_bwd", rows, vocab)
        .ptr(logits)
        .ptr(losses)
        .ptr(targets)
        .int(vocab)
        .int(valid_vocab)
        .f32(grad_scale)
}

fn ce_slice_check(what: &str, vocab_local: usize, valid_local: usize, vocab_start: usize) {
    assert!(vocab_local >= 1 && valid_local <= vocab_local, "{what}: valid_local {valid_local} must be in 0..={vocab_local}");
    assert!(vocab_start <= i32::MAX as usize, "{what}: vocab_start {vocab_start} does not fit in an int");
}

/// Vocab-parallel cross-entropy, phase 1, one block per row of this rank's bf16 slice `logits`
/// `[rows, vocab_local]` (first `valid_local` columns real, starting at global column
/// `vocab_start`): fp32 `stats` `[rows, 3]` = (max, sum of exp(logit - max), target logit or 0
/// when the target is outside the slice); (-inf, 0, 0) for a slice of padding only.
pub fn cross_entropy_local_stats(stats: DevPtr, logits: DevPtr, targets: DevPtr, rows: usize, vocab_local: usize, valid_local: usize, vocab_start: usize) -> Launch {
    ce_slice_check("cross_entropy_local_stats", vocab_local, valid_local, vocab_start);
    ce_row_blocks("cross_entropy_local_stats", rows, vocab_local)
        .ptr(stats)
        .ptr(logits)
        .ptr(targets)
        .int(vocab_local)
        .int(valid_local)
        .int(vocab_start)
}

/// Columns of one block of `cross_entropy_finish` (8 per thread).
pub const CE_FINISH_CHUNK: usize = 8 * CE_FINISH_THREADS as usize;
const CE_FINISH_THREADS: u32 = 256;

/// Vocab-parallel cross-entropy, phase 2, given `global` fp32 `[rows, 3]` = (max, sum of
/// exp(logit - max), target logit) combined over every slice: fp32 `losses` `[rows]`, and the
/// slice's logits overwritten by `grad_scale * (softmax - onehot)` (0 in padding columns). Grid
/// (rows, chunks of `CE_FINISH_CHUNK` columns).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_finish(logits: DevPtr, losses: DevPtr, global: DevPtr, targets: DevPtr, rows: usize, vocab_local: usize, valid_local: usize, vocab_start: usize, grad_scale: f32) -> Launch {
    ce_slice_check("cross_entropy_finish", vocab_local, valid_local, vocab_start);
    let mut l = Launch::new("cross_entropy_finish", rows, CE_FINISH_THREADS);
    l.grid[1] = to_u32("grid", vocab_local.div_ceil(CE_FINISH_CHUNK));
    assert!(l.grid[1] <= 65535, "cross_entropy_finish: {vocab_local} columns need more than 65535 chunks");
    l.ptr(logits)
        .ptr(losses)
        .ptr(global)
        .ptr(targets)
        .int(vocab_local)
        .int(valid_local)
        .int(vocab_start)
        .f32(grad_scale)
}

// ---- multi-tensor: AdamW, LAMB, grad norm, sum -------------------------------------------------
/// One tensor of an AdamW launch (mirrors `AdamSeg` in kernels/adamw.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AdamSeg {
    pub master: DevPtr,
    pub grad: DevPtr,
    pub m: DevPtr,
    pub v: DevPtr,
    /// The bf16 weight copy, or 0 for none.
    pub weight: DevPtr,
    pub n: u64,
    pub block0: u64,
}

/// One tensor of a LAMB launch (mirrors `LambSeg` in kernels/lamb.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LambSeg {
    pub master: DevPtr,
    pub grad: DevPtr,
    pub m: DevPtr,
    pub v: DevPtr,
    /// The bf16 weight copy, or 0 for none.
    pub weight: DevPtr,
    pub n: u64,
    pub block0: u64,
    pub decay: f32,
    /// The learning rate times the tensor's trust ratio (`lamb_apply`).
    pub step: f32,
}

/// One tensor of a grad-norm launch (mirrors `NormSeg` in kernels/norm.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NormSeg {
    pub x: DevPtr,
    pub n: u64,
    pub block0: u64,
}

/// Assigns each tensor its first block; returns the total number of blocks.
fn assign_blocks<'a>(segs: impl Iterator<Item = (&'a mut u64, u64)>) -> usize {
    let mut blocks = 0u64;
    for (block0, n) in segs {
        *block0 = blocks;
        blocks += n.div_ceil(MULTI_BLOCK_ELEMS as u64);
    }
    blocks as usize
}

/// Fills in `block0` of every segment (tensors of zero length are not allowed).
pub fn adamw_table(segs: &mut [AdamSeg]) -> usize {
    assert!(segs.iter().all(|s| s.n > 0), "adamw: empty tensor in the table");
    assign_blocks(segs.iter_mut().map(|s| (&mut s.block0, s.n)))
}

pub fn lamb_table(segs: &mut [LambSeg]) -> usize {
    assert!(segs.iter().all(|s| s.n > 0), "lamb: empty tensor in the table");
    assign_blocks(segs.iter_mut().map(|s| (&mut s.block0, s.n)))
}

pub fn norm_table(segs: &mut [NormSeg]) -> usize {
    assert!(segs.iter().all(|s| s.n > 0), "grad norm: empty tensor in the table");
    assign_blocks(segs.iter_mut().map(|s| (&mut s.block0, s.n)))
}

/// One AdamW step over every tensor of an uploaded table of `nseg` segments covering `blocks`
/// blocks (from `adamw_table`). Constants are computed as the CPU backend computes them.
pub fn adamw(table: DevPtr, nseg: usize, blocks: usize, h: AdamWStep) -> Launch {
    assert!(h.step >= 1, "adamw: step must be 1-based, got {}", h.step);
    let (lr, b1, b2) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64);
    let t = h.step.min(i32::MAX as u64) as i32;
    Launch::new("adamw", blocks, MULTI_THREADS)
        .ptr(table)
        .int(nseg)
        .u64(MULTI_BLOCK_ELEMS)
        .f32((1.0 - lr * h.weight_decay as f64) as f32)
        .f32(b1 as f32)
        .f32((1.0 - b1) as f32)
        .f32(b2 as f32)
        .f32((1.0 - b2) as f32)
        .f32((lr / (1.0 - b1.powi(t))) as f32)
        .f32((1.0 - b2.powi(t)).sqrt() as f32)
        .f32(h.eps)
}

/// LAMB's first phase over every tensor of an uploaded table of `nseg` segments covering `blocks`
/// blocks (from `lamb_table`): moments, and the update direction over the gradient. Constants
/// are computed as the CPU backend computes them.
pub fn lamb_moments(table: DevPtr, nseg: usize, blocks: usize, h: LambStep) -> Launch {
    assert!(h.step >= 1, "lamb: step must be 1-based, got {}", h.step);
    let (b1, b2) = (h.beta1 as f64, h.beta2 as f64);
    let t = h.step.min(i32::MAX as u64) as i32;
    let (bc1, bc2) = if h.bias_correction { (1.0 - b1.powi(t), 1.0 - b2.powi(t)) } else { (1.0, 1.0) };
    Launch::new("lamb_moments", blocks, MULTI_THREADS)
        .ptr(table)
        .int(nseg)
        .u64(MULTI_BLOCK_ELEMS)
        .f32(b1 as f32)
        .f32((1.0 - b1) as f32)
        .f32(b2 as f32)
        .f32((1.0 - b2) as f32)
        .f32((1.0 / bc1) as f32)
        .f32(bc2.sqrt() as f32)
        .f32(h.eps)
}

/// LAMB's second phase over the same table with each segment's `step` filled in.
pub fn lamb_apply(table: DevPtr, nseg: usize, blocks: usize) -> Launch {
    Launch::new("lamb_apply", blocks, MULTI_THREADS).ptr(table).int(nseg).u64(MULTI_BLOCK_ELEMS)
}

/// Sum of squares of each tensor of an uploaded table (from `norm_table`) into `nseg` f64 at
/// `out`, one per tensor; `partials` holds `blocks` floats.
pub fn sum_squares_each(table: DevPtr, nseg: usize, blocks: usize, partials: DevPtr, out: DevPtr) -> [Launch; 2] {
    [
        Launch::new("sumsq_partials", blocks, MULTI_THREADS).ptr(table).int(nseg).u64(MULTI_BLOCK_ELEMS).ptr(partials),
        Launch::new("sumsq_reduce_each", nseg, REDUCE_THREADS).ptr(out).ptr(partials).ptr(table).u64(MULTI_BLOCK_ELEMS),
    ]
}

/// Sum of squares of every tensor of an uploaded table (from `norm_table`) into one f64 at
/// `out`; `partials` holds `blocks` floats.
pub fn sum_squares(table: DevPtr, nseg: usize, blocks: usize, partials: DevPtr, out: DevPtr) -> [Launch; 2] {
    table_reduce("sumsq_partials", table, nseg, blocks, partials, out)
}

/// Sum of the elements of every tensor of an uploaded table (from `norm_table`; fp32, e.g.
/// the per-token losses) into one f64 at `out`, in a fixed order; `partials` holds `blocks` floats.
pub fn sum(table: DevPtr, nseg: usize, blocks: usize, partials: DevPtr, out: DevPtr) -> [Launch; 2] {
    table_reduce("sum_partials", table, nseg, blocks, partials, out)
}

/// Per-block fp32 partials by `kernel`, then one block adding them in double.
fn table_reduce(kernel: &'static str, table: DevPtr, nseg: usize, blocks: usize, partials: DevPtr, out: DevPtr) -> [Launch; 2] {
    [
        Launch::new(kernel, blocks, MULTI_THREADS)
            .ptr(table)
            .int(nseg)
            .u64(MULTI_BLOCK_ELEMS)
            .ptr(partials),
        Launch::new("sumsq_reduce", 1, REDUCE_THREADS).ptr(out).ptr(partials).int(blocks),
    ]
}

// ---- self-test of the SIMT primitives (kernels/selftest.cu) ---------------------------------
/// One warp, one mma.m16n8k16: `d = a * b + c` (a 16x16 bf16, b 16x8 bf16 `[k][n]`, c and d
/// 16x8 f32, row-major).
pub fn selftest_mma(d: DevPtr, a: DevPtr, b: DevPtr, c: DevPtr) -> Launch {
    Launch::new("selftest_mma", 1, 32).ptr(d).ptr(a).ptr(b).ptr(c)
}

/// One warp: cp.async of a 16x16 bf16 matrix into shared memory, then ldmatrix x4 and x4.trans;
/// `out` holds 8 words per lane.
pub fn selftest_ldmatrix(out: DevPtr, src: DevPtr) -> Launch {
    let mut l = Launch::new("selftest_ldmatrix", 1, 32).ptr(out).ptr(src);
    l.smem = 16 * 24 * 2;
    l
}

/// One block of `threads` (a multiple of 32); `out` holds 6 ints per thread.
pub fn selftest_warp(out: DevPtr, threads: usize) -> Launch {
    assert!(threads.is_multiple_of(32), "selftest_warp: {threads} threads is not whole warps");
    Launch::new("selftest_warp", 1, to_u32("block", threads)).ptr(out)
}

/// `blocks` blocks of `threads`; `out` holds 2 ints per block, the second zeroed beforehand.
pub fn selftest_block(out: DevPtr, blocks: usize, threads: usize) -> Launch {
    let mut l = Launch::new("selftest_block", blocks, to_u32("block", threads)).ptr(out);
    l.smem = to_u32("smem", 4 * threads);
    l
}

// ---- flash attention (kernels/flash_attention.cu) -------------------------------------------
/// Threads per block of the flash-attention kernels (4 warps of 16 rows each).
const FA_THREADS: u32 = 128;
/// Rows of the forward's query and key tiles, of the dQ pass's query tile and of the dK/dV
/// pass's key tile: the grid's x dimension counts these tiles.
const FA_TILE: usize = 64;
/// Warps per block of the dot-product pre-pass (one row each).
const FA_DOT_WARPS: usize = 8;
/// Head dimensions the flash-attention kernels are compiled for.
pub const ATT_HEAD_DIMS: [usize; 2] = [64, 128];
/// Dynamic shared memory a block may use without raising the kernel's
/// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; the flash kernels' tiles stay within it.
pub const SMEM_DEFAULT_LIMIT: u32 = 48 * 1024;

/// The tile sizes of the backward kernels for head dim `d`: (dK/dV query tile, dQ key tile).
fn fa_bwd_tiles(d: usize) -> (usize, usize) {
    if d == 128 {
        (16, 32)
    } else {
        (64, 64)
    }
}

/// Bytes of one shared bf16 tile of `rows` rows of head dim `d` (rows padded by 8 elements).
fn fa_tile_bytes(rows: usize, d: usize) -> usize {
    rows * (d + 8) * 2
}

fn fa_check(s: AttnShape, ptrs: &[DevPtr]) {
    assert!(s.kv_heads > 0 && s.heads.is_multiple_of(s.kv_heads), "attention: {} heads is not a multiple of {} kv heads", s.heads, s.kv_heads);
    assert!(ATT_HEAD_DIMS.contains(&s.head_dim), "attention: head_dim {} is not one of {ATT_HEAD_DIMS:?}", s.head_dim);
    assert!(s.seq > 0 && s.batch > 0, "attention: empty shape {s:?}");
    // cp.async moves 16-byte chunks of the bf16 rows.
    assert!(ptrs.iter().all(|p| p % 16 == 0), "attention: q, k, v, out and dout must be 16-byte aligned");
}

fn fa_kernel(s: AttnShape, d64: &'static str, d128: &'static str) -> &'static str {
    if s.head_dim == 64 {
        d64
    } else {
        d128
    }
}

/// A flash-attention launch: grid (tiles of 64 rows, `heads`, batch).
fn fa_launch(kernel: &'static str, s: AttnShape, heads: usize, smem: usize) -> Launch {
    let mut l = Launch::new(kernel, 1, FA_THREADS);
    l.grid = [to_u32("grid", s.seq.div_ceil(FA_TILE)), to_u32("grid", heads), to_u32("grid", s.batch)];
    l.smem = to_u32("smem", smem);
    assert!(l.smem <= SMEM_DEFAULT_LIMIT, "{kernel}: {smem} bytes of shared memory exceed {SMEM_DEFAULT_LIMIT}");
    l
}

/// The trailing arguments of the flash kernels: seq, heads, kv heads, and the score scale 1/sqrt(D).
fn fa_args(l: Launch, s: AttnShape) -> Launch {
    l.int(s.seq).int(s.heads).int(s.kv_heads).f32(1.0 / (s.head_dim as f32).sqrt())
}

/// Causal attention forward: `out` bf16 `[B,T,H,D]`, `lse` fp32 `[B,H,T]`.
pub fn attention_fwd(out: DevPtr, lse: DevPtr, q: DevPtr, k: DevPtr, v: DevPtr, s: AttnShape) -> Launch {
    fa_check(s, &[out, q, k, v]);
    let smem = 2 * fa_tile_bytes(FA_TILE, s.head_dim);
    fa_args(fa_launch(fa_kernel(s, "flash_attn_fwd_d64", "flash_attn_fwd_d128"), s, s.heads, smem).ptr(out).ptr(lse).ptr(q).ptr(k).ptr(v), s)
}

/// fp32 elements of scratch the attention backward needs (`D_i = dout_i . out_i` per query row).
pub fn attention_bwd_scratch(s: AttnShape) -> usize {
    s.batch * s.heads * s.seq
}

/// Overwrites `dq`, `dk`, `dv` (bf16); `scratch` holds `attention_bwd_scratch` floats. Three
/// launches: the row dot products, dK/dV per key tile, dQ per query tile.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(dq: DevPtr, dk: DevPtr, dv: DevPtr, scratch: DevPtr, dout: DevPtr, q: DevPtr, k: DevPtr, v: DevPtr, out: DevPtr, lse: DevPtr, s: AttnShape) -> [Launch; 3] {
    fa_check(s, &[dq, dk, dv, dout, q, k, v, out]);
    let d = s.head_dim;
    let (bq, bk) = fa_bwd_tiles(d);
    let rows = s.batch * s.seq * s.heads;
    let dkdv_smem = 2 * fa_tile_bytes(FA_TILE, d) + 2 * fa_tile_bytes(bq, d) + 2 * 4 * bq;
    let dq_smem = 4 * fa_tile_bytes(bk, d);
    [
        Launch::new("flash_attn_bwd_dot", rows.div_ceil(FA_DOT_WARPS), 32 * FA_DOT_WARPS as u32)
            .ptr(scratch)
            .ptr(dout)
            .ptr(out)
            .int(s.batch)
            .int(s.seq)
            .int(s.heads)
            .int(d),
        fa_args(
            fa_launch(fa_kernel(s, "flash_attn_bwd_dkdv_d64", "flash_attn_bwd_dkdv_d128"), s, s.kv_heads, dkdv_smem)
                .ptr(dk)
                .ptr(dv)
                .ptr(dout)
                .ptr(q)
                .ptr(k)
                .ptr(v)
                .ptr(lse)
                .ptr(scratch),
            s,
        ),
        fa_args(
            fa_launch(fa_kernel(s, "flash_attn_bwd_dq_d64", "flash_attn_bwd_dq_d128"), s, s.heads, dq_smem)
                .ptr(dq)
                .ptr(dout)
                .ptr(q)
                .ptr(k)
                .ptr(v)
                .ptr(lse)
                .ptr(scratch),
            s,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_listed_are_the_sources_kernels() {
        let mut listed: Vec<&str> = KERNELS.to_vec();
        let mut defined: Vec<&str> = super::super::sources::SOURCES.iter().flat_map(|s| s.kernels.iter().copied()).collect();
        listed.sort();
        defined.sort();
        assert_eq!(listed, defined);
    }
}
