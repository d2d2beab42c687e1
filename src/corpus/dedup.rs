//! Distributed duplicate removal. Every document has a global order key, unique across ranks (its
//! input file's index in name order, then its record index); a document is a duplicate when a
//! document earlier in that order (kept or not) has the same exact key, or the same key in the same
//! band (band i of one against band i of the other). So the earliest document of each group is
//! kept, and chains drop: A ~ B in one band and B ~ C in another keep A only.
//!
//! Each key goes, as the triple (band id, key, order) with the exact key as band `EXACT_BAND`, to
//! the rank owning the hash of (band id, key), in one MPI all-to-all with varying counts; a rank so
//! holds 1/N of all keys. Each owner groups its keys by (band id, key), marks every entry whose
//! order is above its group's least as a duplicate, and sends those orders back to the ranks they
//! came from in a second all-to-all. Exchanges go in rounds of at most `ROUND_WORDS` words sent per
//! rank (MPI counts are 32-bit).

use crate::mix::mix64;
use anyhow::Result;
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::{Communicator, SimpleCommunicator};
use rayon::slice::ParallelSliceMut;
use std::collections::HashSet;

/// A document's dedup keys.
#[derive(Clone, Debug, PartialEq)]
pub struct DocKeys {
    /// Global order: (input index << 32) | record index.
    pub order: u64,
    pub exact: u64,
    pub bands: Vec<u64>,
}

/// The band id of the exact key.
const EXACT_BAND: u64 = u64::MAX;

/// Most u64 words a rank sends in one round of an exchange (1 GiB).
const ROUND_WORDS: usize = 1 << 27;

/// The `order` keys of this rank's documents that are duplicates (collective over `comm`).
pub fn duplicates(comm: &SimpleCommunicator, local: &[DocKeys]) -> Result<HashSet<u64>> {
    duplicates_in_rounds(comm, local, ROUND_WORDS)
}

fn duplicates_in_rounds(comm: &SimpleCommunicator, local: &[DocKeys], round_words: usize) -> Result<HashSet<u64>> {
    let size = comm.size() as usize;
    let incoming = exchange(comm, outgoing(local, size), round_words)?;
    let mut replies = vec![Vec::new(); size];
    for (source, order) in losers(incoming) {
        replies[source].push(order);
    }
    for orders in &mut replies {
        orders.sort_unstable();
        orders.dedup();
    }
    Ok(exchange(comm, replies, round_words)?.into_iter().flatten().collect())
}

/// The rank of `size` that owns (band id, key).
fn owner(band: u64, key: u64, size: usize) -> usize {
    (mix64(key ^ mix64(band)) % size as u64) as usize
}

/// Per destination rank, the (band id, key, order) triples of `docs` it owns, flattened.
fn outgoing(docs: &[DocKeys], size: usize) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new(); size];
    for doc in docs {
        let bands = doc.bands.iter().enumerate().map(|(band, &key)| (band as u64, key));
        for (band, key) in bands.chain([(EXACT_BAND, doc.exact)]) {
            out[owner(band, key, size)].extend([band, key, doc.order]);
        }
    }
    out
}

/// The owner's side: from the triples each source rank sent (`incoming[source]`), the
/// (source, order) of every entry whose order is above the least of its (band id, key) group.
fn losers(incoming: Vec<Vec<u64>>) -> Vec<(usize, u64)> {
    let mut entries = Vec::with_capacity(incoming.iter().map(|words| words.len() / 3).sum());
    for (source, words) in incoming.into_iter().enumerate() {
        entries.extend(words.chunks_exact(3).map(|t| (t[0], t[1], t[2], source)));
    }
    entries.par_sort_unstable();
    entries
        .chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
        .flat_map(|group| {
            let least = group[0].2;
            group.iter().filter(move |e| e.2 > least).map(|e| (e.3, e.2))
        })
        .collect()
}

/// Sends `outgoing[r]` to rank r and returns what each rank sent here, by source rank (collective).
/// In rounds: each round carries at most `round_words / size` (at least 1) words per pair of ranks,
/// and every rank takes part in as many rounds as the busiest needs.
fn exchange(comm: &SimpleCommunicator, outgoing: Vec<Vec<u64>>, round_words: usize) -> Result<Vec<Vec<u64>>> {
    let size = outgoing.len();
    let chunk = (round_words / size.max(1)).clamp(1, i32::MAX as usize / size.max(1));
    let mine = outgoing.iter().map(|words| words.len().div_ceil(chunk)).max().unwrap_or(0) as u64;
    let mut rounds = 0u64;
    comm.all_reduce_into(&mine, &mut rounds, SystemOperation::max());
    let mut incoming = vec![Vec::new(); size];
    for round in 0..rounds as usize {
        let slices: Vec<&[u64]> = outgoing
            .iter()
            .map(|words| {
                let start = (round * chunk).min(words.len());
                &words[start..(start + chunk).min(words.len())]
            })
            .collect();
        let send_counts: Vec<i32> = slices.iter().map(|s| s.len() as i32).collect();
        let mut recv_counts = vec![0i32; size];
        comm.all_to_all_into(&send_counts[..], &mut recv_counts[..]);
        anyhow::ensure!(recv_counts.iter().all(|&c| c >= 0), "dedup exchange: negative count received");
        let send: Vec<u64> = slices.concat();
        let mut recv = vec![0u64; recv_counts.iter().map(|&c| c as usize).sum()];
        let (send_displs, recv_displs) = (displacements(&send_counts), displacements(&recv_counts));
        comm.all_to_all_varcount_into(
            &Partition::new(&send[..], &send_counts[..], &send_displs[..]),
            &mut PartitionMut::new(&mut recv[..], &recv_counts[..], &recv_displs[..]),
        );
        for ((words, &at), &count) in incoming.iter_mut().zip(&recv_displs).zip(&recv_counts) {
            words.extend_from_slice(&recv[at as usize..(at + count) as usize]);
        }
    }
    Ok(incoming)
}

/// Offsets of consecutive blocks of `counts` words (their sum fits i32: `exchange` bounds it).
fn displacements(counts: &[i32]) -> Vec<i32> {
    counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpi::environment::Universe;
    use std::sync::{Mutex, OnceLock};

    /// Runs `f` on MPI's self communicator, MPI initialised once for the test process and used by
    /// one test at a time.
    fn with_self_comm<R>(f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        static MPI: OnceLock<Mutex<Option<Universe>>> = OnceLock::new();
        let guard = MPI.get_or_init(|| Mutex::new(mpi::initialize())).lock().unwrap_or_else(|e| e.into_inner());
        let result = f(&SimpleCommunicator::self_comm());
        drop(guard);
        result
    }

    fn doc(order: u64, exact: u64, bands: &[u64]) -> DocKeys {
        DocKeys { order, exact, bands: bands.to_vec() }
    }

    /// The definition, pair by pair.
    fn brute_force(docs: &[DocKeys]) -> HashSet<u64> {
        let same = |a: &DocKeys, b: &DocKeys| a.exact == b.exact || a.bands.iter().zip(&b.bands).any(|(x, y)| x == y);
        docs.iter().filter(|d| docs.iter().any(|e| e.order < d.order && same(d, e))).map(|d| d.order).collect()
    }

    /// `n` documents with 4 bands whose keys collide often: band keys from 0..60, exact keys from
    /// 0..150, orders unique and shuffled ((input << 32) | record).
    fn random_docs(seed: u64, n: u64) -> Vec<DocKeys> {
        let mut state = seed;
        let mut next = |m: u64| {
            state += 1;
            mix64(state) % m
        };
        let mut docs: Vec<DocKeys> = (0..n)
            .map(|i| DocKeys { order: ((i % 7) << 32) | i, exact: next(1000), bands: (0..4).map(|_| next(1000)).collect() })
            .collect();
        for i in (1..docs.len()).rev() {
            docs.swap(i, next(i as u64 + 1) as usize);
        }
        docs
    }

    #[test]
    fn exact_and_band_duplicates_and_chains() {
        let docs = [
            doc(1, 100, &[10, 20]),
            doc(2, 101, &[10, 21]), // band 0 of 1
            doc(3, 102, &[11, 21]), // band 1 of 2, which is itself a duplicate: dropped too
            doc(4, 100, &[12, 22]), // exact of 1
            doc(5, 103, &[22, 12]), // 4's keys in the other bands: not a duplicate
            doc(6, 12, &[13, 23]),  // exact key equal to 4's band 0: not a duplicate
            doc(0, 104, &[14, 23]), // earlier than 6, which it makes a duplicate
        ];
        let expected: HashSet<u64> = [2, 3, 4, 6].into();
        assert_eq!(brute_force(&docs), expected);
        with_self_comm(|comm| {
            assert_eq!(duplicates(comm, &docs).unwrap(), expected);
            let reversed: Vec<DocKeys> = docs.iter().rev().cloned().collect();
            assert_eq!(duplicates(comm, &reversed).unwrap(), expected);
            assert!(duplicates(comm, &[]).unwrap().is_empty());
        });
    }

    #[test]
    fn one_rank_matches_brute_force_in_any_order_and_round_size() {
        let docs = random_docs(1, 300);
        let expected = brute_force(&docs);
        assert!(expected.len() > 60 && expected.len() < 240, "{} duplicates: collisions too rare or too common", expected.len());
        let mut reversed = docs.clone();
        reversed.reverse();
        with_self_comm(|comm| {
            assert_eq!(duplicates(comm, &docs).unwrap(), expected);
            assert_eq!(duplicates(comm, &reversed).unwrap(), expected);
            // Rounds of 7 words: a triple split across rounds, many rounds.
            assert_eq!(duplicates_in_rounds(comm, &docs, 7).unwrap(), expected);
        });
    }

    /// Four simulated ranks (the last with no documents): what each owner's `losers` sends back to
    /// each source is exactly the brute-force duplicates among that source's documents.
    #[test]
    fn simulated_ranks_match_brute_force() {
        let docs = random_docs(2, 400);
        let expected = brute_force(&docs);
        let size = 4;
        let local: Vec<&[DocKeys]> = vec![&docs[..150], &docs[150..220], &docs[220..], &[]];
        let sent: Vec<Vec<Vec<u64>>> = local.iter().map(|d| outgoing(d, size)).collect();
        for words in &sent[0] {
            assert!(words.len() > 150 * 5 * 3 / 8, "owners get a fair share of the keys");
        }
        let mut found = vec![HashSet::new(); size];
        for owner in 0..size {
            let incoming: Vec<Vec<u64>> = sent.iter().map(|per_dest| per_dest[owner].clone()).collect();
            for (source, order) in losers(incoming) {
                found[source].insert(order);
            }
        }
        for (rank, docs) in local.iter().enumerate() {
            let mine: HashSet<u64> = docs.iter().map(|d| d.order).filter(|o| expected.contains(o)).collect();
            assert_eq!(found[rank], mine, "rank {rank}");
        }
    }

    #[test]
    fn displacements_are_prefix_sums() {
        assert_eq!(displacements(&[3, 0, 2, 5]), vec![0, 3, 3, 5]);
        assert!(displacements(&[]).is_empty());
    }
}
