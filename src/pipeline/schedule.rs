//! Pipeline schedules as data (PP): GPipe, 1F1B, interleaved 1F1B and ZeroBubble's ZB-H1, each
//! generated as the list of actions one pipeline rank runs in order (compute, send, receive), and
//! the layer layout over virtual stages. Semantics follow Megatron-LM: the model is cut into
//! `pp * vpp` virtual stages, local chunk `c` of stage `s` holds virtual stage `c * pp + s`, and the
//! compute order per rank is Megatron's (warm-up forwards, steady one-forward-one-backward,
//! cool-down backwards). ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism") splits each
//! backward into B (input gradients, on the critical path) and W (weight gradients, which can
//! wait): 1F1B's order with B in place of the backward and stage s's W passes each run s
//! micro-batches late, the rest filling the cool-down.
//!
//! Where sends and receives go depends on how the executor sends (`SendMode`):
//! - `Buffered` (MPI_Isend): each Send right after the compute that produced it, each Recv right
//!   before the compute that needs it. The bubble is then exactly (pp-1)(t_f+t_b) per rank for any
//!   forward/backward costs, but with blocking sends these lists deadlock (1F1B, pp=2 already).
//! - `Rendezvous` (blocking MPI_Send, NCCL send): all ranks' compute orders are replayed in unit
//!   time steps and each message is exchanged at the step its consumer starts, where both ranks sit
//!   between computes; exchanges at the same step are ordered alike on both sides. Every list is
//!   thus a projection of one global sequence of events, so no executor can deadlock on them, even
//!   if every Send waits for its Recv. The bubble is exact when t_f = t_b; interleaved lists stall
//!   somewhat more when t_b != t_f (the exchange points assume equal costs). `schedule` gives these.

use crate::config::Recompute;
use anyhow::{bail, ensure, Result};
use std::ops::Range;

/// One step of a pipeline rank. `chunk` is the local model chunk (0..vpp); `stage` is a pipeline rank.
/// Send/receive names the local chunk on *this* rank: the chunk whose output (activation) or input
/// gradient is sent, or the chunk whose input (activation) or output gradient is received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Forward {
        microbatch: usize,
        chunk: usize,
    },
    Backward {
        microbatch: usize,
        chunk: usize,
    },
    /// ZeroBubble's B: the backward's input gradients only (sent on like a `Backward`'s).
    BackwardInput {
        microbatch: usize,
        chunk: usize,
    },
    /// ZeroBubble's W: the weight gradients the `BackwardInput` of the same micro-batch left.
    BackwardWeight {
        microbatch: usize,
        chunk: usize,
    },
    SendActivation {
        to_stage: usize,
        microbatch: usize,
        chunk: usize,
    },
    RecvActivation {
        from_stage: usize,
        microbatch: usize,
        chunk: usize,
    },
    SendGrad {
        to_stage: usize,
        microbatch: usize,
        chunk: usize,
    },
    RecvGrad {
        from_stage: usize,
        microbatch: usize,
        chunk: usize,
    },
}

/// A message as both of its ends see it: the activation (or gradient) of `microbatch` crossing the
/// boundary between virtual stages `boundary` and `boundary + 1`. Both ends compute the same value,
/// so an executor can derive an MPI tag from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Message {
    pub grad: bool,
    pub boundary: usize,
    pub microbatch: usize,
}

impl Action {
    /// The message a send or receive on `stage` carries (None for compute).
    pub fn message(&self, stage: usize, pp: usize) -> Option<Message> {
        let v = |chunk: usize| virtual_stage(pp, stage, chunk);
        match *self {
            Action::Forward { .. }
            | Action::Backward { .. }
            | Action::BackwardInput { .. }
            | Action::BackwardWeight { .. } => None,
            Action::SendActivation {
                microbatch, chunk, ..
            } => Some(Message {
                grad: false,
                boundary: v(chunk),
                microbatch,
            }),
            Action::RecvActivation {
                microbatch, chunk, ..
            } => Some(Message {
                grad: false,
                boundary: v(chunk).wrapping_sub(1),
                microbatch,
            }),
            Action::SendGrad {
                microbatch, chunk, ..
            } => Some(Message {
                grad: true,
                boundary: v(chunk).wrapping_sub(1),
                microbatch,
            }),
            Action::RecvGrad {
                microbatch, chunk, ..
            } => Some(Message {
                grad: true,
                boundary: v(chunk),
                microbatch,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// GPipe: all forwards, then all backwards. Peak activations: every micro-batch.
    AllForwardAllBackward,
    /// PipeDream-flush 1F1B: (pp - stage - 1) warm-up forwards, steady one-forward-one-backward,
    /// cool-down backwards. Same bubble as GPipe, at most pp - stage micro-batches in flight.
    OneFOneB,
    /// Megatron's interleaved 1F1B over `vpp` chunks per rank; bubble shrinks by 1/vpp.
    /// With vpp = 1 it is exactly OneFOneB (Megatron dispatches the same way).
    Interleaved,
    /// ZeroBubble's ZB-H1 (one chunk per rank): 1F1B with the backward split into B and W and
    /// stage s's W passes s micro-batches late. Bubble (pp-1)(F+B-W) instead of 1F1B's
    /// (pp-1)(F+B+W) when W costs at most F and B; at most min(pp, m) micro-batches in flight on
    /// any stage, 1F1B's peak (its first stage's).
    ZbH1,
}

impl ScheduleKind {
    pub const ALL: [ScheduleKind; 4] = [
        ScheduleKind::AllForwardAllBackward,
        ScheduleKind::OneFOneB,
        ScheduleKind::Interleaved,
        ScheduleKind::ZbH1,
    ];

    /// The config spelling (`parallel.schedule`).
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::AllForwardAllBackward => "gpipe",
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::Interleaved => "interleaved",
            ScheduleKind::ZbH1 => "zb-h1",
        }
    }

    /// The schedule run when `parallel.schedule` is not set: interleaved over virtual stages, else 1F1B.
    pub fn default_for(vpp: usize) -> ScheduleKind {
        if vpp > 1 {
            ScheduleKind::Interleaved
        } else {
            ScheduleKind::OneFOneB
        }
    }

    /// The schedule spelled `name`, if any.
    pub fn from_name(name: &str) -> Option<ScheduleKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the lists run each backward as a B and a W pass (`BackwardInput`, `BackwardWeight`).
    pub fn splits_backward(self) -> bool {
        self == ScheduleKind::ZbH1
    }

    /// Refuses a split backward under full recomputation: the W pass reads each micro-batch's
    /// saved activations, which full recomputation keeps only for the layer being recomputed.
    pub fn check_recompute(self, recompute: Recompute) -> Result<()> {
        if self.splits_backward() && recompute == Recompute::Full {
            bail!(
                "parallel.schedule = {:?} with train.recompute = \"full\": the split backward's W pass \
                 reads each micro-batch's saved activations, which full recomputation does not keep; \
                 use train.recompute = \"selective\" or another schedule",
                self.name()
            );
        }
        Ok(())
    }

    /// Refuses a split backward under ZeRO-2 (for now): ZeRO-2 streams each backward's
    /// gradients into the owners' blocks, and under a split backward the linear maps' weight
    /// gradients come only in the W pass; the two have not been run together.
    pub fn check_zero(self, zero: u8) -> Result<()> {
        if self.splits_backward() && zero == 2 {
            bail!(
                "parallel.schedule = {:?} with parallel.zero = 2 (--zero 2): ZeRO-2's per-backward gradient \
                 streaming does not follow the split backward's W pass yet; use parallel.zero = 1 or another schedule",
                self.name()
            );
        }
        Ok(())
    }
}

/// How the executor's sends behave; decides where sends and receives sit in the lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// A Send completes only once the receiver has posted the matching Recv (blocking MPI_Send
    /// of a large message; NCCL send on one stream).
    Rendezvous,
    /// A Send completes at once (MPI_Isend, completed before its buffer is reused).
    Buffered,
}

/// Virtual stage held by local `chunk` of pipeline rank `stage` (Megatron's interleaved assignment).
pub fn virtual_stage(pp: usize, stage: usize, chunk: usize) -> usize {
    chunk * pp + stage
}

/// Layers per virtual stage (index = virtual stage, length pp * vpp). The first
/// `num_layers % (pp * vpp)` virtual stages get one extra layer; the last virtual stage, which also
/// carries the LM head and the loss, therefore never gets an extra one. Refuses layouts where a
/// virtual stage would get no layer.
pub fn layers_per_stage(num_layers: usize, pp: usize, vpp: usize) -> Result<Vec<usize>> {
    ensure!(
        pp >= 1 && vpp >= 1,
        "pipeline sizes must be >= 1 (got pp={pp}, vpp={vpp})"
    );
    let stages = pp * vpp;
    ensure!(
        num_layers >= stages,
        "{num_layers} layers cannot fill pp x vpp = {pp} x {vpp} = {stages} virtual stages \
         (each needs at least one layer)"
    );
    let (base, extra) = (num_layers / stages, num_layers % stages);
    Ok((0..stages).map(|v| base + usize::from(v < extra)).collect())
}

/// The layer ranges held by each local chunk of `stage` (index = chunk).
pub fn stage_layers(
    num_layers: usize,
    pp: usize,
    vpp: usize,
    stage: usize,
) -> Result<Vec<Range<usize>>> {
    ensure!(
        stage < pp,
        "stage {stage} outside a pipeline of {pp} stages"
    );
    let counts = layers_per_stage(num_layers, pp, vpp)?;
    let starts: Vec<usize> = counts
        .iter()
        .scan(0, |acc, n| {
            let s = *acc;
            *acc += n;
            Some(s)
        })
        .collect();
    Ok((0..vpp)
        .map(|c| {
            let v = virtual_stage(pp, stage, c);
            starts[v]..starts[v] + counts[v]
        })
        .collect())
}

/// The action list of pipeline rank `stage`, safe for blocking (rendezvous) sends.
pub fn schedule(
    kind: ScheduleKind,
    pp: usize,
    vpp: usize,
    microbatches: usize,
    stage: usize,
) -> Result<Vec<Action>> {
    ensure!(
        stage < pp,
        "stage {stage} outside a pipeline of pp={pp} stages"
    );
    Ok(schedule_all(kind, pp, vpp, microbatches, SendMode::Rendezvous)?.swap_remove(stage))
}

/// The action lists of all pipeline ranks (index = stage), placed for `sends`.
pub fn schedule_all(
    kind: ScheduleKind,
    pp: usize,
    vpp: usize,
    microbatches: usize,
    sends: SendMode,
) -> Result<Vec<Vec<Action>>> {
    validate(kind, pp, vpp, microbatches)?;
    let orders: Vec<Vec<Compute>> = (0..pp)
        .map(|s| compute_order(kind, pp, vpp, microbatches, s))
        .collect();
    place_communication(&orders, pp, vpp, microbatches, sends)
}

fn validate(kind: ScheduleKind, pp: usize, vpp: usize, m: usize) -> Result<()> {
    ensure!(pp >= 1, "pipeline size pp must be >= 1 (got {pp})");
    ensure!(
        vpp >= 1,
        "virtual pipeline size vpp must be >= 1 (got {vpp})"
    );
    ensure!(m >= 1, "need at least one micro-batch (got {m})");
    match kind {
        ScheduleKind::AllForwardAllBackward | ScheduleKind::OneFOneB | ScheduleKind::ZbH1
            if vpp > 1 =>
        {
            bail!(
                "the {} schedule runs one chunk per rank (got vpp={vpp}); use vpp=1, or the \
                 interleaved schedule",
                kind.name()
            )
        }
        ScheduleKind::Interleaved if vpp > 1 => {
            ensure!(
                pp >= 2,
                "interleaved schedule needs pp >= 2 (got pp={pp}, vpp={vpp}): with one stage the \
                 chunks would send to themselves; use vpp=1"
            );
            ensure!(
                m.is_multiple_of(pp),
                "interleaved schedule needs micro-batches divisible by pp (got {m} micro-batches, pp={pp})"
            );
        }
        _ => {}
    }
    Ok(())
}

/// A compute pass of one (micro-batch, chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Forward,
    Backward,
    BackwardInput,
    BackwardWeight,
}

impl Pass {
    /// The message kind the pass produces for a neighbour (activation 0, gradient 1), if any.
    fn sends(self) -> Option<usize> {
        match self {
            Pass::Forward => Some(0),
            Pass::Backward | Pass::BackwardInput => Some(1),
            Pass::BackwardWeight => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Compute {
    pass: Pass,
    microbatch: usize,
    chunk: usize,
}

impl Compute {
    fn action(self) -> Action {
        let (microbatch, chunk) = (self.microbatch, self.chunk);
        match self.pass {
            Pass::Forward => Action::Forward { microbatch, chunk },
            Pass::Backward => Action::Backward { microbatch, chunk },
            Pass::BackwardInput => Action::BackwardInput { microbatch, chunk },
            Pass::BackwardWeight => Action::BackwardWeight { microbatch, chunk },
        }
    }
}

/// The compute order of one rank.
fn compute_order(
    kind: ScheduleKind,
    pp: usize,
    vpp: usize,
    m: usize,
    stage: usize,
) -> Vec<Compute> {
    let on = |pass| {
        move |microbatch| Compute {
            pass,
            microbatch,
            chunk: 0,
        }
    };
    let one_f_one_b_warmup = (pp - stage - 1).min(m);
    match kind {
        ScheduleKind::AllForwardAllBackward => (0..m)
            .map(on(Pass::Forward))
            .chain((0..m).map(on(Pass::Backward)))
            .collect(),
        ScheduleKind::OneFOneB => interleaved_order(pp, 1, m, one_f_one_b_warmup),
        ScheduleKind::Interleaved if vpp == 1 => interleaved_order(pp, 1, m, one_f_one_b_warmup),
        ScheduleKind::Interleaved => {
            let warmup = ((pp - stage - 1) * 2 + (vpp - 1) * pp).min(m * vpp);
            interleaved_order(pp, vpp, m, warmup)
        }
        ScheduleKind::ZbH1 => zb_h1_order(m, stage, one_f_one_b_warmup),
    }
}

/// Warm-up forwards, steady 1F1B, cool-down backwards over the k-th forward / k-th backward of
/// Megatron's interleaved numbering (vpp = 1 gives plain 1F1B with micro-batch k).
fn interleaved_order(pp: usize, vpp: usize, m: usize, warmup: usize) -> Vec<Compute> {
    let total = m * vpp;
    let at = |k: usize, backward: bool| {
        let group = pp * vpp;
        let chunk = (k % group) / pp;
        let chunk = if backward { vpp - 1 - chunk } else { chunk };
        Compute {
            pass: if backward { Pass::Backward } else { Pass::Forward },
            microbatch: (k / group) * pp + k % pp,
            chunk,
        }
    };
    let mut out: Vec<Compute> = (0..warmup).map(|k| at(k, false)).collect();
    for k in 0..total - warmup {
        out.push(at(k + warmup, false));
        out.push(at(k, true));
    }
    out.extend((total - warmup..total).map(|k| at(k, true)));
    out
}

/// ZB-H1 on `stage`: 1F1B's `warmup` forwards, then per steady step a forward and a B, and from
/// step `stage` on the W of the oldest micro-batch whose W is due (stage s thus holds
/// warmup + s + 1 = pp micro-batches, like the first stage of 1F1B); in the cool-down each B is
/// followed by one W, and the W passes left over close the list. The last stages' deferred W
/// passes fill the time they would otherwise wait for the B passes of the stages after them.
fn zb_h1_order(m: usize, stage: usize, warmup: usize) -> Vec<Compute> {
    let at = |pass, microbatch| Compute {
        pass,
        microbatch,
        chunk: 0,
    };
    let mut out: Vec<Compute> = (0..warmup).map(|k| at(Pass::Forward, k)).collect();
    let mut next_w = 0;
    for k in 0..m - warmup {
        out.push(at(Pass::Forward, warmup + k));
        out.push(at(Pass::BackwardInput, k));
        if k >= stage {
            out.push(at(Pass::BackwardWeight, next_w));
            next_w += 1;
        }
    }
    for k in m - warmup..m {
        out.push(at(Pass::BackwardInput, k));
        out.push(at(Pass::BackwardWeight, next_w));
        next_w += 1;
    }
    out.extend((next_w..m).map(|k| at(Pass::BackwardWeight, k)));
    out
}

/// Replays all ranks' compute orders in unit time steps (every compute takes one step) and places
/// each message by `sends` (see the file comment). A W pass waits only for its own rank's B, which
/// the order puts before it, and sends nothing.
fn place_communication(
    orders: &[Vec<Compute>],
    pp: usize,
    vpp: usize,
    m: usize,
    sends: SendMode,
) -> Result<Vec<Vec<Action>>> {
    let nv = pp * vpp;
    // start[g][v][mb]: the step the compute producing message kind g (0 activation, 1 gradient)
    // started; it ends one step later. steps[s][i]: the step of orders[s][i].
    let mut start = vec![vec![vec![None::<usize>; m]; nv]; 2];
    let mut steps: Vec<Vec<usize>> = orders.iter().map(|o| Vec::with_capacity(o.len())).collect();
    let mut t = 0;
    while steps.iter().zip(orders).any(|(st, o)| st.len() < o.len()) {
        let mut started = Vec::new();
        for (s, order) in orders.iter().enumerate() {
            let Some(op) = order.get(steps[s].len()) else {
                continue;
            };
            let v = virtual_stage(pp, s, op.chunk);
            let done = |g: usize, v: usize| start[g][v][op.microbatch].is_some_and(|b| b < t);
            let ready = match op.pass {
                Pass::Forward => v == 0 || done(0, v - 1),
                Pass::Backward | Pass::BackwardInput => {
                    done(0, v) && (v + 1 == nv || done(1, v + 1))
                }
                Pass::BackwardWeight => true,
            };
            if ready {
                started.push((s, op.pass.sends(), v, op.microbatch));
            }
        }
        ensure!(
            !started.is_empty(),
            "internal: compute orders stall at step {t} (pp={pp}, vpp={vpp}, m={m})"
        );
        for (s, g, v, mb) in started {
            steps[s].push(t);
            if let Some(g) = g {
                start[g][v][mb] = Some(t);
            }
        }
        t += 1;
    }
    let at = |g: usize, v: usize, mb: usize| start[g][v][mb].expect("every compute ran");
    // Per-rank events keyed by (step, slot, global tie-break): slot 0 = exchanges before the step's
    // compute, 1 = the compute, 2 = sends right after it.
    type Keyed = ((usize, u8, Message), Action);
    let mut events: Vec<Vec<Keyed>> = vec![Vec::new(); pp];
    let none = Message {
        grad: false,
        boundary: 0,
        microbatch: 0,
    };
    for (s, order) in orders.iter().enumerate() {
        for (op, &step) in order.iter().zip(&steps[s]) {
            let (microbatch, chunk) = (op.microbatch, op.chunk);
            let v = virtual_stage(pp, s, chunk);
            events[s].push(((step, 1, none), op.action()));
            let Some(g) = op.pass.sends() else { continue };
            let backward = g == 1;
            let to = if backward {
                v.checked_sub(1)
            } else {
                Some(v + 1).filter(|&w| w < nv)
            };
            let Some(w) = to else { continue };
            let (r, rc) = (w % pp, w / pp);
            let msg = Message {
                grad: backward,
                boundary: v.min(w),
                microbatch,
            };
            let (send, recv) = if backward {
                let send = Action::SendGrad {
                    to_stage: r,
                    microbatch,
                    chunk,
                };
                (
                    send,
                    Action::RecvGrad {
                        from_stage: s,
                        microbatch,
                        chunk: rc,
                    },
                )
            } else {
                let send = Action::SendActivation {
                    to_stage: r,
                    microbatch,
                    chunk,
                };
                (
                    send,
                    Action::RecvActivation {
                        from_stage: s,
                        microbatch,
                        chunk: rc,
                    },
                )
            };
            let consumer = at(g, w, microbatch);
            let (send_key, recv_key) = match sends {
                SendMode::Buffered => ((step, 2, msg), (consumer, 0, msg)),
                SendMode::Rendezvous => ((consumer, 0, msg), (consumer, 0, msg)),
            };
            events[s].push((send_key, send));
            events[r].push((recv_key, recv));
        }
    }
    Ok(events
        .into_iter()
        .map(|mut ev| {
            ev.sort_by_key(|e| e.0);
            ev.into_iter().map(|e| e.1).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_spread_remainder_to_first_virtual_stages() {
        assert_eq!(layers_per_stage(10, 2, 2).unwrap(), vec![3, 3, 2, 2]);
        assert_eq!(layers_per_stage(8, 4, 1).unwrap(), vec![2; 4]);
        assert_eq!(stage_layers(10, 2, 2, 1).unwrap(), vec![3..6, 8..10]);
        let err = layers_per_stage(3, 2, 2).unwrap_err().to_string();
        assert!(
            err.contains("3 layers") && err.contains("4 virtual stages"),
            "{err}"
        );
    }

    #[test]
    fn one_f_one_b_order_matches_megatron() {
        use Action::*;
        let s0 = schedule(ScheduleKind::OneFOneB, 2, 1, 3, 0).unwrap();
        let computes: Vec<Action> = s0
            .iter()
            .copied()
            .filter(|a| matches!(a, Forward { .. } | Backward { .. }))
            .collect();
        let f = |microbatch| Forward {
            microbatch,
            chunk: 0,
        };
        let b = |microbatch| Backward {
            microbatch,
            chunk: 0,
        };
        assert_eq!(computes, vec![f(0), f(1), b(0), f(2), b(1), b(2)]);
        assert_eq!(
            s0[1],
            SendActivation {
                to_stage: 1,
                microbatch: 0,
                chunk: 0
            }
        );
    }

    #[test]
    fn invalid_layouts_are_refused_with_numbers() {
        let err = |k, pp, vpp, m, s| schedule(k, pp, vpp, m, s).unwrap_err().to_string();
        let e = err(ScheduleKind::Interleaved, 4, 2, 6, 0);
        assert!(e.contains("6 micro-batches") && e.contains("pp=4"), "{e}");
        assert!(err(ScheduleKind::OneFOneB, 2, 2, 4, 0).contains("vpp=2"));
        assert!(err(ScheduleKind::Interleaved, 1, 2, 4, 0).contains("pp=1"));
        assert!(err(ScheduleKind::OneFOneB, 2, 1, 4, 2).contains("stage 2"));
        assert!(err(ScheduleKind::OneFOneB, 2, 1, 0, 0).contains("got 0"));
        assert!(err(ScheduleKind::OneFOneB, 0, 1, 1, 0).contains("pp=0"));
    }
}
