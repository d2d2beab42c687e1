//! Causal GQA attention backward, flash-attention style. A rayon task owns (batch, kv head,
//! range of key tiles): it writes dK/dV for those keys alone, so no atomics are needed, and walks
//! every query tile at or below the diagonal for every query head sharing the kv head. Per tile
//! and head it recomputes `P = exp(scale Q Kᵀ - lse)`, then `dP = dO Vᵀ`, `dV += Pᵀ dO`,
//! `dS = P ∘ (dP - D)` with `D = rowsum(dO ∘ O)`, `dQ += scale dS K`, `dK += scale dSᵀ Q`.
//! When there are fewer (batch, kv head) pairs than `MIN_TASKS`, the key range is split into
//! parts balanced by work; each part then sums its dQ into a private scratch slab, and the slabs
//! are added in part order. The split depends only on the shape, so results are reproducible.
//! Inputs are re-laid out once per call as in the forward (Q, dO, K per head, K and V as
//! transposed tiles), in the calling thread's scratch.

use super::attention::{split_heads, tiles_len, tiles_transposed, valid_keys, Geo, BK, BQ};
use super::par::{lane_sum2, simd_fn, SyncPtr};
use super::{tile, Real};
use crate::backend::AttnShape;
use rayon::prelude::*;

/// Fewest tasks the backward aims for (more parts per (batch, kv head) below this).
const MIN_TASKS: usize = 8;
/// Most key-range parts per (batch, kv head).
const MAX_PARTS: usize = 8;

simd_fn! {
    /// Turns `s` (scaled scores) into `P = exp(s - lse)` and `dp` into `dS = P (dP - D)`, with
    /// zeros where masked.
    fn probs_and_dscores<T: Real>(s: &mut [T], dp: &mut [T], lse: &[T], dvec: &[T], bq: usize, bk: usize, i0: usize, j0: usize) {
        for ii in 0..bq {
            let nv = valid_keys(i0, ii, j0, bk);
            let (li, di) = (lse[ii], dvec[ii]);
            let srow = &mut s[ii * bk..(ii + 1) * bk];
            let prow = &mut dp[ii * bk..(ii + 1) * bk];
            let (sv, sm) = srow.split_at_mut(nv);
            let (pv, pm) = prow.split_at_mut(nv);
            for (x, y) in sv.iter_mut().zip(pv.iter_mut()) {
                let p = (*x - li).exp_fast();
                *x = p;
                *y = p * (*y - di);
            }
            sm.fill(T::zero());
            pm.fill(T::zero());
        }
    }
}

simd_fn! {
    /// `dvec[r * n + ii] = rowsum(dO ∘ O)` for rows `i0..i0+n` of the `rep` heads of kv head `g`.
    fn rowdots<T: Real>(dvec: &mut [T], dout: &[T], out: &[T], g_: Geo, b: usize, g: usize, i0: usize, n: usize) {
        for r in 0..g_.rep {
            let hh = g * g_.rep + r;
            for ii in 0..n {
                let at = g_.q_at(b, i0 + ii, hh);
                dvec[r * n + ii] = lane_sum2(&dout[at..at + g_.d], &out[at..at + g_.d], |a, b| a * b);
            }
        }
    }
}

/// Key-tile boundaries of `parts` ranges over `nkt` tiles with about equal causal work
/// (key tile `j` is paired with `nqt - j` query tiles when `BQ == BK`).
fn part_bounds(nkt: usize, parts: usize) -> [usize; MAX_PARTS + 1] {
    let mut bounds = [nkt; MAX_PARTS + 1];
    bounds[0] = 0;
    let total: usize = (1..=nkt).sum();
    let (mut acc, mut p) = (0, 1);
    for j in 1..nkt {
        acc += nkt - (j - 1);
        // Cut before tile j when the middle of its work lies past the p-th share.
        if p < parts && (2 * acc + nkt - j) * parts >= 2 * total * p {
            bounds[p] = j;
            p += 1;
        }
    }
    bounds
}

/// The re-laid-out inputs of the backward: Q and dO per head `[T, D]`, K per kv head
/// `[T, D]`, K and V as transposed tiles (see attention.rs).
struct BwdIn<'a, T> {
    q: &'a [T],
    dout: &'a [T],
    k: &'a [T],
    kt: &'a [T],
    vt: &'a [T],
}

/// Where a task writes: dQ (in place with row stride `H*D`, or a private slab with row stride
/// `rep*D`, pointing at the task's first head) and dK/dV (in place).
struct BwdOut<T> {
    dq: SyncPtr<T>,
    dq_rs: usize,
    dk: SyncPtr<T>,
    dv: SyncPtr<T>,
}

/// One backward task: batch `b`, kv head `g`, key tiles `kt0..kt1`.
#[allow(clippy::too_many_arguments)]
fn bwd_task<T: Real>(
    g_: Geo,
    x: &BwdIn<T>,
    o: &BwdOut<T>,
    dout: &[T],
    out: &[T],
    lse: &[T],
    b: usize,
    g: usize,
    kt0: usize,
    kt1: usize,
) {
    let Geo {
        t, h, hkv, d, rep, ..
    } = g_;
    let scale = g_.scale::<T>();
    let nkt = t.div_ceil(BK);
    let j_lo = kt0 * BK;
    if j_lo >= t || kt0 >= kt1 {
        return;
    }
    let i_lo = (j_lo / BQ) * BQ; // first query tile that can see these keys
    let nrows = t - i_lo;
    // Scratch: P and dS tiles, dK/dV accumulators of one key tile, D for the visible rows.
    T::with_scratch(2 * BQ * BK + 2 * BK * d + rep * nrows, |scr| {
        let (s, rest) = scr.split_at_mut(BQ * BK);
        let (dp, rest) = rest.split_at_mut(BQ * BK);
        let (dka, rest) = rest.split_at_mut(BK * d);
        let (dva, dvec) = rest.split_at_mut(BK * d);
        rowdots(dvec, dout, out, g_, b, g, i_lo, nrows);
        let bg = b * hkv + g;
        for kti in kt0..kt1 {
            let j0 = kti * BK;
            let bk = (j0 + BK).min(t) - j0;
            let ktile = &x.kt[(bg * nkt + kti) * d * BK..][..d * BK];
            let vtile = &x.vt[(bg * nkt + kti) * d * BK..][..d * BK];
            let krows = &x.k[(bg * t + j0) * d..][..bk * d];
            dka[..bk * d].fill(T::zero());
            dva[..bk * d].fill(T::zero());
            let mut i0 = (j0 / BQ) * BQ;
            while i0 < t {
                let bq = (i0 + BQ).min(t) - i0;
                for r in 0..rep {
                    let hh = g * rep + r;
                    let qrows = &x.q[((b * h + hh) * t + i0) * d..][..bq * d];
                    let dorows = &x.dout[((b * h + hh) * t + i0) * d..][..bq * d];
                    let (qp, dop) = (
                        tile::rows(qrows.as_ptr(), d),
                        tile::rows(dorows.as_ptr(), d),
                    );
                    // SAFETY: operands are the in-bounds slices above and the scratch tiles.
                    unsafe {
                        // s = scale Q Kᵀ ; dp = dO Vᵀ
                        let kb = tile::rows(ktile.as_ptr(), BK);
                        tile::mm((bq, bk, d), scale, qp, kb, tile::set(s.as_mut_ptr(), bk));
                        let vb = tile::rows(vtile.as_ptr(), BK);
                        tile::mm(
                            (bq, bk, d),
                            T::one(),
                            dop,
                            vb,
                            tile::set(dp.as_mut_ptr(), bk),
                        );
                    }
                    let lrow = &lse[g_.lse_at(b, hh, i0)..][..bq];
                    let drow = &dvec[r * nrows + (i0 - i_lo)..][..bq];
                    probs_and_dscores(
                        &mut s[..bq * bk],
                        &mut dp[..bq * bk],
                        lrow,
                        drow,
                        bq,
                        bk,
                        i0,
                        j0,
                    );
                    // SAFETY: as above; the dQ rows of this head belong to this task (or its slab).
                    unsafe {
                        // dV += Pᵀ dO ; dQ += scale dS K ; dK += scale dSᵀ Q
                        let (pt, dst) = (tile::trans(s.as_ptr(), bk), tile::trans(dp.as_ptr(), bk));
                        tile::mm(
                            (bk, d, bq),
                            T::one(),
                            pt,
                            dop,
                            tile::add(dva.as_mut_ptr(), d),
                        );
                        let dqc = tile::add(o.dq.get().add(i0 * o.dq_rs + r * d), o.dq_rs);
                        let kr = tile::rows(krows.as_ptr(), d);
                        tile::mm((bq, d, bk), scale, tile::rows(dp.as_ptr(), bk), kr, dqc);
                        tile::mm((bk, d, bq), scale, dst, qp, tile::add(dka.as_mut_ptr(), d));
                    }
                }
                i0 += BQ;
            }
            for jj in 0..bk {
                // SAFETY: dk/dv rows j0..j0+bk of (b, g) belong to this task.
                unsafe {
                    let at = g_.k_at(b, j0 + jj, g);
                    std::ptr::copy_nonoverlapping(dka[jj * d..].as_ptr(), o.dk.get().add(at), d);
                    std::ptr::copy_nonoverlapping(dva[jj * d..].as_ptr(), o.dv.get().add(at), d);
                }
            }
        }
    });
}

/// Key-range parts per (batch, kv head): enough tasks for the threads, at most MAX_PARTS.
fn key_parts(g: Geo) -> usize {
    MIN_TASKS.div_ceil((g.b * g.hkv).max(1)).clamp(1, g.t.div_ceil(BK).clamp(1, MAX_PARTS))
}

/// Elements of the calling thread's scratch that `attention_bwd` uses: re-laid-out q and dout,
/// k, two sets of transposed key tiles, and one dQ slab per task when key ranges are split.
pub(super) fn bwd_scratch_len(g: Geo) -> usize {
    let parts = key_parts(g);
    let slabs = if parts > 1 { g.b * g.hkv * parts * g.t * g.rep * g.d } else { 0 };
    2 * g.q_len() + g.k_len() + 2 * tiles_len(g, g.hkv) + slabs
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<T: Real>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    s: AttnShape,
) {
    let op = "attention_bwd";
    let g_ = Geo::new(op, s);
    for (what, l) in [
        ("dq", dq.len()),
        ("dout", dout.len()),
        ("q", q.len()),
        ("out", out.len()),
    ] {
        g_.check_len(op, what, l, g_.q_len());
    }
    for (what, l) in [
        ("dk", dk.len()),
        ("dv", dv.len()),
        ("k", k.len()),
        ("v", v.len()),
    ] {
        g_.check_len(op, what, l, g_.k_len());
    }
    g_.check_len(op, "lse", lse.len(), g_.b * g_.h * g_.t);
    let Geo {
        b: nb,
        t,
        h,
        hkv,
        d,
        rep,
    } = g_;
    let nkt = t.div_ceil(BK);
    let pairs = nb * hkv;
    if pairs == 0 || t == 0 {
        return;
    }
    let parts = key_parts(g_);
    let bounds = part_bounds(nkt, parts);
    // With split key ranges each task sums dQ into its own [T, rep*D] slab.
    let slab = if parts > 1 { t * rep * d } else { 0 };
    let ktl = tiles_len(g_, hkv);
    let (ql, kl) = (q.len(), k.len());
    T::with_scratch(bwd_scratch_len(g_), |scr| {
        // Re-lay the inputs out once so every tile operand is contiguous.
        let (qc, rest) = scr.split_at_mut(ql);
        let (doc, rest) = rest.split_at_mut(ql);
        let (kc, rest) = rest.split_at_mut(kl);
        let (kt, rest) = rest.split_at_mut(ktl);
        let (vt, slabs) = rest.split_at_mut(ktl);
        split_heads(qc, q, g_, h);
        split_heads(doc, dout, g_, h);
        split_heads(kc, k, g_, hkv);
        tiles_transposed(kt, k, g_, hkv);
        tiles_transposed(vt, v, g_, hkv);
        let x = BwdIn {
            q: qc,
            dout: doc,
            k: kc,
            kt,
            vt,
        };
        let (dkp, dvp) = (SyncPtr::new(dk.as_mut_ptr()), SyncPtr::new(dv.as_mut_ptr()));
        let run = |task: usize, dq: SyncPtr<T>, dq_rs: usize| {
            let (pair, p) = (task / parts, task % parts);
            let o = BwdOut {
                dq,
                dq_rs,
                dk: dkp,
                dv: dvp,
            };
            bwd_task(
                g_,
                &x,
                &o,
                dout,
                out,
                lse,
                pair / hkv,
                pair % hkv,
                bounds[p],
                bounds[p + 1],
            );
        };
        if parts == 1 {
            super::elementwise::fill(dq, T::zero());
            let dqp = SyncPtr::new(dq.as_mut_ptr());
            (0..pairs).into_par_iter().with_max_len(1).for_each(|task| {
                let (b, g) = (task / hkv, task % hkv);
                // SAFETY: offset of dq[b, 0, g*rep, 0], in range.
                run(
                    task,
                    SyncPtr::new(unsafe { dqp.get().add(g_.q_at(b, 0, g * rep)) }),
                    h * d,
                );
            });
            return;
        }
        super::elementwise::fill(slabs, T::zero());
        let sp = SyncPtr::new(slabs.as_mut_ptr());
        (0..pairs * parts)
            .into_par_iter()
            .with_max_len(1)
            .for_each(|task| {
                // SAFETY: slab `task` is private to this task.
                run(
                    task,
                    SyncPtr::new(unsafe { sp.get().add(task * slab) }),
                    rep * d,
                );
            });
        // Add the slabs in part order.
        let slabs = &*slabs;
        dq.par_chunks_mut(h * d)
            .enumerate()
            .with_min_len(16)
            .for_each(|(row, dst)| {
                let (b, ti) = (row / t, row % t);
                for (g, dst) in dst.chunks_exact_mut(rep * d).enumerate() {
                    let base = (b * hkv + g) * parts * slab + ti * rep * d;
                    dst.copy_from_slice(&slabs[base..base + rep * d]);
                    for p in 1..parts {
                        for (x, &y) in dst.iter_mut().zip(&slabs[base + p * slab..][..rep * d]) {
                            *x += y;
                        }
                    }
                }
            });
    });
}

#[cfg(test)]
mod tests {
    use super::super::attention::attention_fwd;
    use super::super::attention::tests::{naive_attention, shape};
    use super::*;
    use crate::backend::cpu::testutil::{check_grad, dot, rand_vec, Rng};

    fn grads(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        r: &[f64],
        s: AttnShape,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let g = Geo::new("t", s);
        let (mut o, mut l) = (vec![0.0; g.q_len()], vec![0.0; g.b * g.h * g.t]);
        attention_fwd(&mut o, &mut l, q, k, v, s);
        let (mut dq, mut dk, mut dv) = (
            vec![f64::NAN; g.q_len()],
            vec![f64::NAN; g.k_len()],
            vec![f64::NAN; g.k_len()],
        );
        attention_bwd(&mut dq, &mut dk, &mut dv, r, q, k, v, &o, &l, s);
        (dq, dk, dv)
    }

    #[test]
    fn part_bounds_cover_and_balance() {
        assert_eq!(&part_bounds(1, 1)[..2], &[0, 1]);
        let b = part_bounds(8, 4);
        assert_eq!(b[0], 0);
        assert_eq!(b[4], 8);
        assert!(b[..5].windows(2).all(|w| w[0] < w[1]), "{b:?}");
        // Earlier key tiles carry more work, so the first part is the narrowest.
        assert!(b[1] - b[0] <= b[4] - b[3]);
    }

    #[test]
    fn attention_backward_finite_difference() {
        let mut rng = Rng::new(13);
        // GQA ratios 1, 2, 4; T=70 (tile 64 plus a partial tile); D 16 and 64; both the split
        // (few pairs) and the unsplit (>= MIN_TASKS pairs) backward.
        let cases = [
            shape(1, 70, 2, 2, 16),
            shape(2, 70, 4, 2, 16),
            shape(1, 70, 4, 1, 64),
            shape(4, 9, 8, 2, 16),
            shape(1, 150, 2, 1, 16),
            shape(4, 70, 4, 2, 16),
        ];
        for (ci, s) in cases.into_iter().enumerate() {
            let g = Geo::new("t", s);
            let q: Vec<f64> = rand_vec(&mut rng, g.q_len())
                .iter()
                .map(|x| 2.0 * x)
                .collect();
            let k: Vec<f64> = rand_vec(&mut rng, g.k_len())
                .iter()
                .map(|x| 2.0 * x)
                .collect();
            let v = rand_vec(&mut rng, g.k_len());
            let r = rand_vec(&mut rng, g.q_len());
            let (dq, dk, dv) = grads(&q, &k, &v, &r, s);
            let f = |q: &[f64], k: &[f64], v: &[f64]| dot(&naive_attention(q, k, v, s).0, &r);
            let seed = 100 + ci as u64;
            check_grad("attention dq", &q, &dq, 12, seed, |x| f(x, &k, &v));
            check_grad("attention dk", &k, &dk, 12, seed + 1, |x| f(&q, x, &v));
            check_grad("attention dv", &v, &dv, 12, seed + 2, |x| f(&q, &k, x));
            // The last key only receives gradient from the last query: check it too.
            let last = g.k_at(0, g.t - 1, 0);
            check_grad(
                "attention dk last",
                &k[last..last + 1],
                &dk[last..last + 1],
                1,
                0,
                |x| {
                    let mut kk = k.clone();
                    kk[last] = x[0];
                    f(&q, &kk, &v)
                },
            );
        }
    }

    #[test]
    fn attention_backward_f32_agrees_with_f64() {
        let mut rng = Rng::new(14);
        for s in [shape(2, 200, 4, 2, 64), shape(1, 200, 4, 4, 64)] {
            let g = Geo::new("t", s);
            let q = rand_vec(&mut rng, g.q_len());
            let k = rand_vec(&mut rng, g.k_len());
            let v = rand_vec(&mut rng, g.k_len());
            let r = rand_vec(&mut rng, g.q_len());
            let want = grads(&q, &k, &v, &r, s);
            let f = |x: &Vec<f64>| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let (q32, k32, v32, r32) = (f(&q), f(&k), f(&v), f(&r));
            let (mut o, mut l) = (vec![0.0f32; g.q_len()], vec![0.0f32; g.b * g.h * g.t]);
            attention_fwd(&mut o, &mut l, &q32, &k32, &v32, s);
            let (mut dq, mut dk, mut dv) = (
                vec![0.0f32; g.q_len()],
                vec![0.0f32; g.k_len()],
                vec![0.0f32; g.k_len()],
            );
            attention_bwd(&mut dq, &mut dk, &mut dv, &r32, &q32, &k32, &v32, &o, &l, s);
            for (got, want) in [(&dq, &want.0), (&dk, &want.1), (&dv, &want.2)] {
                let scale = want.iter().map(|x| x.abs()).fold(0.0, f64::max);
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!((*a as f64 - b).abs() < 1e-5 * scale, "{s:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn attention_backward_is_deterministic() {
        let mut rng = Rng::new(15);
        let s = shape(1, 300, 2, 1, 32);
        let g = Geo::new("t", s);
        let q: Vec<f32> = rand_vec(&mut rng, g.q_len())
            .iter()
            .map(|&x| x as f32)
            .collect();
        let k: Vec<f32> = rand_vec(&mut rng, g.k_len())
            .iter()
            .map(|&x| x as f32)
            .collect();
        let v: Vec<f32> = rand_vec(&mut rng, g.k_len())
            .iter()
            .map(|&x| x as f32)
            .collect();
        let (mut o, mut l) = (vec![0.0f32; g.q_len()], vec![0.0f32; g.b * g.h * g.t]);
        attention_fwd(&mut o, &mut l, &q, &k, &v, s);
        let run = || {
            let (mut dq, mut dk, mut dv) = (
                vec![0.0f32; g.q_len()],
                vec![0.0f32; g.k_len()],
                vec![0.0f32; g.k_len()],
            );
            attention_bwd(&mut dq, &mut dk, &mut dv, &q, &q, &k, &v, &o, &l, s);
            (dq, dk, dv)
        };
        assert!(run() == run());
    }
}
