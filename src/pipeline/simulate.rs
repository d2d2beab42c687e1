//! Discrete-time simulator of all pipeline ranks' action lists together (PP): checks what an
//! executor relies on — every send meets its receive, no deadlock, each micro-batch runs forward and
//! backward exactly once per virtual stage in data-dependency order (a split backward: its B, then
//! its W) — and measures per-rank idle time (the bubble) and peak activations in flight. The
//! planner can price a schedule with it.
//!
//! Time model: a Forward of one chunk costs `forward_cost`, a BackwardInput (ZeroBubble's B)
//! `backward_cost`, a BackwardWeight (W) `weight_cost`, and a fused Backward B + W (integers);
//! communication takes no time but is ordered. `SendMode::Rendezvous` lets a Send complete only while
//! the receiver sits at the matching Recv (blocking MPI_Send on large messages, the strictest case);
//! `SendMode::Buffered` lets a Send complete at once (MPI_Isend) and a Recv wait for its message.

use super::schedule::{virtual_stage, Action, Message, SendMode};
use anyhow::{bail, ensure, Result};
use std::collections::HashSet;

#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    pub forward_cost: u64,
    /// The input-gradient part of a backward (all of it where `weight_cost` is 0).
    pub backward_cost: u64,
    /// The weight-gradient part of a backward.
    pub weight_cost: u64,
    pub sends: SendMode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// Time at which the last rank finished.
    pub makespan: u64,
    /// Per rank: time spent in Forward/Backward.
    pub busy: Vec<u64>,
    /// Per rank: makespan - busy (the pipeline bubble plus any stalls).
    pub idle: Vec<u64>,
    /// Per rank: most chunk-forwards whose backward (its W pass, when split) had not yet run
    /// (activations held).
    pub peak_in_flight: Vec<usize>,
}

impl SimReport {
    /// Idle share of all rank-time: sum(idle) / (ranks * makespan).
    pub fn bubble_fraction(&self) -> f64 {
        let total = self.makespan as f64 * self.idle.len() as f64;
        if total == 0.0 {
            0.0
        } else {
            self.idle.iter().sum::<u64>() as f64 / total
        }
    }
}

/// Runs `lists[stage]` for every pipeline rank (pp = lists.len()) with `vpp` chunks per rank and
/// `microbatches` micro-batches, and returns an error naming the rank and action on any violation.
pub fn simulate(
    lists: &[Vec<Action>],
    vpp: usize,
    microbatches: usize,
    cfg: &SimConfig,
) -> Result<SimReport> {
    let pp = lists.len();
    ensure!(
        pp >= 1 && vpp >= 1,
        "simulate: need pp >= 1 and vpp >= 1 (got pp={pp}, vpp={vpp})"
    );
    ensure!(
        cfg.forward_cost >= 1 && cfg.backward_cost >= 1,
        "simulate: compute costs must be >= 1"
    );
    let (nv, m) = (pp * vpp, microbatches);
    for (s, list) in lists.iter().enumerate() {
        for a in list {
            check_action(a, s, pp, vpp, m)?;
        }
    }
    // end[g][v][mb]: when that compute finished: g = 0 forward, 1 backward or B, 2 W.
    let mut end = vec![vec![vec![None::<u64>; m]; nv]; 3];
    // split[v][mb]: its backward ran as a B pass, so a W pass is due.
    let mut split = vec![vec![false; m]; nv];
    let mut pos = vec![0usize; pp];
    let mut free_at = vec![0u64; pp];
    let mut busy = vec![0u64; pp];
    let mut in_flight = vec![0usize; pp];
    let mut peak = vec![0usize; pp];
    let mut received: Vec<HashSet<Message>> = vec![HashSet::new(); pp]; // delivered, not yet used
    let mut sent: Vec<HashSet<Message>> = vec![HashSet::new(); pp]; // buffered, keyed by receiver
    let mut seen: HashSet<(usize, Message, bool)> = HashSet::new(); // (stage, message, is_send)
    let mut t = 0u64;
    loop {
        let mut progress = true;
        while progress {
            progress = false;
            for s in 0..pp {
                if free_at[s] > t {
                    continue;
                }
                let Some(&a) = lists[s].get(pos[s]) else {
                    continue;
                };
                let here = |what: &str| format!("stage {s}, action #{} {a:?}: {what}", pos[s]);
                match a {
                    Action::Forward {
                        microbatch: mb,
                        chunk,
                    }
                    | Action::Backward {
                        microbatch: mb,
                        chunk,
                    }
                    | Action::BackwardInput {
                        microbatch: mb,
                        chunk,
                    }
                    | Action::BackwardWeight {
                        microbatch: mb,
                        chunk,
                    } => {
                        let v = virtual_stage(pp, s, chunk);
                        let finished = |g: usize, v: usize| end[g][v][mb].is_some_and(|e| e <= t);
                        let (g, cost) = match a {
                            Action::Forward { .. } => (0, cfg.forward_cost),
                            Action::Backward { .. } => (1, cfg.backward_cost + cfg.weight_cost),
                            Action::BackwardInput { .. } => (1, cfg.backward_cost),
                            _ => (2, cfg.weight_cost),
                        };
                        ensure!(end[g][v][mb].is_none(), here("runs twice"));
                        match g {
                            0 => {
                                if v > 0 {
                                    let msg = Message {
                                        grad: false,
                                        boundary: v - 1,
                                        microbatch: mb,
                                    };
                                    ensure!(
                                        received[s].remove(&msg),
                                        here("input activation not received")
                                    );
                                    ensure!(
                                        finished(0, v - 1),
                                        here("forward before the previous virtual stage's")
                                    );
                                }
                                in_flight[s] += 1;
                                peak[s] = peak[s].max(in_flight[s]);
                            }
                            1 => {
                                ensure!(finished(0, v), here("backward before its forward"));
                                if v + 1 < nv {
                                    let msg = Message {
                                        grad: true,
                                        boundary: v,
                                        microbatch: mb,
                                    };
                                    ensure!(
                                        received[s].remove(&msg),
                                        here("output gradient not received")
                                    );
                                    ensure!(
                                        finished(1, v + 1),
                                        here("backward before the next virtual stage's backward")
                                    );
                                }
                                split[v][mb] = matches!(a, Action::BackwardInput { .. });
                                if !split[v][mb] {
                                    in_flight[s] -= 1;
                                }
                            }
                            _ => {
                                ensure!(
                                    finished(1, v) && split[v][mb],
                                    here("W pass before its B pass")
                                );
                                in_flight[s] -= 1;
                            }
                        }
                        end[g][v][mb] = Some(t + cost);
                        free_at[s] = t + cost;
                        busy[s] += cost;
                        pos[s] += 1;
                        progress = true;
                    }
                    Action::SendActivation { to_stage: r, .. }
                    | Action::SendGrad { to_stage: r, .. } => {
                        let msg = a.message(s, pp).expect("send carries a message");
                        let (g, v) = if msg.grad {
                            (1, msg.boundary + 1)
                        } else {
                            (0, msg.boundary)
                        };
                        ensure!(
                            end[g][v][msg.microbatch].is_some_and(|e| e <= t),
                            here("sends what this rank has not computed")
                        );
                        ensure!(seen.insert((s, msg, true)), here("sent twice"));
                        match cfg.sends {
                            SendMode::Buffered => {
                                sent[r].insert(msg);
                                pos[s] += 1;
                                progress = true;
                            }
                            SendMode::Rendezvous => {
                                let partner = lists[r].get(pos[r]).filter(|_| free_at[r] <= t);
                                let matches = partner
                                    .is_some_and(|b| is_recv(b) && b.message(r, pp) == Some(msg));
                                if matches {
                                    received[r].insert(msg);
                                    seen.insert((r, msg, false));
                                    pos[s] += 1;
                                    pos[r] += 1;
                                    progress = true;
                                } else {
                                    seen.remove(&(s, msg, true)); // not sent yet: retry later
                                }
                            }
                        }
                    }
                    Action::RecvActivation { .. } | Action::RecvGrad { .. } => {
                        // Rendezvous receives complete from the sender's side.
                        if cfg.sends == SendMode::Buffered {
                            let msg = a.message(s, pp).expect("receive carries a message");
                            if sent[s].remove(&msg) {
                                ensure!(seen.insert((s, msg, false)), here("received twice"));
                                received[s].insert(msg);
                                pos[s] += 1;
                                progress = true;
                            }
                        }
                    }
                }
            }
        }
        let running: Vec<u64> = free_at.iter().copied().filter(|&f| f > t).collect();
        if let Some(next) = running.into_iter().min() {
            t = next;
            continue;
        }
        if pos.iter().zip(lists).all(|(p, l)| *p == l.len()) {
            break;
        }
        let heads: Vec<String> = (0..pp)
            .map(|s| match lists[s].get(pos[s]) {
                Some(a) => format!("stage {s} waits at #{} {a:?}", pos[s]),
                None => format!("stage {s} done"),
            })
            .collect();
        bail!("deadlock at time {t}: {}", heads.join("; "));
    }
    for (s, left) in sent.iter().enumerate() {
        if let Some(msg) = left.iter().next() {
            bail!("{msg:?} sent to stage {s} was never received");
        }
    }
    for (s, left) in received.iter().enumerate() {
        if let Some(msg) = left.iter().next() {
            bail!("stage {s} received {msg:?} but never used it");
        }
    }
    for (g, name) in [(0, "forward"), (1, "backward"), (2, "its W pass")] {
        for (v, ends) in end[g].iter().enumerate() {
            let missing = |mb: usize| ends[mb].is_none() && (g < 2 || split[v][mb]);
            if let Some(mb) = (0..m).find(|&mb| missing(mb)) {
                bail!(
                    "micro-batch {mb} never ran {name} on virtual stage {v} (stage {}, chunk {})",
                    v % pp,
                    v / pp
                );
            }
        }
    }
    let makespan = free_at.iter().copied().max().unwrap_or(0);
    let idle = busy.iter().map(|b| makespan - b).collect();
    Ok(SimReport {
        makespan,
        busy,
        idle,
        peak_in_flight: peak,
    })
}

fn is_recv(a: &Action) -> bool {
    matches!(a, Action::RecvActivation { .. } | Action::RecvGrad { .. })
}

/// Range checks and topology checks: a send goes to the stage holding the neighbouring virtual stage.
fn check_action(a: &Action, s: usize, pp: usize, vpp: usize, m: usize) -> Result<()> {
    let (mb, chunk, peer) = match *a {
        Action::Forward { microbatch, chunk }
        | Action::Backward { microbatch, chunk }
        | Action::BackwardInput { microbatch, chunk }
        | Action::BackwardWeight { microbatch, chunk } => (microbatch, chunk, None),
        Action::SendActivation {
            to_stage,
            microbatch,
            chunk,
        }
        | Action::SendGrad {
            to_stage,
            microbatch,
            chunk,
        } => (microbatch, chunk, Some(to_stage)),
        Action::RecvActivation {
            from_stage,
            microbatch,
            chunk,
        }
        | Action::RecvGrad {
            from_stage,
            microbatch,
            chunk,
        } => (microbatch, chunk, Some(from_stage)),
    };
    ensure!(
        mb < m && chunk < vpp,
        "stage {s}: {a:?} outside {m} micro-batches x {vpp} chunks"
    );
    let v = virtual_stage(pp, s, chunk);
    let nv = pp * vpp;
    let neighbour = match a {
        Action::Forward { .. }
        | Action::Backward { .. }
        | Action::BackwardInput { .. }
        | Action::BackwardWeight { .. } => return Ok(()),
        Action::SendActivation { .. } | Action::RecvGrad { .. } => Some(v + 1).filter(|&w| w < nv),
        Action::RecvActivation { .. } | Action::SendGrad { .. } => v.checked_sub(1),
    };
    match neighbour {
        Some(w) if Some(w % pp) == peer => Ok(()),
        Some(w) => bail!(
            "stage {s}: {a:?} names stage {peer:?} but virtual stage {w} lives on stage {}",
            w % pp
        ),
        None => {
            bail!("stage {s}: {a:?} crosses the end of the pipeline (virtual stage {v} of {nv})")
        }
    }
}
