//! Errors that every rank holds. A step made of collective calls (a checkpoint's HDF5 writes) must
//! not let one rank return early while the others wait in the next collective: the job would hang.
//! `agree` ends such a step on every rank together: when any rank failed, every rank returns the
//! same `SharedError`, the text of the lowest failing rank, which main prints once (rank 0) before
//! every rank exits, with no MPI_Abort needed.

use anyhow::Result;
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::topology::{Communicator, SimpleCommunicator};

/// One rank's error, returned by every rank of the communicator.
#[derive(Debug)]
pub struct SharedError {
    /// The lowest rank that failed (in the communicator `agree` ran on).
    pub rank: usize,
    pub size: usize,
    pub message: String,
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.size {
            1 => f.write_str(&self.message),
            _ => write!(f, "{} (rank {} of {})", self.message, self.rank, self.size),
        }
    }
}

impl std::error::Error for SharedError {}

/// Whether `e` is an error every rank returns together.
pub fn is_shared(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<SharedError>())
}

/// Collectively: this rank's `local` result if every rank succeeded, else on every rank the error
/// of the lowest failing rank (its full context chain). Every rank of `comm` must call it.
pub fn agree<T>(comm: &SimpleCommunicator, local: Result<T>) -> Result<T> {
    let me = comm.rank();
    let mine = if local.is_err() { me } else { i32::MAX };
    let mut first = i32::MAX;
    comm.all_reduce_into(&mine, &mut first, SystemOperation::min());
    if first == i32::MAX {
        return local;
    }
    if let Err(e) = &local {
        if is_shared(e) {
            // Already agreed in a nested step: every rank holds it.
            return local;
        }
    }
    let mut text = match &local {
        Err(e) if me == first => format!("{e:#}").into_bytes(),
        _ => Vec::new(),
    };
    let root = comm.process_at_rank(first);
    let mut len = text.len() as u64;
    root.broadcast_into(&mut len);
    text.resize(len as usize, 0);
    root.broadcast_into(&mut text[..]);
    let message = String::from_utf8_lossy(&text).into_owned();
    Err(SharedError { rank: first as usize, size: comm.size() as usize, message }.into())
}
