//! Distribution: where a rank sits in the TP x DP x PP grid (topology.rs), the MPI world and its
//! sub-communicators (mpi.rs), the collectives trait the parallel code uses (comm.rs), the
//! collectives on device buffers (device.rs: the trait; cuda_aware_mpi.rs: CUDA-aware MPI; nccl.rs:
//! NCCL, opened by nccl_lib.rs, or its emulation over MPI for the emulated device), the analytic
//! communication volume of a layout (traffic.rs), and errors that every rank returns together
//! (agree.rs).

pub mod agree;
pub mod comm;
mod cuda_aware_mpi;
pub mod device;
pub mod nccl;
pub mod nccl_lib;
mod nccl_emulated;
pub mod mpi;
pub mod topology;
pub mod traffic;

pub use comm::{Collectives, CommStats, LocalGroup, MpiGroup, ParallelGroups};
pub use self::mpi::MpiWorld;
pub use topology::Topology;
