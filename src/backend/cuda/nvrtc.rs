//! NVRTC, the CUDA run-time compiler, through cudarc with the library loaded at run time: finding
//! libnvrtc (an explicit path, `$SWALLOW_NVRTC`, the loader's search path, `$CUDA_HOME`,
//! /usr/local/cuda, or the PyPI wheel `make kernels` installs under out/cuda-tools), its version
//! and target architectures, and compiling one source with in-memory headers to PTX and CUBIN.
//! cudarc panics when it cannot load the library, so every call into it comes after `load` has
//! found and opened one; a missing library is an error that says where it looked.

use anyhow::{bail, Context, Result};
use cudarc::nvrtc::{result, sys};
use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The file names tried in a directory. cudarc opens the library by its CUDA 12 names, which the
/// dynamic loader matches against the one opened here by path; a CUDA 13 libnvrtc.so.13 found
/// this way is refused with what to do instead (`open_at`).
const LIB_NAMES: [&str; 3] = ["libnvrtc.so.12", "libnvrtc.so", "libnvrtc.so.13"];
/// Where the nvidia-cuda-nvrtc-cu12 wheel of `make kernels` puts the library, in its venv.
const WHEEL_LIB: &str = "nvidia/cuda_nvrtc/lib";

/// The loaded NVRTC library (one per process).
#[derive(Debug)]
pub struct Nvrtc {
    /// The file the dynamic loader opened.
    pub path: PathBuf,
    /// (major, minor).
    pub version: (i32, i32),
    /// The real architectures it compiles for (80 = sm_80).
    pub archs: Vec<u32>,
}

static LOADED: OnceLock<Nvrtc> = OnceLock::new();

impl Nvrtc {
    /// Loads NVRTC once per process: from `explicit` (the library file or its directory) or
    /// `$SWALLOW_NVRTC` when given, else the first found of the loader's search path
    /// (`LD_LIBRARY_PATH`, the system), `$CUDA_HOME/lib64`, `$CUDA_PATH/lib64`,
    /// /usr/local/cuda/lib64 and out/cuda-tools (the wheel of `make kernels`, from the current
    /// directory). Later calls return the library loaded first.
    pub fn load(explicit: Option<&Path>) -> Result<&'static Nvrtc> {
        static LOCK: Mutex<()> = Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = LOADED.get() {
            return Ok(n);
        }
        let env = std::env::var_os("SWALLOW_NVRTC").filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut opened = None;
        if let Some(p) = explicit.map(Path::to_path_buf).or(env) {
            opened = Some(open_at(&p)?);
        } else if !unsafe { sys::is_culib_present() } {
            let dirs = search_dirs();
            let found = dirs.iter().flat_map(|d| LIB_NAMES.iter().map(move |n| d.join(n))).find(|f| f.is_file());
            let Some(f) = found else {
                bail!(
                    "NVRTC (libnvrtc.so.12) not found on the library path nor in {}: run `make kernels` (installs it under \
                     out/cuda-tools), or set SWALLOW_NVRTC to the library or its directory",
                    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                );
            };
            opened = Some(open_at(&f)?);
        }
        // SAFETY: the library is present (checked above), so cudarc's loader does not panic.
        let version = unsafe {
            let (mut major, mut minor) = (0, 0);
            sys::nvrtcVersion(&mut major, &mut minor).result().map_err(|e| anyhow::anyhow!("nvrtcVersion: {e}"))?;
            (major, minor)
        };
        let archs = unsafe {
            let mut n: c_int = 0;
            sys::nvrtcGetNumSupportedArchs(&mut n).result().map_err(|e| anyhow::anyhow!("nvrtcGetNumSupportedArchs: {e}"))?;
            let mut v = vec![0 as c_int; n as usize];
            sys::nvrtcGetSupportedArchs(v.as_mut_ptr()).result().map_err(|e| anyhow::anyhow!("nvrtcGetSupportedArchs: {e}"))?;
            v.into_iter().map(|a| a as u32).collect()
        };
        let used = cudarc_lib_path();
        if let Some(opened) = &opened {
            warn_unless_used("NVRTC", opened, used.as_deref());
        }
        let path = used.unwrap_or_else(|| PathBuf::from(LIB_NAMES[0]));
        Ok(LOADED.get_or_init(|| Nvrtc { path, version, archs }))
    }

    /// Compiles `src` (named `name` in messages) with `headers` (include name, text) available to
    /// `#include "name"`, and NVRTC `options` (which pick the architecture). Returns the PTX and,
    /// for a real architecture (`sm_XX`), the CUBIN; a compile error carries NVRTC's log.
    pub fn compile(&self, name: &str, src: &str, headers: &[(&str, &str)], options: &[String]) -> Result<Compiled> {
        let cstr = |s: &str| CString::new(s).with_context(|| format!("{name}: NUL byte in a source or option"));
        let (csrc, cname) = (cstr(src)?, cstr(name)?);
        let hdr_text = headers.iter().map(|h| cstr(h.1)).collect::<Result<Vec<_>>>()?;
        let hdr_name = headers.iter().map(|h| cstr(h.0)).collect::<Result<Vec<_>>>()?;
        let text_ptrs: Vec<*const c_char> = hdr_text.iter().map(|c| c.as_ptr()).collect();
        let name_ptrs: Vec<*const c_char> = hdr_name.iter().map(|c| c.as_ptr()).collect();
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: NVRTC is loaded (`self` exists only after `load`); every pointer outlives the
        // program, which is destroyed on every path below.
        unsafe {
            sys::nvrtcCreateProgram(&mut prog, csrc.as_ptr(), cname.as_ptr(), headers.len() as c_int, text_ptrs.as_ptr(), name_ptrs.as_ptr())
                .result()
                .map_err(|e| anyhow::anyhow!("NVRTC could not create a program for {name}: {e:?}"))?;
            let out = Self::compile_program(prog, name, options);
            let _ = result::destroy_program(prog);
            out
        }
    }

    /// # Safety
    /// `prog` is a live program of the loaded library.
    unsafe fn compile_program(prog: sys::nvrtcProgram, name: &str, options: &[String]) -> Result<Compiled> {
        let rc = result::compile_program(prog, options);
        let log = text(&result::get_program_log(prog).unwrap_or_default());
        if let Err(e) = rc {
            bail!("NVRTC failed on {name} ({e:?}) with options {options:?}:\n{}", log.trim_end());
        }
        let ptx = result::get_ptx(prog).map_err(|e| anyhow::anyhow!("{name}: nvrtcGetPTX: {e:?}"))?;
        let mut ptx: Vec<u8> = ptx.into_iter().map(|c| c as u8).collect();
        while ptx.last() == Some(&0) {
            ptx.pop();
        }
        let mut size = 0usize;
        let cubin = if sys::nvrtcGetCUBINSize(prog, &mut size).result().is_ok() && size > 0 {
            let mut v = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, v.as_mut_ptr() as *mut c_char).result().map_err(|e| anyhow::anyhow!("{name}: nvrtcGetCUBIN: {e:?}"))?;
            v
        } else {
            Vec::new()
        };
        Ok(Compiled { ptx, cubin, log })
    }
}

/// The output of one compilation.
#[derive(Debug)]
pub struct Compiled {
    pub ptx: Vec<u8>,
    /// Empty for a virtual architecture (`compute_XX`).
    pub cubin: Vec<u8>,
    /// NVRTC's warnings (empty when there are none).
    pub log: String,
}

fn text(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The directories searched when the loader's path has no NVRTC.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| std::env::var_os(v).filter(|v| !v.is_empty()))
        .map(|v| PathBuf::from(v).join("lib64"))
        .collect();
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs.extend(wheel_dirs(Path::new(".")));
    dirs
}

/// The NVRTC wheel directories of `make kernels` under the repository `root`.
pub fn wheel_dirs(root: &Path) -> Vec<PathBuf> {
    tool_wheel_dirs(root, WHEEL_LIB)
}

/// Directories `lib` (relative to site-packages, e.g. "nvidia/nccl/lib") of the wheels `make
/// kernels` installs in its venv under the repository `root` (out/cuda-tools), one per Python.
pub fn tool_wheel_dirs(root: &Path, lib: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("out/cuda-tools/lib")) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages").join(lib))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Opens the library at `p` (a file, or a directory holding one of `LIB_NAMES`) for the whole
/// process, so that cudarc's open by name finds it already loaded. Returns the file opened.
fn open_at(p: &Path) -> Result<PathBuf> {
    let (file, _) = open_named(p, "NVRTC", &LIB_NAMES)?;
    // SAFETY: only probes library names with dlopen.
    if !unsafe { sys::is_culib_present() } {
        bail!(
            "NVRTC: loaded {}, but cudarc looks NVRTC up by its CUDA 12 names (libnvrtc.so.12, libnvrtc.so): for a CUDA 13 \
             libnvrtc.so.13, link it as libnvrtc.so in a directory first on LD_LIBRARY_PATH and put its own directory on \
             LD_LIBRARY_PATH too (NVRTC 13 opens its libnvrtc-builtins by name), set before the process starts \
             (scripts/gpu-check.sh does both)",
            file.display()
        );
    }
    Ok(file)
}

/// Opens `library` at `p`, a file or a directory holding one of `names` (the first is the one
/// named when nothing is there), for the whole process. Returns the file opened and its handle.
pub fn open_named(p: &Path, library: &str, names: &[&str]) -> Result<(PathBuf, *mut libc::c_void)> {
    let file = if p.is_dir() {
        names.iter().map(|n| p.join(n)).find(|f| f.is_file()).with_context(|| format!("{library}: no {} in {}", names.join(" or "), p.display()))?
    } else if p.is_file() {
        p.to_path_buf()
    } else {
        bail!("{library}: {} does not exist (expected {} or its directory)", p.display(), names[0]);
    };
    let handle = dlopen_global(file.as_os_str()).map_err(|e| anyhow::anyhow!("{library}: cannot load {}: {e}", file.display()))?;
    Ok((file, handle))
}

/// Warns when cudarc calls into a library `used` other than the file `opened` for it (cudarc
/// looks libraries up by name, and found another first).
pub fn warn_unless_used(library: &str, opened: &Path, used: Option<&Path>) {
    let (Ok(want), Some(used)) = (opened.canonicalize(), used) else { return };
    if used != want {
        log::warn!("{library}: {} was opened, but cudarc found {} by name first and uses it", want.display(), used.display());
    }
}

/// Opens the shared library `file` (a path, or a name for the loader's search) for the whole
/// process, its symbols global; the handle is never closed. The error is the loader's message.
pub fn dlopen_global(file: &std::ffi::OsStr) -> std::result::Result<*mut libc::c_void, String> {
    let c = CString::new(file.as_encoded_bytes()).map_err(|_| "a library path with a NUL byte".to_string())?;
    // SAFETY: dlopen of a path or name; the handle is kept for the life of the process.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a static message or null.
        let msg = unsafe { libc::dlerror() };
        return Err(if msg.is_null() { "dlopen failed".into() } else { unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy().into_owned() });
    }
    Ok(handle)
}

/// The file of the library cudarc calls into (where its `nvrtcVersion` lives).
fn cudarc_lib_path() -> Option<PathBuf> {
    // SAFETY: only called once the library is known to load.
    let sym = unsafe { sys::culib().get::<unsafe extern "C" fn()>(b"nvrtcVersion") }.ok()?;
    file_at(*sym as *const libc::c_void)
}

/// The file (canonical) of the loaded library that holds address `addr`.
pub(crate) fn file_at(addr: *const libc::c_void) -> Option<PathBuf> {
    // SAFETY: dladdr only reads the loader's tables and fills `info` with its static strings.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned();
        Some(std::fs::canonicalize(&name).unwrap_or_else(|_| PathBuf::from(name)))
    }
}
