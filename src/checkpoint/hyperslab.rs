//! Hyperslab selections of logical tensors: a rank's flat, row-major global element ranges of a
//! tensor as HDF5 hyperslab blocks (a flat range is at most three blocks: a partial row, whole
//! rows, a partial row; consecutive ranges are joined and blocks that stack along dim 0 merge, so
//! a row-parallel shard is one block). Pure arithmetic, used by dist.rs for every read and write.

use anyhow::{bail, ensure, Result};
use std::ops::Range;

/// One hyperslab block: start and count per dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub start: Vec<u64>,
    pub count: Vec<u64>,
}

/// The blocks of the row-major `shape` covering the flat element range `a..b`.
pub fn range_blocks(shape: &[u64], a: u64, b: u64, out: &mut Vec<Block>) {
    if a >= b {
        return;
    }
    if shape.len() == 1 {
        out.push(Block { start: vec![a], count: vec![b - a] });
        return;
    }
    let inner: u64 = shape[1..].iter().product();
    let prefixed = |row: u64, rows: u64, sub: Vec<Block>, out: &mut Vec<Block>| {
        for s in sub {
            out.push(Block { start: [vec![row], s.start].concat(), count: [vec![rows], s.count].concat() });
        }
    };
    let (r0, r1) = (a / inner, b / inner);
    if r0 == r1 {
        let mut sub = Vec::new();
        range_blocks(&shape[1..], a % inner, b % inner, &mut sub);
        prefixed(r0, 1, sub, out);
        return;
    }
    let mut first_full = r0;
    if a % inner != 0 {
        let mut sub = Vec::new();
        range_blocks(&shape[1..], a % inner, inner, &mut sub);
        prefixed(r0, 1, sub, out);
        first_full += 1;
    }
    if r1 > first_full {
        out.push(Block { start: [vec![first_full], vec![0; shape.len() - 1]].concat(), count: [vec![r1 - first_full], shape[1..].to_vec()].concat() });
    }
    if b % inner != 0 {
        let mut sub = Vec::new();
        range_blocks(&shape[1..], 0, b % inner, &mut sub);
        prefixed(r1, 1, sub, out);
    }
}

/// Sorted, non-overlapping ranges inside a tensor of `numel` elements, as merged hyperslab blocks
/// (consecutive ranges joined, blocks stacking along dim 0 merged), in file order.
pub fn selection_blocks(name: &str, shape: &[u64], ranges: &[Range<u64>]) -> Result<Vec<Block>> {
    ensure!(!shape.is_empty(), "tensor {name}: scalar tensors are not supported");
    let numel: u64 = shape.iter().product();
    let mut merged: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        ensure!(r.end <= numel, "tensor {name} of shape {shape:?}: range {r:?} is past its {numel} elements");
        match merged.last_mut() {
            Some(last) if r.start < last.end => bail!("tensor {name}: ranges overlap or are unsorted ({last:?}, {r:?})"),
            Some(last) if r.start == last.end => last.end = r.end,
            _ if r.start < r.end => merged.push(r.clone()),
            _ => {}
        }
    }
    let mut blocks: Vec<Block> = Vec::new();
    for r in &merged {
        let mut bs = Vec::new();
        range_blocks(shape, r.start, r.end, &mut bs);
        for b in bs {
            match blocks.last_mut() {
                Some(l) if l.start[1..] == b.start[1..] && l.count[1..] == b.count[1..] && l.start[0] + l.count[0] == b.start[0] => {
                    l.count[0] += b.count[0];
                }
                _ => blocks.push(b),
            }
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(shape: &[u64], blocks: &[Block]) -> Vec<u64> {
        let mut out = Vec::new();
        for b in blocks {
            // Enumerate a 2-D block's elements in row-major order.
            let (rows, cols) = if shape.len() == 1 { (1, b.count[0]) } else { (b.count[0], b.count[1]) };
            for r in 0..rows {
                for c in 0..cols {
                    out.push(if shape.len() == 1 { b.start[0] + c } else { (b.start[0] + r) * shape[1] + b.start[1] + c });
                }
            }
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn a_flat_range_is_a_partial_row_whole_rows_and_a_partial_row() {
        let shape = [5, 4];
        let mut bs = Vec::new();
        range_blocks(&shape, 3, 17, &mut bs);
        assert_eq!(
            bs,
            vec![
                Block { start: vec![0, 3], count: vec![1, 1] },
                Block { start: vec![1, 0], count: vec![3, 4] },
                Block { start: vec![4, 0], count: vec![1, 1] },
            ]
        );
        for (a, b) in [(0, 20), (4, 8), (5, 7), (0, 1), (19, 20), (2, 14)] {
            let blocks = selection_blocks("t", &shape, &[a..b]).unwrap();
            assert_eq!(covered(&shape, &blocks), (a..b).collect::<Vec<_>>(), "{a}..{b}");
        }
    }

    #[test]
    fn column_slices_of_rows_merge_into_one_block() {
        // Rank 1 of a row-parallel [3, 8] weight over TP 2: columns 4..8 of every row.
        let ranges: Vec<Range<u64>> = (0..3).map(|r| r * 8 + 4..r * 8 + 8).collect();
        let blocks = selection_blocks("o", &[3, 8], &ranges).unwrap();
        assert_eq!(blocks, vec![Block { start: vec![0, 4], count: vec![3, 4] }]);
        let blocks = selection_blocks("x", &[10], &[0..3, 3..6, 8..10]).unwrap();
        assert_eq!(blocks.len(), 2);
    }

    #[test]
    fn bad_ranges_are_errors_naming_the_tensor() {
        let e = selection_blocks("w", &[2, 2], &[0..5]).unwrap_err().to_string();
        assert!(e.contains("w") && e.contains("past"), "{e}");
        let e = selection_blocks("w", &[2, 2], &[0..3, 2..4]).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
    }
}
