//! Page-cache hints for checkpoint I/O, so that the disk streams while the CPU moves tensors:
//! ahead of the reads, a read-ahead window (`posix_fadvise WILLNEED`): without it, one rank's
//! reads (large, but interleaved with HDF5's small metadata reads) defeat the kernel's sequential
//! read-ahead, and a cold read ran at about 40% of the speed it reaches with it (docs/CHECKPOINT.md);
//! behind the writes, early write-back of what was just written (`sync_file_range`), so that the
//! final fsync finds less left to do. Hints only: errors are ignored, and file systems that ignore
//! them lose nothing.

use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Bytes of the read-ahead window kept ahead of the reads.
pub const READ_AHEAD_BYTES: u64 = 512 << 20;

/// A second descriptor of a checkpoint file (the page cache is shared with MPI-IO's).
pub struct Hints(Option<std::fs::File>);

impl Hints {
    pub fn open(path: &Path) -> Hints {
        Hints(std::fs::File::open(path).ok())
    }

    /// Starts reading `bytes` of the file into the page cache (asynchronously).
    pub fn will_need(&self, bytes: Range<u64>) {
        if let Some(f) = &self.0 {
            // SAFETY: an advisory call on an open descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), bytes.start as i64, (bytes.end - bytes.start) as i64, libc::POSIX_FADV_WILLNEED) };
        }
    }

    /// Starts writing `bytes` of the file back to disk (asynchronously).
    pub fn write_back(&self, bytes: Range<u64>) {
        if let Some(f) = &self.0 {
            // SAFETY: an advisory call on an open descriptor.
            unsafe { libc::sync_file_range(f.as_raw_fd(), bytes.start as i64, (bytes.end - bytes.start) as i64, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
}
