//! The analytic communication volume of one training step for a rank, per group, under the same
//! ring model the collectives layer counts with (comm.rs): all-reduce 2(p-1)/p of the buffer,
//! reduce-scatter and all-gather (p-1)/p of the whole, a point-to-point send its size. It is
//! derived from the layout alone, so the measured counts can be checked against it and the
//! planner can price a layout before it runs.

use crate::config::Config;
use crate::parallel::Topology;
use crate::model::layout::{chunks, LocalDims};
use crate::model::params::ParamTable;
use crate::backend::cuda::launch::Dtype;
use crate::optim::grad_layout::GradLayout;
use anyhow::Result;

/// Bytes per element of each kind of exchange: 4 (fp32) through host memory; on device buffers
/// (the CUDA backend with `--comm mpi|nccl`) the bf16 activations go as 2 bytes wherever no
/// sum needs fp32 (all-gathers and pipeline messages always, sums where the communicator sums
/// bf16: NCCL), and ZeRO-1 all-gathers bf16 weight copies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wire {
    pub tp_sum: f64,
    pub tp_gather: f64,
    pub pp_message: f64,
    pub dp_gather: f64,
}

impl Wire {
    /// Everything staged through host memory as f32.
    pub const HOST: Wire = Wire { tp_sum: 4.0, tp_gather: 4.0, pp_message: 4.0, dp_gather: 4.0 };

    /// What `groups` move: per group, host f32 without a device communicator.
    pub fn of(groups: &crate::parallel::ParallelGroups) -> Wire {
        let device = |g: &dyn crate::parallel::Collectives| g.device().is_some();
        let tp_sum = match groups.tp.device() {
            Some(dc) if dc.supports(Dtype::Bf16) => 2.0,
            _ => 4.0,
        };
        let bf16_if = |on_device: bool| if on_device { 2.0 } else { 4.0 };
        Wire { tp_sum, tp_gather: bf16_if(device(&*groups.tp)), pp_message: bf16_if(device(&*groups.pp)), dp_gather: bf16_if(device(&*groups.dp)) }
    }
}

/// Bytes per step sent by one rank in each group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    pub tp: f64,
    pub dp: f64,
    pub pp: f64,
}

fn all_reduce(p: usize, bytes: f64) -> f64 {
    2.0 * (p as f64 - 1.0) / p as f64 * bytes
}

/// Reduce-scatter or all-gather whose whole buffer is `bytes`.
fn scatter_or_gather(p: usize, bytes: f64) -> f64 {
    (p as f64 - 1.0) / p as f64 * bytes
}

/// Expected traffic of rank `topo.rank` in one step; `pipeline_sends` is the number of send
/// actions in its pipeline schedule (activations and gradients), `wire` what each exchange's
/// elements weigh.
pub fn per_step(cfg: &Config, topo: &Topology, pipeline_sends: usize, wire: Wire) -> Result<Traffic> {
    let (m, t, par) = (&cfg.model, &cfg.train, &cfg.parallel);
    let (tp, dp, pp) = (topo.tp, topo.dp, topo.pp);
    let n = (t.micro_batch * t.seq_len) as f64;
    let h = m.hidden_size as f64;
    let microbatches = (t.global_batch / (t.micro_batch * dp)) as f64;
    let sp = par.sequence_parallel && tp > 1;
    let rows = if sp { n / tp as f64 } else { n };
    let table = ParamTable::llama(m);
    let my_chunks = chunks(m.num_layers, pp, par.vpp, topo.pp_rank)?;
    let split_backward = cfg.schedule_kind()?.splits_backward();

    // Tensor parallel: per micro-batch and chunk, what layer.rs exchanges.
    let (act_sum, act_gather) = (wire.tp_sum * n * h, wire.tp_gather * n * h); // one [n, h] activation
    let mut tp_mb = 0.0;
    let mut norm_params = 0.0;
    for ch in &my_chunks {
        let layers = ch.layers.len() as f64;
        norm_params += 2.0 * layers + ch.head as u8 as f64;
        if sp {
            // forward: 2 gathers + 2 reduce-scatters per layer; embedding reduce-scatter; head
            // gather; backward: the same per layer; head reduce-scatter; embedding gather; and
            // the saved normalised rows gathered again for the weight gradients (2 per layer,
            // the head's).
            let (sum, gather) = (scatter_or_gather(tp, act_sum), scatter_or_gather(tp, act_gather));
            tp_mb += layers * 4.0 * (sum + gather);
            tp_mb += (ch.embed as u8 as f64 + ch.head as u8 as f64) * (sum + gather);
            tp_mb += (2.0 * layers + ch.head as u8 as f64) * gather;
            if split_backward {
                // ZeroBubble's W pass gathers the layer's kept output gradients again (2 per layer).
                tp_mb += 2.0 * layers * gather;
            }
        } else {
            // 2 all-reduces per layer forward and 2 backward; embedding forward; head backward.
            tp_mb += layers * 4.0 * all_reduce(tp, act_sum);
            tp_mb += (ch.embed as u8 as f64 + ch.head as u8 as f64) * all_reduce(tp, act_sum);
        }
        if ch.head {
            // vocab-parallel cross-entropy: all-gather of (max, sum-exp, target) per token (host f32)
            tp_mb += scatter_or_gather(tp, 4.0 * 3.0 * n * tp as f64);
        }
    }
    let mut tp_bytes = microbatches * tp_mb;
    if sp {
        tp_bytes += norm_params * all_reduce(tp, 4.0 * h);
    }

    // Data parallel: the gradient exchange over this rank's gradient buffer (its buckets with
    // their alignment and DP padding, optim/grad_layout.rs), the loss and the skip verdict (src/fault.rs; f64 each) and,
    // with ZeRO-1 and 2, the norm of the blocks.
    let owned = crate::model::layout::owned_params(&table, &my_chunks);
    let local = LocalDims::new(m, tp, topo.tp_rank);
    let lens: Vec<usize> = table.specs.iter().enumerate().map(|(p, s)| if owned[p] { s.local_shape(local.tp).iter().product() } else { 0 }).collect();
    let buffer = 4.0 * GradLayout::new(&lens, par.bucket_size, dp).total as f64;
    let gather = buffer / 4.0 * wire.dp_gather;
    // ZeRO-2 reduce-scatters every bucket once per micro-batch (optim/zero2.rs; a bucket holding
    // gradients summed after the backward, or spanning two interleaved chunks, is exchanged
    // once more or fewer times: not counted here).
    let grads = match par.zero {
        0 => all_reduce(dp, buffer),
        z => (if z == 2 { microbatches } else { 1.0 }) * scatter_or_gather(dp, buffer) + scatter_or_gather(dp, gather) + all_reduce(dp, 8.0),
    };
    let dp_bytes = if dp > 1 { grads + 2.0 * all_reduce(dp, 8.0) } else { 0.0 };

    // Pipeline: each send carries one [rows, h] activation or gradient; the loss is summed (f64).
    let pp_bytes = pipeline_sends as f64 * wire.pp_message * rows * h + all_reduce(pp, 8.0);
    Ok(Traffic { tp: tp_bytes, dp: dp_bytes, pp: pp_bytes })
}
