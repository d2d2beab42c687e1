//! All-ranks simulation tests of the pipeline schedules (PP): every valid layout for
//! pp in {1,2,4,8}, vpp in {1,2,4}, m in 1..=16 runs without deadlock, matches every send with its
//! receive, respects data dependencies, and shows exactly the bubble and peak activations the
//! formulas predict (ZB-H1's against 1F1B's with the same B/W costs); and the simulator itself
//! rejects broken lists.

use super::*;

const F: u64 = 1; // forward cost per chunk
const B: u64 = 2; // backward cost per chunk

/// Costs of a forward and a (fused) backward.
fn cfg(forward_cost: u64, backward_cost: u64, sends: SendMode) -> SimConfig {
    costs(forward_cost, backward_cost, 0, sends)
}

/// Costs of a forward, a B pass and a W pass (a fused backward costs B + W).
fn costs(forward_cost: u64, backward_cost: u64, weight_cost: u64, sends: SendMode) -> SimConfig {
    SimConfig {
        forward_cost,
        backward_cost,
        weight_cost,
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

/// (F, B, W) costs with W at most F and B, where ZB-H1's bubble formula holds.
const ZB_COSTS: [(u64, u64, u64); 6] = [(1, 1, 1), (2, 2, 1), (1, 2, 1), (2, 1, 1), (3, 2, 2), (5, 4, 2)];

#[test]
fn zb_h1_bubble_is_p_minus_1_times_f_plus_b_minus_w_and_below_1f1b_at_the_same_peak() {
    for pp in [1, 2, 4, 8] {
        for m in 1..=16 {
            let zb = schedule_all(ScheduleKind::ZbH1, pp, 1, m, SendMode::Buffered).unwrap();
            let one = schedule_all(ScheduleKind::OneFOneB, pp, 1, m, SendMode::Buffered).unwrap();
            for (f, b, w) in ZB_COSTS {
                let what = format!("pp={pp} m={m} F={f} B={b} W={w}");
                let c = costs(f, b, w, SendMode::Buffered);
                let r = simulate(&zb, 1, m, &c).unwrap_or_else(|e| panic!("ZB-H1 {what}: {e}"));
                let r1 = simulate(&one, 1, m, &c).unwrap_or_else(|e| panic!("1F1B {what}: {e}"));
                let p = pp as u64;
                // Every rank computes m (F + B + W); 1F1B's bubble is (p-1)(F+B+W) for any m.
                let busy = m as u64 * (f + b + w);
                assert_eq!(r.busy, vec![busy; pp], "{what}");
                assert_eq!(r1.idle, vec![(p - 1) * (f + b + w); pp], "1F1B {what}");
                if m >= pp {
                    // The paper's formula needs a full steady phase (m >= p).
                    let bubble = (p - 1) * (f + b - w);
                    assert_eq!(r.idle, vec![bubble; pp], "ZB-H1 {what}");
                    assert_eq!(r.makespan, busy + bubble, "ZB-H1 {what}");
                }
                for s in 0..pp {
                    assert!(r.idle[s] <= r1.idle[s], "ZB-H1 {what}: stage {s} idles longer than 1F1B");
                    if pp > 1 && m >= pp {
                        assert!(r.idle[s] < r1.idle[s], "ZB-H1 {what}: stage {s}");
                    }
                }
                // Activation memory: every stage holds at most min(p, m) micro-batches, 1F1B's
                // peak (its first stage's, min(p - stage, m) on stage s).
                assert_eq!(r.peak_in_flight, vec![pp.min(m); pp], "ZB-H1 {what}");
                let peaks_1f1b: Vec<usize> = (0..pp).map(|s| (pp - s).min(m)).collect();
                assert_eq!(r1.peak_in_flight, peaks_1f1b, "1F1B {what}");
            }
        }
    }
}

#[test]
fn zb_h1_rendezvous_lists_never_deadlock_and_hit_the_formula_with_equal_costs() {
    for pp in [1, 2, 4, 8] {
        for m in 1..=16 {
            let lists = schedule_all(ScheduleKind::ZbH1, pp, 1, m, SendMode::Rendezvous).unwrap();
            for (s, list) in lists.iter().enumerate() {
                assert_eq!(&schedule(ScheduleKind::ZbH1, pp, 1, m, s).unwrap(), list);
            }
            for (f, b, w) in ZB_COSTS {
                for sends in [SendMode::Rendezvous, SendMode::Buffered] {
                    let what = format!("pp={pp} m={m} F={f} B={b} W={w} {sends:?}");
                    let r = simulate(&lists, 1, m, &costs(f, b, w, sends)).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let p = pp as u64;
                    if (f, b, w) == (1, 1, 1) && m >= pp {
                        assert_eq!(r.idle, vec![p - 1; pp], "{what}");
                    }
                    assert!(r.idle.iter().all(|&i| i <= (p - 1) * (f + b + w)), "{what}: {:?}", r.idle);
                }
            }
        }
    }
}

#[test]
fn zb_h1_order_defers_stage_s_w_passes_by_s_micro_batches() {
    use Action::*;
    let computes = |pp, m, s| -> Vec<Action> {
        let list = schedule(ScheduleKind::ZbH1, pp, 1, m, s).unwrap();
        list.into_iter()
            .filter(|a| a.message(s, pp).is_none())
            .collect()
    };
    let f = |microbatch| Forward { microbatch, chunk: 0 };
    let b = |microbatch| BackwardInput { microbatch, chunk: 0 };
    let w = |microbatch| BackwardWeight { microbatch, chunk: 0 };
    // Stage 0 of 2: one warm-up forward, then F B W, cool-down B W.
    assert_eq!(computes(2, 4, 0), vec![f(0), f(1), b(0), w(0), f(2), b(1), w(1), f(3), b(2), w(2), b(3), w(3)]);
    // Stage 1 of 2: no warm-up; the first steady step defers its W.
    assert_eq!(computes(2, 4, 1), vec![f(0), b(0), f(1), b(1), w(0), f(2), b(2), w(1), f(3), b(3), w(2), w(3)]);
    // Stage 3 of 4 with 3 micro-batches: every W waits for the end.
    assert_eq!(computes(4, 3, 3), vec![f(0), b(0), f(1), b(1), f(2), b(2), w(0), w(1), w(2)]);
}

#[test]
fn zb_h1_refuses_virtual_stages() {
    let e = schedule(ScheduleKind::ZbH1, 2, 2, 4, 0).unwrap_err().to_string();
    assert!(e.contains("zb-h1") && e.contains("vpp=2"), "{e}");
}

#[test]
fn simulator_rejects_broken_split_backwards() {
    use Action::*;
    let run = |list: Vec<Action>| {
        simulate(&[list], 1, 1, &costs(1, 1, 1, SendMode::Buffered))
            .unwrap_err()
            .to_string()
    };
    let f = Forward { microbatch: 0, chunk: 0 };
    let b = BackwardInput { microbatch: 0, chunk: 0 };
    let w = BackwardWeight { microbatch: 0, chunk: 0 };
    let fused = Backward { microbatch: 0, chunk: 0 };
    assert!(run(vec![f, w, b]).contains("W pass before its B pass"));
    assert!(run(vec![f, fused, w]).contains("W pass before its B pass"));
    assert!(run(vec![f, b]).contains("micro-batch 0 never ran its W pass"));
    assert!(run(vec![f, b, w, w]).contains("runs twice"));
    assert!(run(vec![f, b, fused]).contains("runs twice"));
    let ok = simulate(&[vec![f, b, w]], 1, 1, &costs(2, 3, 1, SendMode::Buffered)).unwrap();
    assert_eq!((ok.makespan, ok.peak_in_flight.clone()), (6, vec![1]));
}

#[test]
fn executor_holds_a_split_micro_batch_until_its_w_pass() {
    for pp in [2, 4] {
        for s in 0..pp {
            let m = 2 * pp;
            let zb = Executor::new(ScheduleKind::ZbH1, pp, 1, s, m).unwrap().slots_per_chunk();
            let one = Executor::new(ScheduleKind::OneFOneB, pp, 1, s, m).unwrap().slots_per_chunk();
            let first = Executor::new(ScheduleKind::OneFOneB, pp, 1, 0, m).unwrap().slots_per_chunk();
            // At least the micro-batches in flight (pp); at most what 1F1B's first stage holds.
            assert!(zb[0] >= pp && zb[0] <= first[0], "pp={pp} stage {s}: {zb:?} vs {first:?}");
            assert!(zb[0] >= one[0], "pp={pp} stage {s}");
        }
    }
}
