//! Causal GQA attention forward, flash-attention style on CPU. The inputs are first re-laid out
//! once (each head's `[T, D]` block contiguous; K also as transposed `[D, BK]` tiles) so every
//! tile product reads contiguous rows with the packing-free kernels of tile.rs. Work is cut into
//! rayon tasks of (batch, kv head, query tile); a task runs every query head sharing that kv head
//! over the key tiles at or below the diagonal (fully masked tiles are never touched), keeping an
//! online softmax (running max `m`, sum `l`, unnormalised output) in a per-thread scratch of one
//! `BQ x BK` score tile and a `BQ x D` accumulator per head: no more than a tile of the `T x T`
//! scores ever exists. Saves `lse = m + ln l` `[B, H, T]` for the backward (attention_bwd.rs),
//! which recomputes the probabilities from it.

use super::par::{lane_max, simd_fn, SyncPtr};
use super::{tile, Real};
use crate::backend::AttnShape;
use rayon::prelude::*;

/// Query rows per tile.
pub const BQ: usize = 64;
/// Key rows per tile.
pub const BK: usize = 64;

/// Strides and derived sizes of one attention call.
#[derive(Clone, Copy)]
pub(super) struct Geo {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
    /// Query heads per kv head.
    pub rep: usize,
}

impl Geo {
    pub fn new(op: &str, s: AttnShape) -> Geo {
        assert!(
            s.kv_heads > 0 && s.heads.is_multiple_of(s.kv_heads),
            "{op}: heads {} must be a multiple of kv_heads {}",
            s.heads,
            s.kv_heads
        );
        assert!(s.head_dim > 0, "{op}: head_dim must be positive");
        Geo {
            b: s.batch,
            t: s.seq,
            h: s.heads,
            hkv: s.kv_heads,
            d: s.head_dim,
            rep: s.heads / s.kv_heads,
        }
    }
    /// Offset of `q[b, t, h, 0]` (also `out`, `dout`, `dq`).
    #[inline]
    pub fn q_at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.t + t) * self.h + h) * self.d
    }
    /// Offset of `k[b, t, g, 0]` (also `v`, `dk`, `dv`).
    #[inline]
    pub fn k_at(&self, b: usize, t: usize, g: usize) -> usize {
        ((b * self.t + t) * self.hkv + g) * self.d
    }
    #[inline]
    pub fn lse_at(&self, b: usize, h: usize, t: usize) -> usize {
        (b * self.h + h) * self.t + t
    }
    pub fn q_len(&self) -> usize {
        self.b * self.t * self.h * self.d
    }
    pub fn k_len(&self) -> usize {
        self.b * self.t * self.hkv * self.d
    }
    pub fn scale<T: Real>(&self) -> T {
        T::one() / T::of_f64(self.d as f64).sqrt()
    }
    pub fn check_len(&self, op: &str, what: &str, len: usize, want: usize) {
        assert_eq!(
            len, want,
            "{op}: {what} has {len} elements, expected {want} for B={} T={} H={} Hkv={} D={}",
            self.b, self.t, self.h, self.hkv, self.d
        );
    }
}

/// Number of valid (unmasked) keys of tile row `ii`, whose query is `i0 + ii`, in a key tile
/// starting at `j0` with `bk` columns.
#[inline(always)]
pub(super) fn valid_keys(i0: usize, ii: usize, j0: usize, bk: usize) -> usize {
    (i0 + ii + 1).saturating_sub(j0).min(bk)
}

simd_fn! {
    /// Online-softmax update for one score tile `s` `[bq, bk]`: updates the running max `m`
    /// and sum `l`, rescales the accumulator rows `o` `[bq, d]`, and leaves `P = exp(s - m)`
    /// (zero where masked) in `s`.
    fn online_softmax<T: Real>(s: &mut [T], m: &mut [T], l: &mut [T], o: &mut [T], bq: usize, bk: usize, d: usize, i0: usize, j0: usize) {
        for ii in 0..bq {
            let row = &mut s[ii * bk..(ii + 1) * bk];
            let nv = valid_keys(i0, ii, j0, bk);
            let (sv, masked) = row.split_at_mut(nv);
            masked.fill(T::zero());
            if nv == 0 {
                continue;
            }
            let m_new = lane_max(sv).max(m[ii]);
            let corr = (m[ii] - m_new).exp_fast();
            let mut acc = [T::zero(); 16];
            let mut it = sv.chunks_exact_mut(16);
            for c in &mut it {
                for k in 0..16 {
                    let e = (c[k] - m_new).exp_fast();
                    c[k] = e;
                    acc[k] += e;
                }
            }
            let mut sum = T::zero();
            for x in it.into_remainder() {
                let e = (*x - m_new).exp_fast();
                *x = e;
                sum += e;
            }
            sum += super::par::lane_sum(&acc, |x| x);
            if m[ii] != m_new {
                l[ii] *= corr;
                for x in &mut o[ii * d..(ii + 1) * d] {
                    *x *= corr;
                }
            }
            l[ii] += sum;
            m[ii] = m_new;
        }
    }
}

/// `dst[((b*nh + hh)*T + i)*D + dd] = src[b, i, hh, dd]`: each head's `[T, D]` block made
/// contiguous (`src` is `[B, T, nh, D]`).
pub(super) fn split_heads<T: Real>(dst: &mut [T], src: &[T], g_: Geo, nh: usize) {
    let (t, d) = (g_.t, g_.d);
    dst[..g_.b * nh * t * d]
        .par_chunks_mut(t * d)
        .enumerate()
        .for_each(|(bh, blk)| {
            let (b, hh) = (bh / nh, bh % nh);
            for (i, row) in blk.chunks_exact_mut(d).enumerate() {
                let at = ((b * t + i) * nh + hh) * d;
                row.copy_from_slice(&src[at..at + d]);
            }
        });
}

/// Length of the `tiles_transposed` layout for `nh` heads.
pub(super) fn tiles_len(g_: Geo, nh: usize) -> usize {
    g_.b * nh * g_.t.div_ceil(BK) * g_.d * BK
}

/// Elements of the calling thread's scratch that `attention_fwd` uses: the re-laid-out q, the
/// transposed key tiles and v.
pub(super) fn fwd_scratch_len(g: Geo) -> usize {
    g.q_len() + tiles_len(g, g.hkv) + g.k_len()
}

/// Key tiles transposed, per (batch, head): tile `kt` of head `(b, hh)` is the `[D, BK]` block
/// at `((b*nh + hh)*nkt + kt)*D*BK` with `block[dd*BK + jj] = src[b, kt*BK + jj, hh, dd]`
/// (columns past the end of a partial last tile are not written).
pub(super) fn tiles_transposed<T: Real>(dst: &mut [T], src: &[T], g_: Geo, nh: usize) {
    let (t, d) = (g_.t, g_.d);
    let nkt = t.div_ceil(BK);
    dst[..tiles_len(g_, nh)]
        .par_chunks_mut(nkt * d * BK)
        .enumerate()
        .for_each(|(bh, blk)| {
            let (b, hh) = (bh / nh, bh % nh);
            for (kt, tl) in blk.chunks_exact_mut(d * BK).enumerate() {
                let j0 = kt * BK;
                let at = ((b * t + j0) * nh + hh) * d;
                tile::transpose(tl, BK, &src[at..], nh * d, BK.min(t - j0), d);
            }
        });
}

/// The re-laid-out inputs of the forward: Q per head `[T, D]`, K as transposed tiles, V per kv
/// head `[T, D]`.
struct FwdIn<'a, T> {
    q: &'a [T],
    kt: &'a [T],
    v: &'a [T],
}

/// One forward task: query tile `qt` of batch `b`, all query heads of kv head `g`.
fn fwd_task<T: Real>(
    g_: Geo,
    out: SyncPtr<T>,
    lse: SyncPtr<T>,
    x: &FwdIn<T>,
    b: usize,
    g: usize,
    qt: usize,
) {
    let Geo {
        t, h, hkv, d, rep, ..
    } = g_;
    let scale = g_.scale::<T>();
    let nkt = t.div_ceil(BK);
    let i0 = qt * BQ;
    let i1 = (i0 + BQ).min(t);
    let bq = i1 - i0;
    T::with_scratch(BQ * BK + rep * (BQ * d + 2 * BQ), |scr| {
        let (s, rest) = scr.split_at_mut(BQ * BK);
        let (o, rest) = rest.split_at_mut(rep * BQ * d);
        let (m, l) = rest.split_at_mut(rep * BQ);
        o.fill(T::zero());
        m.fill(T::neg_infinity());
        l.fill(T::zero());
        // Keys at or beyond i1 are masked for every row of the tile.
        let mut j0 = 0;
        while j0 < i1 {
            let bk = (j0 + BK).min(i1) - j0;
            let ktile = &x.kt[((b * hkv + g) * nkt + j0 / BK) * d * BK..][..d * BK];
            let vrows = &x.v[((b * hkv + g) * t + j0) * d..][..bk * d];
            for r in 0..rep {
                let qrows = &x.q[((b * h + g * rep + r) * t + i0) * d..][..bq * d];
                let (o, m, l) = (
                    &mut o[r * BQ * d..][..bq * d],
                    &mut m[r * BQ..][..bq],
                    &mut l[r * BQ..][..bq],
                );
                // SAFETY: the operands are the in-bounds slices above and the scratch tiles.
                unsafe {
                    // s = scale Q Kᵀ ; online softmax ; o += P V
                    let c = tile::set(s.as_mut_ptr(), bk);
                    tile::mm(
                        (bq, bk, d),
                        scale,
                        tile::rows(qrows.as_ptr(), d),
                        tile::rows(ktile.as_ptr(), BK),
                        c,
                    );
                    online_softmax(&mut s[..bq * bk], m, l, o, bq, bk, d, i0, j0);
                    let c = tile::add(o.as_mut_ptr(), d);
                    tile::mm(
                        (bq, d, bk),
                        T::one(),
                        tile::rows(s.as_ptr(), bk),
                        tile::rows(vrows.as_ptr(), d),
                        c,
                    );
                }
            }
            j0 += BK;
        }
        for r in 0..rep {
            let hh = g * rep + r;
            for ii in 0..bq {
                let (mi, li) = (m[r * BQ + ii], l[r * BQ + ii]);
                let inv = T::one() / li;
                // SAFETY: rows i0..i1 of head hh of batch b belong to this task only.
                unsafe {
                    let dst =
                        std::slice::from_raw_parts_mut(out.get().add(g_.q_at(b, i0 + ii, hh)), d);
                    for (x, &y) in dst.iter_mut().zip(&o[(r * BQ + ii) * d..][..d]) {
                        *x = y * inv;
                    }
                    *lse.get().add(g_.lse_at(b, hh, i0 + ii)) = mi + li.ln();
                }
            }
        }
    });
}

pub fn attention_fwd<T: Real>(
    out: &mut [T],
    lse: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    s: AttnShape,
) {
    let op = "attention_fwd";
    let g = Geo::new(op, s);
    g.check_len(op, "q", q.len(), g.q_len());
    g.check_len(op, "out", out.len(), g.q_len());
    g.check_len(op, "k", k.len(), g.k_len());
    g.check_len(op, "v", v.len(), g.k_len());
    g.check_len(op, "lse", lse.len(), g.b * g.h * g.t);
    let nqt = g.t.div_ceil(BQ);
    let (outp, lsep) = (
        SyncPtr::new(out.as_mut_ptr()),
        SyncPtr::new(lse.as_mut_ptr()),
    );
    let ktl = tiles_len(g, g.hkv);
    // Re-lay the inputs out once so every tile operand is contiguous.
    T::with_scratch(fwd_scratch_len(g), |scr| {
        let (qc, rest) = scr.split_at_mut(q.len());
        let (kt, vc) = rest.split_at_mut(ktl);
        split_heads(qc, q, g, g.h);
        tiles_transposed(kt, k, g, g.hkv);
        split_heads(vc, v, g, g.hkv);
        let x = FwdIn { q: qc, kt, v: vc };
        // Heaviest (last) query tiles first in each (b, kv head) run of tasks.
        (0..g.b * g.hkv * nqt)
            .into_par_iter()
            .with_max_len(1)
            .for_each(|task| {
                let (bg, qt) = (task / nqt, nqt - 1 - task % nqt);
                fwd_task(g, outp, lsep, &x, bg / g.hkv, bg % g.hkv, qt);
            });
    });
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{rand_vec, Rng};

    /// Full-softmax reference: returns (out, lse).
    pub fn naive_attention(q: &[f64], k: &[f64], v: &[f64], s: AttnShape) -> (Vec<f64>, Vec<f64>) {
        let g = Geo::new("naive", s);
        let mut out = vec![0.0; g.q_len()];
        let mut lse = vec![0.0; g.b * g.h * g.t];
        let scale = 1.0 / (g.d as f64).sqrt();
        for b in 0..g.b {
            for h in 0..g.h {
                let kh = h / g.rep;
                for i in 0..g.t {
                    let qi = &q[g.q_at(b, i, h)..][..g.d];
                    let sc: Vec<f64> = (0..=i)
                        .map(|j| {
                            scale
                                * qi.iter()
                                    .zip(&k[g.k_at(b, j, kh)..][..g.d])
                                    .map(|(a, b)| a * b)
                                    .sum::<f64>()
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum();
                    lse[g.lse_at(b, h, i)] = mx + z.ln();
                    for (j, x) in sc.iter().enumerate() {
                        let p = (x - mx).exp() / z;
                        for dd in 0..g.d {
                            out[g.q_at(b, i, h) + dd] += p * v[g.k_at(b, j, kh) + dd];
                        }
                    }
                }
            }
        }
        (out, lse)
    }

    pub fn shape(b: usize, t: usize, h: usize, hkv: usize, d: usize) -> AttnShape {
        AttnShape {
            batch: b,
            seq: t,
            heads: h,
            kv_heads: hkv,
            head_dim: d,
        }
    }

    #[test]
    fn attention_forward_matches_naive() {
        let mut rng = Rng::new(11);
        for s in [
            shape(1, 1, 1, 1, 4),
            shape(2, 70, 4, 2, 16),
            shape(1, 130, 4, 1, 64),
            shape(1, 64, 2, 2, 8),
        ] {
            let g = Geo::new("t", s);
            let q: Vec<f64> = rand_vec(&mut rng, g.q_len())
                .iter()
                .map(|x| 3.0 * x)
                .collect();
            let k: Vec<f64> = rand_vec(&mut rng, g.k_len())
                .iter()
                .map(|x| 3.0 * x)
                .collect();
            let v = rand_vec(&mut rng, g.k_len());
            let (want_o, want_l) = naive_attention(&q, &k, &v, s);
            let mut o = vec![f64::NAN; g.q_len()];
            let mut l = vec![f64::NAN; want_l.len()];
            attention_fwd(&mut o, &mut l, &q, &k, &v, s);
            for (a, b) in o.iter().zip(&want_o).chain(l.iter().zip(&want_l)) {
                assert!((a - b).abs() < 1e-12, "{s:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn attention_forward_f32_agrees_with_f64() {
        let mut rng = Rng::new(12);
        let s = shape(2, 200, 4, 2, 64);
        let g = Geo::new("t", s);
        let q = rand_vec(&mut rng, g.q_len());
        let k = rand_vec(&mut rng, g.k_len());
        let v = rand_vec(&mut rng, g.k_len());
        let (mut o, mut l) = (vec![0.0; g.q_len()], vec![0.0; g.b * g.h * g.t]);
        attention_fwd(&mut o, &mut l, &q, &k, &v, s);
        let f = |x: &Vec<f64>| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (mut o32, mut l32) = (vec![0.0f32; g.q_len()], vec![0.0f32; g.b * g.h * g.t]);
        attention_fwd(&mut o32, &mut l32, &f(&q), &f(&k), &f(&v), s);
        for (a, b) in o32.iter().zip(&o).chain(l32.iter().zip(&l)) {
            assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
