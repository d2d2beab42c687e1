//! Token embedding lookup and its backward, for a (vocab-parallel) shard of the table holding rows
//! `[vocab_start, vocab_start + rows)`: ids outside the shard give zero rows and no gradient (the
//! TP all-reduce of the outputs then yields every row once). Forward gathers rows in parallel. Backward
//! scatters `dout` rows into the table with no atomics: tasks own disjoint column ranges of the
//! table and each walks the ids in order, so every element is summed in the same (id) order on
//! every run and for any thread count.

use super::par::{chunk_len, MIN_CHUNK};
use super::Real;
use rayon::prelude::*;

/// Row of the shard holding `id`, if it is there.
#[inline]
fn local_row(id: u32, vocab_start: usize, rows: usize) -> Option<usize> {
    (id as usize).checked_sub(vocab_start).filter(|&r| r < rows)
}

pub fn embedding_fwd<T: Real>(out: &mut [T], table: &[T], ids: &[u32], dim: usize, vocab_start: usize) {
    assert!(
        dim > 0 && table.len().is_multiple_of(dim),
        "embedding_fwd: table of {} elements is not [vocab, {dim}]",
        table.len()
    );
    assert_eq!(
        out.len(),
        ids.len() * dim,
        "embedding_fwd: out has {} elements, expected [{}, {dim}]",
        out.len(),
        ids.len()
    );
    let rows = table.len() / dim;
    let rpt = (chunk_len(out.len(), dim) / dim).max(1);
    out.par_chunks_mut(rpt * dim)
        .zip(ids.par_chunks(rpt))
        .for_each(|(o, ids)| {
            for (row, &id) in o.chunks_exact_mut(dim).zip(ids) {
                match local_row(id, vocab_start, rows) {
                    Some(r) => row.copy_from_slice(&table[r * dim..(r + 1) * dim]),
                    None => row.fill(T::zero()),
                }
            }
        });
}

/// `dtable[ids[i], :] += dout[i, :]` in increasing `i` for every element.
pub fn embedding_bwd<T: Real>(dtable: &mut [T], dout: &[T], ids: &[u32], dim: usize, vocab_start: usize) {
    assert!(
        dim > 0 && dtable.len().is_multiple_of(dim),
        "embedding_bwd: dtable of {} elements is not [vocab, {dim}]",
        dtable.len()
    );
    assert_eq!(
        dout.len(),
        ids.len() * dim,
        "embedding_bwd: dout has {} elements, expected [{}, {dim}]",
        dout.len(),
        ids.len()
    );
    let vocab = dtable.len() / dim;
    // Column ranges of at least 64 elements, enough of them to feed the threads.
    let threads = rayon::current_num_threads();
    let cols = if dout.len() < MIN_CHUNK {
        dim
    } else {
        dim.div_ceil(2 * threads).max(64).min(dim)
    };
    let table = super::par::SyncPtr::new(dtable.as_mut_ptr());
    (0..dim.div_ceil(cols)).into_par_iter().for_each(|r| {
        let (c0, c1) = (r * cols, ((r + 1) * cols).min(dim));
        for (i, &id) in ids.iter().enumerate() {
            let Some(row) = local_row(id, vocab_start, vocab) else { continue };
            let src = &dout[i * dim + c0..i * dim + c1];
            // SAFETY: `row < vocab`, and column range [c0, c1) belongs to this task only.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(table.get().add(row * dim + c0), c1 - c0)
            };
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::testutil::{check_grad, dot, rand_vec, Rng};

    #[test]
    fn embedding_forward_gathers_rows() {
        let table = vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let mut out = vec![0.0; 6];
        embedding_fwd(&mut out, &table, &[2, 0, 2], 2, 0);
        assert_eq!(out, vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    }

    #[test]
    fn embedding_backward_finite_difference_repeated_ids() {
        let mut rng = Rng::new(7);
        let (vocab, dim) = (5, 3);
        let ids = vec![1u32, 3, 1, 1, 0, 3];
        let table = rand_vec(&mut rng, vocab * dim);
        let r = rand_vec(&mut rng, ids.len() * dim);
        let d0 = rand_vec(&mut rng, table.len());
        let mut dt = d0.clone();
        embedding_bwd(&mut dt, &r, &ids, dim, 0);
        let dt: Vec<f64> = dt.iter().zip(&d0).map(|(a, b)| a - b).collect();
        check_grad("embedding dtable", &table, &dt, 100, 4, |t| {
            let mut out = vec![0.0; ids.len() * dim];
            embedding_fwd(&mut out, t, &ids, dim, 0);
            dot(&out, &r)
        });
    }

    #[test]
    fn embedding_backward_parallel_is_deterministic_and_ordered() {
        let mut rng = Rng::new(8);
        let (vocab, dim, n) = (50, 384, 400);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        let dout = rand_vec(&mut rng, n * dim);
        let mut want = vec![0.0; vocab * dim];
        for (i, &id) in ids.iter().enumerate() {
            for j in 0..dim {
                want[id as usize * dim + j] += dout[i * dim + j];
            }
        }
        for _ in 0..3 {
            let mut got = vec![0.0; vocab * dim];
            embedding_bwd(&mut got, &dout, &ids, dim, 0);
            assert_eq!(got, want, "must equal the in-order serial sum bit for bit");
        }
    }

    #[test]
    fn vocab_shards_split_rows_and_gradients() {
        // Rows 0..5 split as [0, 3) and [3, 5): the two shards' outputs add up to the whole lookup,
        // and each shard's gradient is its rows of the whole gradient.
        let mut rng = Rng::new(11);
        let (vocab, dim) = (5, 4);
        let ids = vec![4u32, 0, 3, 2, 4];
        let table = rand_vec(&mut rng, vocab * dim);
        let dout = rand_vec(&mut rng, ids.len() * dim);
        let mut whole = vec![0.0; ids.len() * dim];
        embedding_fwd(&mut whole, &table, &ids, dim, 0);
        let (mut a, mut b) = (vec![f64::NAN; whole.len()], vec![f64::NAN; whole.len()]);
        embedding_fwd(&mut a, &table[..3 * dim], &ids, dim, 0);
        embedding_fwd(&mut b, &table[3 * dim..], &ids, dim, 3);
        let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(sum, whole);
        let mut g = vec![0.0; vocab * dim];
        embedding_bwd(&mut g, &dout, &ids, dim, 0);
        let (mut ga, mut gb) = (vec![0.0; 3 * dim], vec![0.0; 2 * dim]);
        embedding_bwd(&mut ga, &dout, &ids, dim, 0);
        embedding_bwd(&mut gb, &dout, &ids, dim, 3);
        assert_eq!([ga, gb].concat(), g);
    }
}
