//! Predicted step time of a layout on a GPU kind: the compute of each virtual stage from its
//! FLOPs at the kind's sustained rate, the tensor-parallel collectives and pipeline sends on the
//! critical path, the pipeline schedule itself run by the simulator (the bubble is what the real
//! schedule leaves idle, not a formula), then the data-parallel gradient exchange and the
//! optimizer step (bound by HBM bandwidth), neither overlapped with compute: the trainer starts
//! each bucket's reduce-scatter during the backward pass (NCCL, side stream), but until that is
//! measured on GPUs the plan keeps the whole exchange on the critical path (an upper bound), and
//! likewise the TP input-gradient reductions the backward pass overlaps with weight-gradient GEMMs.

use super::hardware::GpuKind;
use super::memory::StageShape;
use super::{Layout, Recompute};
use crate::config::Config;
use crate::metrics::flops_per_token;
use crate::model::params::padded_vocab;
use crate::pipeline::{layers_per_stage, schedule_all, simulate, SendMode, SimConfig};
use anyhow::Result;

/// Where the seconds of one optimizer step go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTime {
    /// One micro-batch through the slowest virtual stage, forward and backward (incl. its TP
    /// collectives and pipeline sends).
    pub forward_s: f64,
    pub backward_s: f64,
    /// The weight-gradient GEMMs' part of `backward_s`: ZeroBubble's W pass, which the split
    /// schedules (zb-h1) run apart from the rest (B).
    pub weight_s: f64,
    /// The whole pipeline schedule of a step (compute + bubble).
    pub pipeline_s: f64,
    /// Idle share of the pipeline ranks' time (from the simulator).
    pub bubble: f64,
    /// Parts of `pipeline_s` spent in TP collectives and pipeline sends on one rank.
    pub tp_comm_s: f64,
    pub pp_comm_s: f64,
    pub dp_comm_s: f64,
    pub optimizer_s: f64,
    pub step_s: f64,
    pub tokens_per_s: f64,
    /// Model TFLOP/s per GPU (PaLM FLOPs, recomputation not counted) and its share of the peak.
    pub tflops: f64,
    pub mfu: f64,
}

/// Bytes/s of the slowest link of a group spanning `span` consecutive ranks in Megatron's order
/// (nodes of `gpus_per_node` consecutive ranks): NVLink inside a node, else the GPU's share of
/// the node's InfiniBand.
fn link_bps(gpu: &GpuKind, span: usize) -> f64 {
    if span <= gpu.gpus_per_node {
        gpu.intra_node_bps()
    } else {
        gpu.inter_node_bps()
    }
}

/// Bytes one GPU touches per parameter in an AdamW update: reads fp32 gradient, master, m, v;
/// writes master, m, v and the bf16 weight.
const ADAMW_BYTES_PER_PARAM: f64 = 4.0 * 4.0 + 3.0 * 4.0 + 2.0;

pub fn step_time(cfg: &Config, l: &Layout, gpu: &GpuKind) -> Result<StepTime> {
    let (m, t) = (&cfg.model, &cfg.train);
    let (h, s) = (m.hidden_size as f64, t.seq_len as f64);
    let n = (l.micro_batch * t.seq_len) as f64;
    let tp = l.tp as f64;
    let d = m.head_dim() as f64;
    // Parameters of one layer (norms left out) and the vocabulary the LM head computes.
    let layer_params = h * (m.num_heads as f64 * d) * 2.0 + 2.0 * h * (m.num_kv_heads as f64 * d) + 3.0 * h * m.ffn_hidden_size as f64;
    let vocab = padded_vocab(m.vocab_size, l.tp, m.vocab_divisible_by) as f64;
    // Forward FLOPs per token (PaLM's convention: attention core 4 s h per layer, no causal halving).
    let layer_fwd = 2.0 * layer_params + 4.0 * s * h;
    let head_fwd = 2.0 * h * vocab;
    let recompute_extra = match l.recompute {
        Recompute::None => 0.0,
        Recompute::Selective => 4.0 * s * h,
        Recompute::Full => layer_fwd,
    };
    // TP: per layer two all-gathers + two reduce-scatters (SP) or two all-reduces of an [n, h]
    // bf16 tensor forward, the same backward; the same bytes either way. The head: one more each.
    let tp_bps = gpu.intra_node_bps();
    let tp_op = if l.tp > 1 { (tp - 1.0) / tp * 2.0 * n * h / tp_bps } else { 0.0 };
    let pp_bps = link_bps(gpu, l.world());
    let rows = if l.sequence_parallel { n / tp } else { n };
    let p2p = if l.pp > 1 { 2.0 * rows * h / pp_bps } else { 0.0 };

    let layers = layers_per_stage(m.num_layers, l.pp, l.vpp)?;
    let last = layers.len() - 1;
    let rate = gpu.sustained_flops();
    // ZeroBubble's W pass of the slowest virtual stage: its weight-gradient GEMMs (2 FLOPs per
    // parameter and token), the part of the backward the split schedules defer.
    let (mut fwd, mut bwd, mut wgt, mut tp_f, mut tp_b) = (0.0f64, 0.0f64, 0.0f64, 0.0, 0.0);
    for (v, &nl) in layers.iter().enumerate() {
        let nl = nl as f64;
        let head = if v == last { head_fwd } else { 0.0 };
        let (f_tp, b_tp) = (
            tp_op * (4.0 * nl + (v == last) as u8 as f64 + (v == 0) as u8 as f64),
            tp_op * (4.0 * nl + if l.recompute == Recompute::Full { 4.0 * nl } else { 0.0 } + (v == last) as u8 as f64),
        );
        let f = n * (nl * layer_fwd + head) / tp / rate + f_tp;
        let b = n * (2.0 * (nl * layer_fwd + head) + nl * recompute_extra) / tp / rate + b_tp;
        let w = n * (nl * 2.0 * layer_params + head) / tp / rate;
        if f + b > fwd + bwd {
            (fwd, bwd, wgt, tp_f, tp_b) = (f, b, w, f_tp, b_tp);
        }
    }
    let (fwd, bwd) = (fwd + p2p, bwd + p2p);

    // The real schedule, every rank's list run together; costs in microseconds.
    let microbatches = l.microbatches(t.global_batch);
    let lists = schedule_all(l.schedule, l.pp, l.vpp, microbatches, SendMode::Buffered)?;
    let us = |x: f64| ((x * 1e6).round() as u64).max(1);
    let (b_cost, w_cost) = if l.schedule.splits_backward() { (us(bwd - wgt), us(wgt)) } else { (us(bwd), 0) };
    let sim = SimConfig { forward_cost: us(fwd), backward_cost: b_cost, weight_cost: w_cost, sends: SendMode::Buffered };
    let report = simulate(&lists, l.vpp, microbatches, &sim)?;
    let pipeline_s = report.makespan as f64 / 1e6;
    let chunk_runs = (microbatches * l.vpp) as f64;

    // DP: the largest stage's gradients reduce-scattered in fp32 (ZeRO-2: once per micro-batch)
    // and bf16 weights all-gathered (ZeRO-1 and 2), or fp32 gradients all-reduced.
    let params = (0..l.pp)
        .filter(|&st| st == 0 || st == l.pp - 1)
        .map(|st| StageShape::new(cfg, l, st).map(|s| s.params as f64))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .fold(0.0, f64::max);
    let dp = l.dp as f64;
    let dp_bytes = match l.zero {
        0 => 2.0 * (dp - 1.0) / dp * 4.0 * params,
        1 => (dp - 1.0) / dp * 6.0 * params,
        _ => (dp - 1.0) / dp * (4.0 * microbatches as f64 + 2.0) * params,
    };
    let dp_comm_s = if l.dp > 1 { dp_bytes / link_bps(gpu, l.tp * l.dp) } else { 0.0 };
    let updated = if l.zero > 0 { params / dp } else { params };
    let optimizer_s = updated * ADAMW_BYTES_PER_PARAM / (gpu.hbm_gbps * 1e9);

    let step_s = pipeline_s + dp_comm_s + optimizer_s;
    let tokens_per_s = (t.global_batch * t.seq_len) as f64 / step_s;
    let tflops = flops_per_token(m, t.seq_len) * tokens_per_s / l.world() as f64 / 1e12;
    Ok(StepTime {
        forward_s: fwd,
        backward_s: bwd,
        weight_s: wgt,
        pipeline_s,
        bubble: report.bubble_fraction(),
        tp_comm_s: chunk_runs * (tp_f + tp_b),
        pp_comm_s: chunk_runs * 2.0 * p2p,
        dp_comm_s,
        optimizer_s,
        step_s,
        tokens_per_s,
        tflops,
        mfu: tflops / gpu.peak_tflops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::hardware::GPU_KINDS;

    #[test]
    fn bubble_is_the_schedules() {
        // Uniform stages: the simulated bubble is (p - 1) / (m v + p - 1).
        let cfg = Config::load("llama2-7b", &["train.global_batch=64".into()]).unwrap();
        for (pp, vpp, dp) in [(2, 1, 4), (4, 1, 2), (4, 2, 2), (8, 2, 1)] {
            let mut c = cfg.clone();
            c.parallel.pp = pp;
            c.parallel.vpp = vpp;
            let l = Layout::from_config(&c, pp * dp, Recompute::Selective).unwrap();
            let t = step_time(&c, &l, &GPU_KINDS[0]).unwrap();
            let m = (64 / dp) as f64;
            let want = (pp as f64 - 1.0) / (m * vpp as f64 + pp as f64 - 1.0);
            assert!((t.bubble - want).abs() < 1e-9, "pp {pp} vpp {vpp}: {} vs {want}", t.bubble);
        }
    }

    #[test]
    fn zb_h1_bubble_is_the_zero_bubble_formula_below_1f1b() {
        // With F, B = backward - W, W in whole microseconds as the simulator takes them:
        // idle (p-1)(F+B-W) of a makespan m(F+B+W) + (p-1)(F+B-W) (m >= p, W <= F, B).
        let cfg = Config::load("llama2-7b", &["train.global_batch=64".into()]).unwrap();
        for (pp, dp) in [(2, 4), (4, 2), (8, 1)] {
            let mut c = cfg.clone();
            c.parallel.pp = pp;
            let one = step_time(&c, &Layout::from_config(&c, pp * dp, Recompute::Selective).unwrap(), &GPU_KINDS[0]).unwrap();
            c.parallel.schedule = Some("zb-h1".into());
            let t = step_time(&c, &Layout::from_config(&c, pp * dp, Recompute::Selective).unwrap(), &GPU_KINDS[0]).unwrap();
            let us = |x: f64| (x * 1e6).round();
            let (f, b, w) = (us(t.forward_s), us(t.backward_s - t.weight_s), us(t.weight_s));
            assert!(w <= f && w <= b, "pp {pp}: F {f} B {b} W {w}");
            let (m, p) = ((64 / dp) as f64, pp as f64);
            let idle = (p - 1.0) * (f + b - w);
            let want = idle / (m * (f + b + w) + idle);
            assert!((t.bubble - want).abs() < 1e-9, "pp {pp}: {} vs {want}", t.bubble);
            assert!(t.bubble < one.bubble && t.pipeline_s < one.pipeline_s, "pp {pp}: {t:?} vs 1F1B {one:?}");
        }
    }

    #[test]
    fn one_gpu_without_communication_runs_at_the_sustained_rate() {
        // tp = pp = dp = 1, no recomputation: the step is PaLM's FLOPs (metrics.rs, counted
        // independently) at the sustained rate, plus the optimizer; MFU = the sustained fraction
        // up to the norm weights PaLM counts and the optimizer's share.
        let cfg = Config::load("llama2-7b", &["train.global_batch=64".into()]).unwrap();
        let l = Layout::from_config(&cfg, 1, Recompute::None).unwrap();
        let g = GPU_KINDS[0];
        let t = step_time(&cfg, &l, &g).unwrap();
        let tokens = (64 * cfg.train.seq_len) as f64;
        let compute = flops_per_token(&cfg.model, cfg.train.seq_len) * tokens / g.sustained_flops();
        assert!((t.pipeline_s / compute - 1.0).abs() < 1e-4, "{} vs {compute}", t.pipeline_s);
        assert_eq!((t.bubble, t.tp_comm_s, t.pp_comm_s, t.dp_comm_s), (0.0, 0.0, 0.0, 0.0));
        assert!((t.step_s - t.pipeline_s - t.optimizer_s).abs() < 1e-9);
        assert!(t.mfu < g.sustained_fraction && t.mfu > 0.99 * g.sustained_fraction, "{}", t.mfu);
    }

    #[test]
    fn predicted_mfu_lands_on_the_reference_anchors() {
        // Calibration guard (docs/PLANNER.md): the sustained fractions in hardware.rs were set so
        // that Megatron's measured runs come out — Llama 3.1 8B at seq 8192 on TSUBAME 4.0 H100: 43-51% MFU
        // (tp 2 pp 1 here); Swallow 7B's layout on A100: about 180 TFLOP/s (58%).
        let h100 = GpuKind::by_name("h100-94").unwrap();
        let c = Config::load("llama3-8b", &["parallel.tp=2".into(), "parallel.zero=1".into(), "parallel.sequence_parallel=true".into()]).unwrap();
        let t = step_time(&c, &Layout::from_config(&c, 8, Recompute::Selective).unwrap(), &h100).unwrap();
        assert!((0.43..=0.51).contains(&t.mfu), "llama3-8b on 8 h100: {}", t.mfu);
        let a100 = GpuKind::by_name("a100").unwrap();
        let c = Config::load("swallow-7b", &[]).unwrap();
        let t = step_time(&c, &Layout::from_config(&c, 32, Recompute::Selective).unwrap(), &a100).unwrap();
        assert!((170.0..=190.0).contains(&t.tflops), "swallow-7b on 32 a100: {} TFLOP/s", t.tflops);
    }
}
