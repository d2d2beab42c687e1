//! Which samples make a global batch, and which of them a data-parallel rank reads: the global
//! batch after `consumed` samples is samples `consumed .. consumed + global_batch` of the blended
//! stream (with a constant batch, step s starts at `(s - 1) * global_batch`; under ramp-up
//! src/batch_size.rs gives each step's size), and DP rank `r` of `dp` reads the `r`-th contiguous
//! `global_batch / dp` of them (its micro-batches split that slice in order). So a batch depends
//! only on (seed, consumed samples, data), never on DP size, micro-batch split or rank count, and
//! resuming at the consumed samples a checkpoint records continues the same stream.
//!
//! `swallow data batches` prints, under any number of mpirun ranks (each a DP rank), a checksum of
//! every row of every global batch, gathered from all ranks to rank 0: the observable that tests
//! compare across DP sizes.

use crate::data::blend::{BlendedSampler, Part, Split};
use crate::data::spec::DataSpec;
use anyhow::{bail, Result};
use mpi::collective::Root;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::ops::Range;

/// Stream indices of the samples DP rank `dp_rank` of `dp` reads in the global batch of
/// `global_batch` samples that starts after `consumed` samples.
pub fn local_rows(consumed: u64, global_batch: usize, dp: usize, dp_rank: usize) -> Range<u64> {
    let local = (global_batch / dp) as u64;
    let first = consumed + dp_rank as u64 * local;
    first..first + local
}

/// Read the samples `rows` into `out` (row-major, `seq_len + 1` tokens per row).
pub fn fill(sampler: &BlendedSampler, rows: Range<u64>, out: &mut [u32]) -> Result<()> {
    let row = sampler.seq_len() + 1;
    for (i, dst) in rows.zip(out.chunks_mut(row)) {
        sampler.sample(i, dst)?;
    }
    Ok(())
}

/// FNV-1a 64 of a row's ids (as u32 little-endian).
pub fn row_checksum(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in ids.iter().flat_map(|t| t.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    h
}

pub struct BatchesOptions<'a> {
    pub data: &'a str,
    pub split: Option<&'a str>,
    pub seq_len: usize,
    pub global_batch: usize,
    pub seed: u64,
    pub vocab_size: usize,
    /// Steps already consumed (resume point); prints steps `start_step + 1 ..= steps`.
    pub start_step: u64,
    pub steps: u64,
}

/// `swallow data batches`: every rank is a DP rank; rank 0 prints `step S: c0 c1 ...` with the
/// checksum of each row of global batch S in stream order.
pub fn run(o: &BatchesOptions, world: &SimpleCommunicator) -> Result<()> {
    let (dp, rank) = (world.size() as usize, world.rank() as usize);
    if o.global_batch == 0 || !o.global_batch.is_multiple_of(dp) {
        bail!("global batch {} is not a positive multiple of the {dp} data-parallel ranks", o.global_batch);
    }
    let spec = DataSpec::parse(o.data)?;
    let sampler = match o.split {
        None => BlendedSampler::new(&spec, o.seq_len, o.seed, o.vocab_size)?,
        Some(s) => BlendedSampler::new_part(&spec, &Split::parse(s)?, Part::Train, o.seq_len, o.seed, o.vocab_size)?,
    };
    let local = o.global_batch / dp;
    let mut rows = vec![0u32; local * (o.seq_len + 1)];
    let mut sums = vec![0u64; local];
    let mut all = vec![0u64; o.global_batch];
    for step in o.start_step + 1..=o.steps {
        fill(&sampler, local_rows((step - 1) * o.global_batch as u64, o.global_batch, dp, rank), &mut rows)?;
        for (s, r) in sums.iter_mut().zip(rows.chunks(o.seq_len + 1)) {
            *s = row_checksum(r);
        }
        let root = world.process_at_rank(0);
        if rank == 0 {
            root.gather_into_root(&sums[..], &mut all[..]);
            let line: Vec<String> = all.iter().map(|c| format!("{c:016x}")).collect();
            println!("step {step}: {}", line.join(" "));
        } else {
            root.gather_into(&sums[..]);
        }
    }
    Ok(())
}
