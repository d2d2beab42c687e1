//! The TP x DP x PP grid with Megatron-LM's rank order: tensor-parallel rank varies fastest, then
//! data-parallel, then pipeline stage. Example, 16 ranks with TP 2 and PP 4: TP groups [0,1],
//! DP groups [0,2], PP groups [0,4,8,12].

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub world: usize,
    pub rank: usize,
    pub tp: usize,
    pub dp: usize,
    pub pp: usize,
    pub tp_rank: usize,
    pub dp_rank: usize,
    pub pp_rank: usize,
}

impl Topology {
    pub fn new(world: usize, rank: usize, tp: usize, pp: usize) -> Result<Self> {
        if tp == 0 || pp == 0 || world % (tp * pp) != 0 {
            bail!("world size {world} is not divisible by tp x pp = {tp} x {pp}");
        }
        if rank >= world {
            bail!("rank {rank} outside a world of {world}");
        }
        let dp = world / (tp * pp);
        Ok(Topology {
            world,
            rank,
            tp,
            dp,
            pp,
            tp_rank: rank % tp,
            dp_rank: (rank / tp) % dp,
            pp_rank: rank / (tp * dp),
        })
    }

    /// Global rank of grid coordinates (tp, dp, pp).
    pub fn rank_of(&self, tp_rank: usize, dp_rank: usize, pp_rank: usize) -> usize {
        tp_rank + self.tp * (dp_rank + self.dp * pp_rank)
    }

    pub fn tp_group(&self) -> Vec<usize> {
        (0..self.tp).map(|t| self.rank_of(t, self.dp_rank, self.pp_rank)).collect()
    }

    pub fn dp_group(&self) -> Vec<usize> {
        (0..self.dp).map(|d| self.rank_of(self.tp_rank, d, self.pp_rank)).collect()
    }

    pub fn pp_group(&self) -> Vec<usize> {
        (0..self.pp).map(|p| self.rank_of(self.tp_rank, self.dp_rank, p)).collect()
    }
}

/// "1 rank", "8 ranks": a count of ranks in a sentence.
pub fn ranks(n: usize) -> String {
    format!("{n} rank{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_order_for_16_ranks_tp2_pp4() {
        let t0 = Topology::new(16, 0, 2, 4).unwrap();
        assert_eq!(t0.dp, 2);
        assert_eq!(t0.tp_group(), vec![0, 1]);
        assert_eq!(t0.dp_group(), vec![0, 2]);
        assert_eq!(t0.pp_group(), vec![0, 4, 8, 12]);
        let t13 = Topology::new(16, 13, 2, 4).unwrap();
        assert_eq!((t13.tp_rank, t13.dp_rank, t13.pp_rank), (1, 0, 3));
        for r in 0..16 {
            let t = Topology::new(16, r, 2, 4).unwrap();
            assert_eq!(t.rank_of(t.tp_rank, t.dp_rank, t.pp_rank), r);
        }
        assert!(Topology::new(12, 0, 8, 1).is_err());
    }
}
