//! What keeps a checkpoint honest: every value written or read is finite, and every tensor carries
//! a checksum that a load verifies, so that NaN weights are never saved as a valid `latest` and a
//! flipped bit on disk never loads silently.
//!
//! The checksum of a tensor is the wrapping sum over its elements of `mix64(i * K ^ bits)`, for
//! element `i` (global flat index) with f32 bit pattern `bits`. A sum because ranks write and read
//! disjoint pieces in any layout: each adds up its own and one all-reduce combines them. For a
//! fixed `i` the term is a bijection of `bits`, so any one changed value always changes the sum;
//! several cancel with probability about 2^-64.

use crate::mix::mix64;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per parallel chunk of a scan.
const CHUNK: usize = 1 << 16;

fn term(i: u64, bits: u32) -> u64 {
    mix64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ bits as u64)
}

/// The checksum terms of `values`, the global elements `first..`, summed.
pub fn checksum(values: &[f32], first: u64) -> u64 {
    values
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let base = first + (c * CHUNK) as u64;
            chunk.iter().enumerate().fold(0u64, |acc, (j, v)| acc.wrapping_add(term(base + j as u64, v.to_bits())))
        })
        .reduce(|| 0, u64::wrapping_add)
}

/// The first non-finite value of `values` (the global elements `first..`): (its index, the value).
pub fn first_non_finite(values: &[f32], first: u64) -> Option<(u64, f32)> {
    values
        .par_chunks(CHUNK)
        .enumerate()
        .find_map_first(|(c, chunk)| chunk.iter().position(|v| !v.is_finite()).map(|j| (first + (c * CHUNK + j) as u64, chunk[j])))
}

/// The parts of this rank's sorted, disjoint `mine` that no lower rank covers, so that over all
/// ranks every element read is counted once. `lower`: the ranges of the lower ranks (any order).
pub fn counted_here(mine: &[Range<u64>], lower: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut covered: Vec<Range<u64>> = lower.iter().filter(|r| r.start < r.end).cloned().collect();
    covered.sort_by_key(|r| r.start);
    let mut out = Vec::new();
    for r in mine {
        let mut at = r.start;
        for c in &covered {
            if c.end <= at {
                continue;
            }
            if c.start >= r.end {
                break;
            }
            if c.start > at {
                out.push(at..c.start);
            }
            at = at.max(c.end);
            if at >= r.end {
                break;
            }
        }
        if at < r.end {
            out.push(at..r.end);
        }
    }
    out
}

/// Elements in the union of `ranges` (any order, may overlap).
pub fn union_len(ranges: &[Range<u64>]) -> u64 {
    let mut sorted: Vec<&Range<u64>> = ranges.iter().filter(|r| r.start < r.end).collect();
    sorted.sort_by_key(|r| r.start);
    let (mut total, mut end) = (0, 0);
    for r in sorted {
        let start = r.start.max(end);
        if r.end > start {
            total += r.end - start;
            end = r.end;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_changed_value_or_position_changes_the_checksum() {
        let values: Vec<f32> = (0..200_000).map(|i| (i as f32 * 0.37).sin()).collect();
        let whole = checksum(&values, 0);
        // Pieces add up to the whole, however the tensor is cut.
        assert_eq!(checksum(&values[..70_001], 0).wrapping_add(checksum(&values[70_001..], 70_001)), whole);
        for (i, bit) in [(0usize, 0u32), (12_345, 31), (199_999, 22), (65_536, 7)] {
            let mut flipped = values.clone();
            flipped[i] = f32::from_bits(flipped[i].to_bits() ^ (1 << bit));
            assert_ne!(checksum(&flipped, 0), whole, "bit {bit} of element {i}");
        }
        let mut swapped = values.clone();
        swapped.swap(10, 11);
        assert_ne!(checksum(&swapped, 0), whole, "two values swapped");
        assert_ne!(checksum(&values, 1), whole, "the same values at other positions");
    }

    #[test]
    fn the_first_non_finite_value_is_found_with_its_global_index() {
        let mut v = vec![1.0f32; 300_000];
        assert_eq!(first_non_finite(&v, 0), None);
        v[250_000] = f32::INFINITY;
        v[170_000] = f32::NAN;
        let (i, x) = first_non_finite(&v, 1000).unwrap();
        assert_eq!(i, 171_000);
        assert!(x.is_nan());
    }

    #[test]
    fn each_element_is_counted_by_the_lowest_rank_that_reads_it() {
        assert_eq!(counted_here(&[0..10, 20..30], &[]), vec![0..10, 20..30]);
        assert_eq!(counted_here(&[0..10, 20..30], &[5..8, 25..40, 0..2]), vec![2..5, 8..10, 20..25]);
        assert_eq!(counted_here(&[0..10], &[0..10]), Vec::<Range<u64>>::new());
        assert_eq!(union_len(&[0..10, 5..12, 20..21, 3..3]), 13);
    }
}
