//! Distribution: where a rank sits in the TP x DP x PP grid (topology.rs), the MPI world and its
//! sub-communicators (mpi.rs), and the collectives trait the parallel code uses (comm.rs).

pub mod comm;
pub mod mpi;
pub mod topology;

pub use comm::{Collectives, LocalGroup, MpiGroup, ParallelGroups};
pub use self::mpi::MpiWorld;
pub use topology::Topology;
