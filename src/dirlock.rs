//! One writer per output directory (train's `--save`, corpus's `--output`). Rank 0 of a run that
//! writes to DIR holds an exclusive flock(2) on DIR/.swallow.lock for the whole run; the kernel
//! releases it when the process ends, however it ends (an error, MPI_Abort, kill -9), so a crashed
//! run leaves no stale lock to clear. The file names the holder (host, pid, start time) for the
//! error a second run gets. On a file system without locks (flock fails with ENOLCK or EOPNOTSUPP)
//! the run warns and goes on.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

pub const LOCK_FILE: &str = ".swallow.lock";

/// Held for as long as it lives (the file stays open; closing it releases the lock).
pub struct DirLock {
    _file: File,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates within it on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { "?".into() }
}

/// Take the lock of output directory `dir` (created if missing; `flag` names it in messages, e.g.
/// "--save"), or say who holds it.
pub fn lock(dir: &Path, flag: &str) -> Result<DirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {flag} directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "{flag} {}: another run is writing to this directory ({}; lock {}); give this run another {flag} directory or wait for that one to end",
                    dir.display(),
                    holder.trim(),
                    path.display()
                );
            }
            Some(libc::ENOLCK | libc::EOPNOTSUPP) => {
                log::warn!("{}: this file system has no locks ({err}); nothing stops a second run from writing here", path.display());
                return Ok(DirLock { _file: file });
            }
            _ => return Err(err).with_context(|| format!("locking {}", path.display())),
        }
    }
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let who = format!("held by rank 0 of a run on host {}, pid {}, since unix time {since}\n", hostname(), std::process::id());
    file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(who.as_bytes())).with_context(|| format!("writing {}", path.display()))?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock of the same directory (another open file description, as another process
    /// has) is refused with the holder's pid; dropping the first releases it.
    #[test]
    fn a_second_writer_is_refused_until_the_first_ends() {
        let dir = std::env::temp_dir().join(format!("swallow-lock-{}", std::process::id()));
        let first = lock(&dir, "--save").unwrap();
        let e = lock(&dir, "--save").err().expect("the directory is locked").to_string();
        assert!(e.contains("--save") && e.contains("another run is writing") && e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        let again = lock(&dir, "--save").unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
