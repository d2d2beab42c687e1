//! `swallow plan --search`: every layout of a GPU count — TP dividing the GPUs per node (and
//! passing the tensor-parallel checks), PP dividing the layers, virtual stages dividing the
//! layers per stage (at most `MAX_VPP`), micro-batches of 1 to 8, each recomputation training
//! can run (selective, full), each schedule for the stages (interleaved over virtual stages,
//! else 1F1B and, with several stages, ZB-H1) — that passes the layout checks, priced for memory (the fullest
//! stage: the first holds the most micro-batches in flight and the extra layers, the last the
//! head) and, when it fits within the plannable memory (hardware.rs's headroom), for time.

use super::hardware::GpuKind;
use super::memory::{gpu as gpu_memory, Memory};
use super::time::{step_time, StepTime};
use super::{Layout, Recompute};
use crate::config::Config;
use crate::pipeline::ScheduleKind;
use anyhow::Result;

/// Largest number of virtual stages per rank tried.
pub const MAX_VPP: usize = 8;
const MICRO_BATCHES: [usize; 4] = [1, 2, 4, 8];

/// A priced layout.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub layout: Layout,
    /// The fullest pipeline stage's memory.
    pub memory: Memory,
    pub time: Option<StepTime>,
}

impl Candidate {
    pub fn fits(&self, gpu: &GpuKind) -> bool {
        gpu.fits(self.memory.total())
    }
}

/// The fullest stage's memory of a layout: the first or the last (middle stages hold no more
/// layers than the first, no more micro-batches in flight and neither embedding nor head).
pub fn peak_memory(cfg: &Config, l: &Layout) -> Result<Memory> {
    let first = gpu_memory(cfg, l, 0)?;
    let last = gpu_memory(cfg, l, l.pp - 1)?;
    Ok(if last.total() > first.total() { last } else { first })
}

/// Prices `l`: memory always, time only when it fits on `gpu`.
pub fn price(cfg: &Config, l: &Layout, gpu: &GpuKind) -> Result<Candidate> {
    let memory = peak_memory(cfg, l)?;
    let time = if gpu.fits(memory.total()) { Some(step_time(cfg, l, gpu)?) } else { None };
    Ok(Candidate { layout: *l, memory, time })
}

fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|d| n.is_multiple_of(*d)).collect()
}

/// Every valid layout of `gpus` GPUs for `cfg` (ZeRO from the config, sequence parallelism with
/// every TP > 1, the recomputations `swallow train` takes), priced; the number of valid layouts
/// is the length.
pub fn search(cfg: &Config, gpus: usize, gpu: &GpuKind) -> Result<Vec<Candidate>> {
    let layers = cfg.model.num_layers;
    let mut out = Vec::new();
    for tp in divisors(gpu.gpus_per_node) {
        for pp in divisors(layers) {
            if !gpus.is_multiple_of(tp * pp) {
                continue;
            }
            let dp = gpus / (tp * pp);
            let vpps: Vec<usize> = if pp == 1 { vec![1] } else { divisors(layers / pp).into_iter().filter(|&v| v <= MAX_VPP).collect() };
            for vpp in vpps {
                let schedules = match (pp, vpp) {
                    (_, 2..) => vec![ScheduleKind::Interleaved],
                    (1, _) => vec![ScheduleKind::OneFOneB],
                    _ => vec![ScheduleKind::OneFOneB, ScheduleKind::ZbH1],
                };
                for micro_batch in MICRO_BATCHES {
                    for recompute in [Recompute::Selective, Recompute::Full] {
                        for &schedule in &schedules {
                            let l = Layout {
                                tp,
                                pp,
                                vpp,
                                dp,
                                micro_batch,
                                recompute,
                                zero: cfg.parallel.zero,
                                sequence_parallel: tp > 1,
                                schedule,
                            };
                            if l.check(cfg).is_ok() {
                                out.push(price(cfg, &l, gpu)?);
                            }
                        }
                    }
                }
            }
        }
    }
    // Fitting layouts first, fastest first; then the rest by memory.
    out.sort_by(|a, b| match (&a.time, &b.time) {
        (Some(x), Some(y)) => x.step_s.total_cmp(&y.step_s),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.memory.total().total_cmp(&b.memory.total()),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_is_valid_and_the_fitting_ones_come_fastest_first() {
        let cfg = Config::load("swallow-13b", &[]).unwrap();
        let gpu = GpuKind::by_name("a100").unwrap();
        let all = search(&cfg, 64, &gpu).unwrap();
        assert!(!all.is_empty());
        for c in &all {
            let l = &c.layout;
            assert!(l.check(&cfg).is_ok() && l.world() == 64, "{l:?}");
            assert!(gpu.gpus_per_node.is_multiple_of(l.tp) && cfg.model.num_layers.is_multiple_of(l.pp), "{l:?}");
            assert_eq!(c.time.is_some(), c.fits(&gpu), "{l:?}");
            assert!(l.recompute != Recompute::None, "training cannot run without recomputation: {l:?}");
        }
        let times: Vec<f64> = all.iter().filter_map(|c| c.time.map(|t| t.step_s)).collect();
        assert!(!times.is_empty() && times.windows(2).all(|w| w[0] <= w[1]));
        assert!(all.iter().skip(times.len()).all(|c| c.time.is_none()), "fitting layouts first");
        assert!(all.iter().all(|c| c.fits(&gpu) == (c.memory.total() <= 0.9 * gpu.memory_bytes)), "10% headroom");
        // ZB-H1 is priced beside 1F1B wherever it can run: several stages, no virtual stages,
        // selective recomputation.
        let zb = |l: &Layout| l.schedule == ScheduleKind::ZbH1;
        assert!(all.iter().any(|c| zb(&c.layout)));
        assert!(all.iter().filter(|c| zb(&c.layout)).all(|c| c.layout.pp > 1 && c.layout.vpp == 1 && c.layout.recompute == Recompute::Selective));
        // ZeRO-2 (the config's stage) is never searched with ZB-H1, which training refuses.
        let z2 = search(&Config::load("swallow-13b", &["parallel.zero=2".into()]).unwrap(), 64, &gpu).unwrap();
        assert!(!z2.is_empty() && z2.iter().all(|c| c.layout.zero == 2 && !zb(&c.layout)));
        // Swallow's own 13B layout (tp 2, pp 4, dp 8, micro-batch 1, selective) is among them.
        assert!(all.iter().any(|c| {
            let l = &c.layout;
            (l.tp, l.pp, l.vpp, l.dp, l.micro_batch, l.recompute) == (2, 4, 1, 8, 1, Recompute::Selective)
        }));
    }
}
