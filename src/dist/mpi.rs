//! The MPI world: initialised once at start-up (also when the binary runs without mpirun, as a
//! singleton), it gives this process its rank, and ends the whole job when any rank fails.

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

    /// Ends every rank of the job (MPI_Abort) with `code`.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
