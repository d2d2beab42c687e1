//! Distribution: where a rank sits in the TP x DP x PP grid (topology.rs) and the MPI world it
//! talks through (mpi.rs).

pub mod mpi;
pub mod topology;

pub use self::mpi::MpiWorld;
pub use topology::Topology;
