//! Run-time compilation of the embedded kernels (sources.rs) for one GPU architecture with NVRTC
//! (nvrtc.rs), cached on disk. The architecture is the device's compute capability (through the
//! CUDA driver, loaded at run time) or given (`sm_90`). One module per kernels/*.cu file; its
//! PTX and CUBIN are stored under the cache directory (`$SWALLOW_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/swallow/kernels`, else ~/.cache/swallow/kernels) as `FILE-sm_XX-KEY.{ptx,cubin}`,
//! KEY a hash of the source, the headers (ours and the CUDA toolkit's cuda_bf16.h/.hpp), the
//! options, the architecture and the NVRTC version; files are written to temporary names and
//! renamed, so concurrent ranks on a node never read a partial file.

use super::nvrtc::Nvrtc;
use crate::atomic_file;
use super::sources::{KernelSource, HEADERS, SOURCES};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// A real GPU architecture: 90 is sm_90 (compute capability 9.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch(pub u32);

impl Arch {
    /// `sm_90`, `90` or `9.0`.
    pub fn parse(s: &str) -> Result<Arch> {
        let t = s.trim();
        let digits = t.strip_prefix("sm_").unwrap_or(t);
        let v = match digits.split_once('.') {
            Some((major, minor)) if minor.len() == 1 => format!("{major}{minor}"),
            Some(_) => String::new(),
            None => digits.to_string(),
        };
        match v.parse::<u32>() {
            Ok(n) if (50..=999).contains(&n) => Ok(Arch(n)),
            _ => bail!("architecture {s:?}: expected sm_XX (e.g. sm_80, sm_90) or a compute capability like 9.0"),
        }
    }

    /// The compute capability of CUDA device `ordinal`, from the driver.
    pub fn of_device(ordinal: usize) -> Result<Arch> {
        use cudarc::driver::{result, sys};
        let count = super::probe::init_driver().context("give the GPU architecture explicitly (e.g. --arch sm_90)")?;
        let err = |what: &str, e: cudarc::driver::DriverError| anyhow::anyhow!("CUDA driver: {what}: {e:?}");
        if ordinal >= count {
            bail!("CUDA device {ordinal} does not exist ({count} devices)");
        }
        let dev = result::device::get(ordinal as i32).map_err(|e| err("cuDeviceGet", e))?;
        let attr = |a| unsafe { result::device::get_attribute(dev, a) }.map_err(|e| err("cuDeviceGetAttribute", e));
        let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        Ok(Arch(10 * major as u32 + minor as u32))
    }

    pub fn name(self) -> String {
        format!("sm_{}", self.0)
    }
}

/// Where and how to compile.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub arch: Arch,
    pub cache_dir: PathBuf,
    /// libnvrtc or its directory (else the search of `Nvrtc::load`).
    pub nvrtc: Option<PathBuf>,
    /// The CUDA headers' directory holding cuda_bf16.h (else found from `$SWALLOW_CUDA_INCLUDE`,
    /// next to libnvrtc, `$CUDA_HOME/include`, `$CUDA_PATH/include`, /usr/local/cuda/include).
    pub cuda_include: Option<PathBuf>,
}

/// One compiled kernels/*.cu file.
#[derive(Debug)]
pub struct Module {
    pub source: &'static KernelSource,
    pub ptx: Vec<u8>,
    pub cubin: Vec<u8>,
    /// True when read from the cache, false when NVRTC compiled it in this call.
    pub cached: bool,
    /// The cache file stem (`FILE-sm_XX-KEY`).
    pub stem: String,
}

/// The result of `compile_all`: every module, and what compiled them.
#[derive(Debug)]
pub struct Compilation {
    pub modules: Vec<Module>,
    pub nvrtc: &'static Nvrtc,
    pub cuda_include: PathBuf,
    pub options: Vec<String>,
}

impl Compilation {
    /// The module that defines `kernel`.
    pub fn module_of(&self, kernel: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.source.kernels.contains(&kernel))
    }
}

/// `$SWALLOW_KERNEL_CACHE`, else `$XDG_CACHE_HOME/swallow/kernels`, else `$HOME/.cache/swallow/kernels`.
pub fn default_cache_dir() -> Result<PathBuf> {
    let var = |v: &str| std::env::var_os(v).filter(|x| !x.is_empty()).map(PathBuf::from);
    if let Some(d) = var("SWALLOW_KERNEL_CACHE") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(d.join("swallow/kernels"));
    }
    match var("HOME") {
        Some(h) => Ok(h.join(".cache/swallow/kernels")),
        None => bail!("no kernel cache directory: set SWALLOW_KERNEL_CACHE (or HOME)"),
    }
}

/// Compiles every kernels/*.cu for `opts.arch`, or reads it from the cache when the same source,
/// headers, options, architecture and NVRTC version were compiled before.
pub fn compile_all(opts: &CompileOptions) -> Result<Compilation> {
    let nvrtc = Nvrtc::load(opts.nvrtc.as_deref())?;
    let arch = opts.arch;
    if !nvrtc.archs.contains(&arch.0) {
        bail!(
            "NVRTC {}.{} ({}) cannot compile for {}; it supports sm_{}",
            nvrtc.version.0,
            nvrtc.version.1,
            nvrtc.path.display(),
            arch.name(),
            nvrtc.archs.iter().map(u32::to_string).collect::<Vec<_>>().join(", sm_")
        );
    }
    let include = cuda_include_dir(nvrtc, opts.cuda_include.as_deref())?;
    let options = vec![format!("--gpu-architecture={}", arch.name()), "-std=c++17".to_string(), format!("-I{}", include.display())];
    // The CUDA headers the kernels include (common.cuh: cuda_bf16.h, which includes the .hpp).
    let mut toolkit = Vec::new();
    for h in ["cuda_bf16.h", "cuda_bf16.hpp"] {
        let p = include.join(h);
        toolkit.push(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
    }
    let modules = SOURCES
        .par_iter()
        .map(|src| {
            let key = cache_key(src, &toolkit, &options, arch, nvrtc.version);
            let stem = format!("{}-{}-{key:032x}", src.file.trim_end_matches(".cu"), arch.name());
            if let Some((ptx, cubin)) = read_cached(&opts.cache_dir, &stem, src) {
                return Ok(Module { source: src, ptx, cubin, cached: true, stem });
            }
            let out = nvrtc.compile(src.file, src.text, HEADERS, &options)?;
            if !out.log.trim().is_empty() {
                log::warn!("NVRTC on {} for {}:\n{}", src.file, arch.name(), out.log.trim_end());
            }
            if let Err(e) = write_cached(&opts.cache_dir, &stem, &out.ptx, &out.cubin) {
                log::warn!("kernel cache {}: {e:#} (compiled, not cached)", opts.cache_dir.display());
            }
            Ok(Module { source: src, ptx: out.ptx, cubin: out.cubin, cached: false, stem })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Compilation { modules, nvrtc, cuda_include: include, options })
}

/// The directory holding cuda_bf16.h: `explicit`, `$SWALLOW_CUDA_INCLUDE`, next to libnvrtc (the
/// toolkit's lib64/../include, the wheel's nvidia/cuda_runtime/include), `$CUDA_HOME/include`,
/// `$CUDA_PATH/include`, /usr/local/cuda/include.
fn cuda_include_dir(nvrtc: &Nvrtc, explicit: Option<&Path>) -> Result<PathBuf> {
    let env = std::env::var_os("SWALLOW_CUDA_INCLUDE").filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = explicit.map(Path::to_path_buf).or(env) {
        if !d.join("cuda_bf16.h").is_file() {
            bail!("CUDA headers: {} has no cuda_bf16.h", d.display());
        }
        return Ok(d);
    }
    let mut dirs = Vec::new();
    if let Some(lib) = nvrtc.path.parent() {
        dirs.push(lib.join("../include"));
        dirs.push(lib.join("../../cuda_runtime/include"));
    }
    for v in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(h) = std::env::var_os(v).filter(|x| !x.is_empty()) {
            dirs.push(PathBuf::from(h).join("include"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    match dirs.iter().find(|d| d.join("cuda_bf16.h").is_file()) {
        Some(d) => Ok(d.canonicalize().unwrap_or_else(|_| d.clone())),
        None => bail!(
            "CUDA headers (cuda_bf16.h) not found in {}: set SWALLOW_CUDA_INCLUDE to the CUDA include directory \
             (`make kernels` installs them under out/cuda-tools)",
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// FNV-1a, 128-bit: stable across Rust versions and platforms (a cache key, not a defence).
struct Fnv(u128);

impl Fnv {
    fn new() -> Self {
        Fnv(0x6c62272e07bb014262b821756295c58d)
    }
    /// Hashes `bytes` with their length first, so consecutive fields cannot run into each other.
    fn field(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= *b as u128;
            self.0 = self.0.wrapping_mul(0x0000000001000000000000000000013B);
        }
    }
}

/// The key of one module's cache files.
fn cache_key(src: &KernelSource, toolkit: &[Vec<u8>], options: &[String], arch: Arch, version: (i32, i32)) -> u128 {
    let mut h = Fnv::new();
    h.field(b"swallow-kernel-cache-1");
    h.field(src.file.as_bytes());
    h.field(src.text.as_bytes());
    for (name, text) in HEADERS {
        h.field(name.as_bytes());
        h.field(text.as_bytes());
    }
    for t in toolkit {
        h.field(t);
    }
    for o in options {
        h.field(o.as_bytes());
    }
    h.field(arch.name().as_bytes());
    h.field(format!("{}.{}", version.0, version.1).as_bytes());
    h.0
}

/// The cached PTX and CUBIN of `stem`, when both exist and look whole (a PTX that defines every
/// kernel of the source, an ELF CUBIN); anything else is a miss.
fn read_cached(dir: &Path, stem: &str, src: &KernelSource) -> Option<(Vec<u8>, Vec<u8>)> {
    let ptx = std::fs::read(dir.join(format!("{stem}.ptx"))).ok()?;
    let cubin = std::fs::read(dir.join(format!("{stem}.cubin"))).ok()?;
    let text = String::from_utf8_lossy(&ptx);
    let whole = cubin.starts_with(b"\x7fELF") && src.kernels.iter().all(|k| ptx_defines(&text, k));
    if !whole {
        log::warn!("kernel cache: {stem} is incomplete, compiling again");
    }
    whole.then_some((ptx, cubin))
}

/// True when `ptx` has an entry point named `kernel`.
pub fn ptx_defines(ptx: &str, kernel: &str) -> bool {
    ptx.lines().any(|l| {
        let l = l.trim_start();
        (l.starts_with(".visible .entry ") || l.starts_with(".entry ")) && l.split(".entry ").nth(1).is_some_and(|r| r.split('(').next() == Some(kernel))
    })
}

fn write_cached(dir: &Path, stem: &str, ptx: &[u8], cubin: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The CUBIN last: a reader needs both, so it never sees a CUBIN without its PTX.
    atomic_file::write(&dir.join(format!("{stem}.ptx")), ptx)?;
    atomic_file::write(&dir.join(format!("{stem}.cubin")), cubin)
}

/// `swallow kernels compile`: compiles (or finds cached) every module and prints one line each.
pub fn compile_command(arch: Option<&str>, cache: Option<PathBuf>, nvrtc: Option<PathBuf>, cuda_include: Option<PathBuf>) -> Result<()> {
    let arch = match arch {
        Some(a) => Arch::parse(a)?,
        None => Arch::of_device(0).context("no --arch given and no GPU to take it from")?,
    };
    let cache_dir = match cache {
        Some(d) => d,
        None => default_cache_dir()?,
    };
    let t0 = std::time::Instant::now();
    let c = compile_all(&CompileOptions { arch, cache_dir: cache_dir.clone(), nvrtc, cuda_include })?;
    println!(
        "NVRTC {}.{} ({}), {}, headers {}, cache {}",
        c.nvrtc.version.0,
        c.nvrtc.version.1,
        c.nvrtc.path.display(),
        arch.name(),
        c.cuda_include.display(),
        cache_dir.display()
    );
    for m in &c.modules {
        println!(
            "{:<20} {:<8} ptx {:>8} B  cubin {:>8} B  {}",
            m.source.file,
            if m.cached { "cached" } else { "compiled" },
            m.ptx.len(),
            m.cubin.len(),
            m.source.kernels.join(" ")
        );
    }
    let hits = c.modules.iter().filter(|m| m.cached).count();
    println!("{} modules for {}: {} compiled, {hits} from the cache, {:.1} s", c.modules.len(), arch.name(), c.modules.len() - hits, t0.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(Arch::parse("sm_90").unwrap(), Arch(90));
        assert_eq!(Arch::parse("80").unwrap(), Arch(80));
        assert_eq!(Arch::parse("8.6").unwrap(), Arch(86));
        assert_eq!(Arch(89).name(), "sm_89");
        for bad in ["sm_", "sm_9", "9.10", "compute_90", "sm90a", ""] {
            let e = Arch::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected sm_XX"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ptx_entry_points() {
        let ptx = "//\n.version 8.8\n.visible .entry rope_fwd(\n\t.param .u64 rope_fwd_param_0\n)\n.entry rope_fwd_x(\n";
        assert!(ptx_defines(ptx, "rope_fwd"));
        assert!(ptx_defines(ptx, "rope_fwd_x"));
        assert!(!ptx_defines(ptx, "rope"));
        assert!(!ptx_defines(ptx, "rope_bwd"));
    }

    #[test]
    fn cache_key_covers_every_input() {
        let src = &SOURCES[0];
        let opts = vec!["-std=c++17".to_string()];
        let base = cache_key(src, &[b"bf16".to_vec()], &opts, Arch(90), (12, 9));
        assert_eq!(base, cache_key(src, &[b"bf16".to_vec()], &opts, Arch(90), (12, 9)));
        let others = [
            cache_key(&SOURCES[1], &[b"bf16".to_vec()], &opts, Arch(90), (12, 9)),
            cache_key(src, &[b"bf17".to_vec()], &opts, Arch(90), (12, 9)),
            cache_key(src, &[b"bf16".to_vec()], &["-std=c++20".to_string()], Arch(90), (12, 9)),
            cache_key(src, &[b"bf16".to_vec()], &opts, Arch(80), (12, 9)),
            cache_key(src, &[b"bf16".to_vec()], &opts, Arch(90), (12, 8)),
        ];
        assert!(others.iter().all(|&k| k != base));
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("swallow-cache-test-{}", std::process::id()));
        write_cached(&dir, "x-sm_90-0", b"ptx", b"\x7fELF").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["x-sm_90-0.cubin", "x-sm_90-0.ptx"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
