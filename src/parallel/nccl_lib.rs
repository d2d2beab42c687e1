//! NCCL's library for `--comm nccl`: finding and opening it, and the calls swallow makes into it.
//! cudarc's loader looks NCCL up as libnccl.so and by CUDA-version names (libnccl.so.12, ...),
//! never as libnccl.so.2, the only name that NCCL's runtime package (libnccl2) and PyTorch's
//! nvidia-nccl wheels install; so swallow opens the library itself and resolves each function
//! from that handle. Where it looks, in order: `$SWALLOW_NCCL` (the file or its directory), else
//! libnccl.so.2 and libnccl.so through the loader's search path (`LD_LIBRARY_PATH`, the system),
//! else `$NCCL_HOME/lib`, `$CUDA_HOME/lib64`, /usr/local/cuda/lib64 and the nvidia-nccl wheel
//! that `make kernels` installs under out/cuda-tools. The types are cudarc's bindings (NCCL
//! 2.24's, the same ABI for these calls since 2.10, the first NCCL with bf16); results are read
//! as plain ints, so a code this file does not know stays an error, not undefined behaviour.

use crate::backend::cuda::nvrtc::{dlopen_global, file_at, open_named, tool_wheel_dirs};
use anyhow::{bail, Result};
use cudarc::nccl::sys::{cudaStream_t, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The names tried, in a directory and through the loader's search path.
const LIB_NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];
/// The oldest NCCL with bf16 (`ncclBfloat16`), as NCCL_VERSION_CODE.
const MIN_VERSION: i32 = 21000;
const NCCL_SUCCESS: c_int = 0;
const NCCL_IN_PROGRESS: c_int = 7;

type Status = c_int;

/// The opened library and the entry points swallow calls.
pub struct Nccl {
    /// The file the dynamic loader opened.
    pub path: PathBuf,
    /// NCCL_VERSION_CODE: major x 10000 + minor x 100 + patch.
    pub version: i32,
    get_error_string: unsafe extern "C" fn(Status) -> *const c_char,
    get_last_error: Option<unsafe extern "C" fn(ncclComm_t) -> *const c_char>,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> Status,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> Status,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> Status,
    all_reduce: unsafe extern "C" fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t) -> Status,
    reduce_scatter: unsafe extern "C" fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t) -> Status,
    all_gather: unsafe extern "C" fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclComm_t, cudaStream_t) -> Status,
    send: unsafe extern "C" fn(*const c_void, usize, ncclDataType_t, c_int, ncclComm_t, cudaStream_t) -> Status,
    recv: unsafe extern "C" fn(*mut c_void, usize, ncclDataType_t, c_int, ncclComm_t, cudaStream_t) -> Status,
}

/// "2.23.4" from NCCL_VERSION_CODE 22304.
pub fn version_text(code: i32) -> String {
    format!("{}.{}.{}", code / 10000, code / 100 % 100, code % 100)
}

impl Nccl {
    /// Opens NCCL once per process (`$SWALLOW_NCCL` or the search above); later calls return it.
    pub fn get() -> Result<&'static Nccl> {
        static LOADED: OnceLock<std::result::Result<Nccl, String>> = OnceLock::new();
        let explicit = std::env::var_os("SWALLOW_NCCL").filter(|v| !v.is_empty()).map(PathBuf::from);
        LOADED.get_or_init(|| Nccl::open(explicit.as_deref()).map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Opens NCCL from `explicit` (the library or its directory), else by the search above.
    pub fn open(explicit: Option<&Path>) -> Result<Nccl> {
        let handle = match explicit {
            Some(p) => open_named(p, "NCCL", &LIB_NAMES)?.1,
            None => Self::search()?,
        };
        // SAFETY: every symbol below is an NCCL entry point with the signature of its field
        // (nccl.h); the handle is never closed.
        unsafe {
            let nccl = Nccl {
                path: PathBuf::new(),
                version: 0,
                get_error_string: sym(handle, "ncclGetErrorString")?,
                get_last_error: sym(handle, "ncclGetLastError").ok(),
                get_unique_id: sym(handle, "ncclGetUniqueId")?,
                comm_init_rank: sym(handle, "ncclCommInitRank")?,
                comm_destroy: sym(handle, "ncclCommDestroy")?,
                all_reduce: sym(handle, "ncclAllReduce")?,
                reduce_scatter: sym(handle, "ncclReduceScatter")?,
                all_gather: sym(handle, "ncclAllGather")?,
                send: sym(handle, "ncclSend")?,
                recv: sym(handle, "ncclRecv")?,
            };
            let get_version: unsafe extern "C" fn(*mut c_int) -> Status = sym(handle, "ncclGetVersion")?;
            let mut version = 0;
            nccl.check(get_version(&mut version), "ncclGetVersion")?;
            let path = file_at(get_version as *const c_void).unwrap_or_else(|| PathBuf::from(LIB_NAMES[0]));
            if version < MIN_VERSION {
                bail!("NCCL {} at {} is older than {} (the first with bf16)", version_text(version), path.display(), version_text(MIN_VERSION));
            }
            Ok(Nccl { path, version, ..nccl })
        }
    }

    /// The first of `LIB_NAMES` the loader finds, else the first in the directories above.
    fn search() -> Result<*mut c_void> {
        for name in LIB_NAMES {
            if let Ok(h) = dlopen_global(name.as_ref()) {
                return Ok(h);
            }
        }
        let mut dirs: Vec<PathBuf> = [("NCCL_HOME", "lib"), ("CUDA_HOME", "lib64")]
            .iter()
            .filter_map(|(var, lib)| std::env::var_os(var).filter(|v| !v.is_empty()).map(|v| PathBuf::from(v).join(lib)))
            .collect();
        dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
        dirs.extend(tool_wheel_dirs(Path::new("."), "nvidia/nccl/lib"));
        if let Some(file) = dirs.iter().flat_map(|d| LIB_NAMES.iter().map(move |n| d.join(n))).find(|f| f.is_file()) {
            return dlopen_global(file.as_os_str()).map_err(|e| anyhow::anyhow!("NCCL: cannot load {}: {e}", file.display()));
        }
        bail!(
            "NCCL ({}) not found on the library path nor in {}: put its directory on LD_LIBRARY_PATH (PyTorch's is \
             site-packages/nvidia/nccl/lib), or set SWALLOW_NCCL to the library or its directory; or use --comm mpi \
             (CUDA-aware MPI) or --comm host",
            LIB_NAMES.join(" or "),
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    }

    /// Ok for ncclSuccess; otherwise NCCL's message for `status`, and its last error when it
    /// has one.
    fn check(&self, status: Status, call: &str) -> Result<()> {
        if status == NCCL_SUCCESS {
            return Ok(());
        }
        let text = |p: *const c_char| if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() };
        // SAFETY: both return static strings (or null); a null communicator asks for the
        // process's last error.
        let (what, last) = unsafe { (text((self.get_error_string)(status)), self.get_last_error.map(|f| text(f(std::ptr::null_mut()))).unwrap_or_default()) };
        if last.is_empty() {
            bail!("NCCL: {call} failed: {what} (code {status})");
        }
        bail!("NCCL: {call} failed: {what} (code {status}): {last}");
    }

    pub fn unique_id(&self) -> Result<ncclUniqueId> {
        let mut id = ncclUniqueId { internal: [0; 128] };
        // SAFETY: `id` is written by NCCL.
        self.check(unsafe { (self.get_unique_id)(&mut id) }, "ncclGetUniqueId")?;
        Ok(id)
    }

    /// Joins the communicator `id` of `ranks` ranks as `rank`, on the current CUDA device
    /// (blocking: every rank of it makes this call).
    pub fn comm_init_rank(&self, ranks: usize, id: ncclUniqueId, rank: usize) -> Result<ncclComm_t> {
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` receives the new communicator.
        let status = unsafe { (self.comm_init_rank)(&mut comm, ranks as c_int, id, rank as c_int) };
        if status == NCCL_IN_PROGRESS {
            bail!("NCCL: ncclCommInitRank returned before the communicator was ready (ncclInProgress: a non-blocking communicator)");
        }
        self.check(status, "ncclCommInitRank")?;
        Ok(comm)
    }

    /// # Safety
    /// `comm` came from `comm_init_rank` and is destroyed once.
    pub unsafe fn comm_destroy(&self, comm: ncclComm_t) -> Result<()> {
        self.check((self.comm_destroy)(comm), "ncclCommDestroy")
    }

    /// # Safety
    /// Device buffers of `n` elements of `dtype` (in place when `send == recv`), live until the
    /// collective finishes on `stream`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn all_reduce(&self, send: *const c_void, recv: *mut c_void, n: usize, dtype: ncclDataType_t, op: ncclRedOp_t, comm: ncclComm_t, stream: cudaStream_t) -> Result<()> {
        self.check((self.all_reduce)(send, recv, n, dtype, op, comm, stream), "ncclAllReduce")
    }

    /// # Safety
    /// As `all_reduce`, `send` holding ranks x `n_recv` elements.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn reduce_scatter(&self, send: *const c_void, recv: *mut c_void, n_recv: usize, dtype: ncclDataType_t, op: ncclRedOp_t, comm: ncclComm_t, stream: cudaStream_t) -> Result<()> {
        self.check((self.reduce_scatter)(send, recv, n_recv, dtype, op, comm, stream), "ncclReduceScatter")
    }

    /// # Safety
    /// As `all_reduce`, `recv` holding ranks x `n_send` elements.
    pub unsafe fn all_gather(&self, send: *const c_void, recv: *mut c_void, n_send: usize, dtype: ncclDataType_t, comm: ncclComm_t, stream: cudaStream_t) -> Result<()> {
        self.check((self.all_gather)(send, recv, n_send, dtype, comm, stream), "ncclAllGather")
    }

    /// # Safety
    /// A device buffer of `n` elements, live until the send finishes on `stream`.
    pub unsafe fn send(&self, buf: *const c_void, n: usize, dtype: ncclDataType_t, peer: usize, comm: ncclComm_t, stream: cudaStream_t) -> Result<()> {
        self.check((self.send)(buf, n, dtype, peer as c_int, comm, stream), "ncclSend")
    }

    /// # Safety
    /// As `send`.
    pub unsafe fn recv(&self, buf: *mut c_void, n: usize, dtype: ncclDataType_t, peer: usize, comm: ncclComm_t, stream: cudaStream_t) -> Result<()> {
        self.check((self.recv)(buf, n, dtype, peer as c_int, comm, stream), "ncclRecv")
    }
}

/// The entry point `name` of the library `handle`, as the function pointer type `F`.
///
/// # Safety
/// `F` must be the symbol's C signature as an `unsafe extern "C" fn`.
unsafe fn sym<F: Copy>(handle: *mut c_void, name: &str) -> Result<F> {
    let c = std::ffi::CString::new(name).expect("symbol name without NUL");
    let p = libc::dlsym(handle, c.as_ptr());
    if p.is_null() {
        bail!("NCCL: the library has no {name}");
    }
    Ok(std::mem::transmute_copy::<*mut c_void, F>(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_or_directory_is_named() {
        let err = Nccl::open(Some(Path::new("/nonexistent/libnccl.so.2"))).err().expect("no such file").to_string();
        assert!(err.contains("/nonexistent/libnccl.so.2 does not exist"), "{err}");
        let dir = std::env::temp_dir();
        let err = Nccl::open(Some(&dir)).err().expect("no NCCL in the temp dir").to_string();
        assert!(err.contains("no libnccl.so.2 or libnccl.so in"), "{err}");
    }

    #[test]
    fn version_codes_read_as_nccl_prints_them() {
        assert_eq!(version_text(22304), "2.23.4");
        assert_eq!(version_text(21000), "2.10.0");
    }

    /// The real library by its runtime name (the nvidia-nccl wheel of `make kernels`, which
    /// installs only libnccl.so.2; `make test` sets SWALLOW_REQUIRE_NVRTC, so it must be found):
    /// loads, reports its version, makes distinct unique ids, and on a machine without a GPU fails
    /// to make a communicator with NCCL's own message, not a panic.
    #[test]
    fn nccl_opens_by_its_runtime_name_and_makes_unique_ids() {
        let nccl = match Nccl::get() {
            Ok(n) => n,
            Err(e) if std::env::var_os("SWALLOW_REQUIRE_NVRTC").is_none() => {
                eprintln!("skipped: {e:#}");
                return;
            }
            Err(e) => panic!("SWALLOW_REQUIRE_NVRTC is set but NCCL did not load: {e:#}"),
        };
        assert!(nccl.version >= MIN_VERSION, "version {}", nccl.version);
        let name = nccl.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("libnccl.so"), "{}", nccl.path.display());
        let (a, b) = (nccl.unique_id().unwrap(), nccl.unique_id().unwrap());
        assert!(a.internal.iter().any(|&c| c != 0) && a.internal != b.internal, "unique ids");
        if crate::backend::cuda::probe::init_driver().is_err() {
            let err = nccl.comm_init_rank(1, a, 0).expect_err("no GPU: no communicator").to_string();
            assert!(err.contains("ncclCommInitRank failed") && err.contains("cuda"), "{err}");
        }
    }
}
