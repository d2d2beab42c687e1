//! All-ranks simulation tests of the pipeline schedules (PP): every valid layout for
//! pp in {1,2,4,8}, vpp in {1,2,4}, m in 1..=16 runs without deadlock, matches every send with its
//! receive, respects data dependencies, and shows exactly the bubble and peak activations the
//! formulas predict; and the simulator itself rejects broken lists.

use super::*;

const F: u64 = 1; // forward cost per chunk
const B: u64 = 2; // backward cost per chunk

fn cfg(forward_cost: u64, backward_cost: u64, sends: SendMode) -> SimConfig {
    SimConfig {
        forward_cost,
        backward_cost,
        sends,
    }
}

/// Every valid (kind, pp, vpp, m) of the sweep.
fn layouts() -> Vec<(ScheduleKind, usize, usize, usize)> {
    let mut out = Vec::new();
    for kind in [
        ScheduleKind::AllForwardAllBackward,
        ScheduleKind::OneFOneB,
        ScheduleKind::Interleaved,
    ] {
        for pp in [1, 2, 4, 8] {
            for vpp in [1, 2, 4] {
                for m in 1..=16 {
                    if schedule_all(kind, pp, vpp, m, SendMode::Rendezvous).is_ok() {
                        out.push((kind, pp, vpp, m));
                    }
                }
            }
        }
    }
    out
}

/// Peak chunk-forwards held per rank: GPipe m; 1F1B min(pp - stage, m); interleaved Megatron's
/// warm-up + 1, capped at m * vpp.
fn expected_peak(kind: ScheduleKind, pp: usize, vpp: usize, m: usize, s: usize) -> usize {
    match kind {
        ScheduleKind::AllForwardAllBackward => m,
        _ if vpp == 1 => (pp - s).min(m),
        _ => ((pp - s - 1) * 2 + (vpp - 1) * pp + 1).min(m * vpp),
    }
}

/// The bubble formulas, in integers. With per-chunk costs tf, tb and n = m * vpp chunk-microbatches
/// per rank: idle per rank = (pp-1)(tf+tb) (Megatron's (p-1)(t_f+t_b)/v with t_f = v*tf per stage),
/// makespan = (n + pp - 1)(tf+tb), so idle/makespan = (p-1)/(m v + p - 1) (for v = 1:
/// (p-1)/(m+p-1)) and idle/busy = (p-1)/(v m), the paper's bubble time fraction.
fn assert_bubble(r: &SimReport, pp: usize, vpp: usize, m: usize, tf: u64, tb: u64, what: &str) {
    let (p, n) = (pp as u64, (m * vpp) as u64);
    let idle = (p - 1) * (tf + tb);
    assert_eq!(r.idle, vec![idle; pp], "{what}: idle per rank");
    assert_eq!(r.makespan, (n + p - 1) * (tf + tb), "{what}: makespan");
    for s in 0..pp {
        assert_eq!(
            r.idle[s] * n,
            (p - 1) * r.busy[s],
            "{what}: idle/busy = (p-1)/(v m)"
        );
        assert_eq!(
            r.idle[s] * (n + p - 1),
            (p - 1) * r.makespan,
            "{what}: idle/makespan"
        );
    }
    let fraction = (p - 1) as f64 / (n + p - 1) as f64;
    assert!(
        (r.bubble_fraction() - fraction).abs() < 1e-12,
        "{what}: bubble fraction"
    );
}

#[test]
fn sweep_covers_every_kind_and_refuses_the_rest() {
    let all = layouts();
    // GPipe and 1F1B: 4 pp x 16 m with vpp = 1; interleaved: vpp = 1 for every pp (16 m each), and
    // vpp in {2,4} for pp in {2,4,8} with m a multiple of pp (8 + 4 + 2 values of m).
    assert_eq!(all.len(), 64 + 64 + 64 + 2 * (8 + 4 + 2));
}

#[test]
fn rendezvous_lists_never_deadlock_and_hit_the_formula_with_equal_costs() {
    for (kind, pp, vpp, m) in layouts() {
        let lists = schedule_all(kind, pp, vpp, m, SendMode::Rendezvous).unwrap();
        for (s, list) in lists.iter().enumerate() {
            assert_eq!(&schedule(kind, pp, vpp, m, s).unwrap(), list);
        }
        let what = format!("{kind:?} pp={pp} vpp={vpp} m={m} rendezvous");
        let r = simulate(&lists, vpp, m, &cfg(1, 1, SendMode::Rendezvous))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_bubble(&r, pp, vpp, m, 1, 1, &what);
        let peaks: Vec<usize> = (0..pp)
            .map(|s| expected_peak(kind, pp, vpp, m, s))
            .collect();
        assert_eq!(r.peak_in_flight, peaks, "{what}: peak in flight");
        // Unequal costs: still no deadlock; 1F1B and GPipe stay exact, interleaved may stall more.
        for sends in [SendMode::Rendezvous, SendMode::Buffered] {
            let r = simulate(&lists, vpp, m, &cfg(F, B, sends))
                .unwrap_or_else(|e| panic!("{what} {sends:?}: {e}"));
            if vpp == 1 {
                assert_bubble(&r, pp, vpp, m, F, B, &what);
            } else {
                assert!(
                    r.idle.iter().all(|&i| i >= (pp as u64 - 1) * (F + B)),
                    "{what}: {:?}",
                    r.idle
                );
            }
        }
    }
}

#[test]
fn buffered_lists_hit_the_formula_for_any_costs() {
    for (kind, pp, vpp, m) in layouts() {
        let lists = schedule_all(kind, pp, vpp, m, SendMode::Buffered).unwrap();
        for (tf, tb) in [(1, 1), (F, B), (2, 3), (3, 1)] {
            let what = format!("{kind:?} pp={pp} vpp={vpp} m={m} buffered tf={tf} tb={tb}");
            let r = simulate(&lists, vpp, m, &cfg(tf, tb, SendMode::Buffered))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_bubble(&r, pp, vpp, m, tf, tb, &what);
            let peaks: Vec<usize> = (0..pp)
                .map(|s| expected_peak(kind, pp, vpp, m, s))
                .collect();
            assert_eq!(r.peak_in_flight, peaks, "{what}: peak in flight");
        }
    }
}

#[test]
fn buffered_lists_deadlock_with_blocking_sends() {
    let lists = schedule_all(ScheduleKind::OneFOneB, 2, 1, 4, SendMode::Buffered).unwrap();
    let err = simulate(&lists, 1, 4, &cfg(1, 1, SendMode::Rendezvous))
        .unwrap_err()
        .to_string();
    assert!(err.contains("deadlock"), "{err}");
}

#[test]
fn warm_up_lengths_follow_megatron() {
    let first_backward = |list: &[Action]| {
        let computes = list
            .iter()
            .filter(|a| matches!(a, Action::Forward { .. } | Action::Backward { .. }));
        computes
            .take_while(|a| matches!(a, Action::Forward { .. }))
            .count()
    };
    for s in 0..4 {
        let list = schedule(ScheduleKind::OneFOneB, 4, 1, 8, s).unwrap();
        assert_eq!(first_backward(&list), 4 - s - 1 + 1, "1F1B stage {s}");
        let list = schedule(ScheduleKind::Interleaved, 4, 2, 8, s).unwrap();
        assert_eq!(
            first_backward(&list),
            (4 - s - 1) * 2 + 4 + 1,
            "interleaved stage {s}"
        );
    }
}

/// Rendezvous lists for 1F1B, pp=2, m=2, with one mutation applied, must fail with `want`.
fn broken(mutate: impl Fn(&mut Vec<Vec<Action>>), want: &str) {
    let mut lists = schedule_all(ScheduleKind::OneFOneB, 2, 1, 2, SendMode::Rendezvous).unwrap();
    mutate(&mut lists);
    for sends in [SendMode::Rendezvous, SendMode::Buffered] {
        let err = simulate(&lists, 1, 2, &cfg(1, 1, sends))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{sends:?}: expected '{want}' in: {err}");
    }
}

#[test]
fn simulator_rejects_broken_lists() {
    use Action::*;
    let recv0 = RecvActivation {
        from_stage: 0,
        microbatch: 0,
        chunk: 0,
    };
    let send0 = SendActivation {
        to_stage: 1,
        microbatch: 0,
        chunk: 0,
    };
    broken(
        |l| l[1].retain(|a| *a != recv0),
        "input activation not received",
    );
    broken(|l| l[0].retain(|a| *a != send0), "waits at");
    broken(
        |l| {
            l[0].push(Forward {
                microbatch: 0,
                chunk: 0,
            })
        },
        "runs twice",
    );
    broken(
        |l| l[0].retain(|a| !matches!(a, Backward { microbatch: 1, .. })),
        "never used it",
    );
    broken(
        |l| {
            let i = l[0].iter().position(|a| *a == send0).unwrap();
            l[0][i] = SendActivation {
                to_stage: 0,
                microbatch: 0,
                chunk: 0,
            };
        },
        "lives on stage 1",
    );
    broken(|l| l[0].insert(0, send0), "has not computed");
    broken(
        |l| l[0].retain(|a| !matches!(a, RecvGrad { microbatch: 0, .. })),
        "output gradient not received",
    );
    // A backward that runs before its own forward.
    broken(
        |l| {
            let last = l[1]
                .iter()
                .rposition(|a| matches!(a, Backward { .. }))
                .unwrap();
            let b = l[1].remove(last);
            l[1].insert(0, b);
        },
        "before its forward",
    );
    let run = |list: Vec<Action>| {
        let sim = simulate(&[list], 1, 2, &cfg(1, 1, SendMode::Buffered));
        sim.unwrap_err().to_string()
    };
    assert!(run(vec![Forward {
        microbatch: 2,
        chunk: 0
    }])
    .contains("outside 2 micro-batches"));
    let one_backward_missing = vec![
        Forward {
            microbatch: 0,
            chunk: 0,
        },
        Backward {
            microbatch: 0,
            chunk: 0,
        },
        Forward {
            microbatch: 1,
            chunk: 0,
        },
    ];
    assert!(run(one_backward_missing).contains("micro-batch 1 never ran backward"));
}
