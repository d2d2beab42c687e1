//! The MPI world: initialised once at start-up (also when the binary runs without mpirun, as a
//! singleton), it gives this process its rank, and ends the whole job when any rank fails.

use super::comm::{Collectives, MpiGroup, ParallelGroups};
use super::device::CommKind;
use super::nccl::NcclGroup;
use anyhow::Result;
use super::topology::Topology;
use mpi::topology::{Communicator, SimpleCommunicator};

pub struct MpiWorld {
    // Dropping the universe finalises MPI, so it lives as long as the world.
    _universe: mpi::environment::Universe,
    pub world: SimpleCommunicator,
}

impl MpiWorld {
    /// Initialises MPI; `None` when MPI cannot start.
    pub fn init() -> Option<MpiWorld> {
        let universe = mpi::initialize()?;
        let world = universe.world();
        Some(MpiWorld { _universe: universe, world })
    }

    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// All ranks as one collectives group (for jobs outside the training grid, e.g. prep).
    pub fn world_group(&self) -> MpiGroup {
        MpiGroup::new(self.world.duplicate())
    }

    /// This rank's groups in the grid (each split is collective: every rank calls this).
    pub fn groups(&self, t: &Topology) -> ParallelGroups {
        self.groups_on(t, CommKind::Host).expect("host groups need no device communicator")
    }

    /// The groups, the TP, DP and PP ones with device collectives and messages of `comm` (NCCL
    /// communicators are made here: this rank's CUDA device must be current). The model-parallel
    /// group's scalar sums stay on host memory.
    pub fn groups_on(&self, t: &Topology, comm: CommKind) -> Result<ParallelGroups> {
        let world = MpiGroup::new(self.world.duplicate());
        let device = |g: MpiGroup| -> Result<Box<dyn Collectives>> {
            Ok(match comm {
                _ if g.size() == 1 => Box::new(g),
                CommKind::Host => Box::new(g),
                CommKind::Mpi => Box::new(g.cuda_aware()),
                CommKind::Nccl => Box::new(NcclGroup::new(g)?),
                CommKind::NcclEmulated => Box::new(NcclGroup::emulated(g)),
            })
        };
        Ok(ParallelGroups {
            // same DP rank and stage, ordered by TP rank
            tp: device(world.split_group(t.dp_rank + t.dp * t.pp_rank, t.tp_rank))?,
            // same TP rank and stage, ordered by DP rank
            dp: device(world.split_group(t.tp_rank + t.tp * t.pp_rank, t.dp_rank))?,
            // same TP and DP rank, ordered by stage
            pp: device(world.split_group(t.tp_rank + t.tp * t.dp_rank, t.pp_rank))?,
            // same DP rank: one model replica
            mp: world.split(t.dp_rank, t.rank),
        })
    }

    /// (rank among the ranks of this node, ranks on this node), from MPI_Comm_split_type(SHARED):
    /// the local rank picks the GPU.
    pub fn node_local(&self) -> (usize, usize) {
        let node = self.world.split_shared(self.world.rank());
        (node.rank() as usize, node.size() as usize)
    }

    /// Ends every rank of the job (MPI_Abort) with `code`.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
