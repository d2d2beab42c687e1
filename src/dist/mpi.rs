//! The MPI world: initialised once at start-up (also when the binary runs without mpirun, as a
//! singleton), it gives this process its rank, and ends the whole job when any rank fails.

use super::comm::MpiGroup;
use super::topology::Topology;
use mpi::topology::{Color, Communicator, SimpleCommunicator};

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

    /// This rank's data-parallel group (MPI_Comm_split: same TP rank and PP stage, ordered by DP rank).
    pub fn dp_group(&self, topo: &Topology) -> MpiGroup {
        let color = (topo.tp_rank + topo.tp * topo.pp_rank) as i32;
        let comm = self
            .world
            .split_by_color_with_key(Color::with_value(color), topo.dp_rank as i32)
            .expect("every rank has a colour, so MPI_Comm_split returns a communicator");
        MpiGroup::new(comm)
    }

    /// This rank's tensor-parallel group (same DP rank and PP stage, ordered by TP rank).
    pub fn tp_group(&self, topo: &Topology) -> MpiGroup {
        let color = (topo.dp_rank + topo.dp * topo.pp_rank) as i32;
        let comm = self
            .world
            .split_by_color_with_key(Color::with_value(color), topo.tp_rank as i32)
            .expect("every rank has a colour, so MPI_Comm_split returns a communicator");
        MpiGroup::new(comm)
    }

    /// Ends every rank of the job (MPI_Abort) with `code`.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
