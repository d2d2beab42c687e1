//! Run-time compilation of the kernels with NVRTC (src/backend/cuda/compile.rs), for real: the
//! NVRTC of the PyPI wheel that `make kernels` installs under out/cuda-tools (or `$SWALLOW_NVRTC`)
//! compiles every kernels/*.cu for sm_90, the PTX defines every kernel of launch.rs's table, the
//! CUBIN is a CUDA ELF for that architecture, and a second compilation comes from the disk cache.
//! Without NVRTC these tests print why and pass, except under SWALLOW_REQUIRE_NVRTC=1 (`make test`
//! sets it after `make kernels`), where a missing NVRTC fails them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use swallow::backend::cuda::compile::{compile_all, ptx_defines, Arch, CompileOptions, Compilation};
use swallow::backend::cuda::launch::KERNELS;
use swallow::backend::cuda::nvrtc;
use swallow::backend::cuda::sources::SOURCES;

/// The NVRTC to test with: `$SWALLOW_NVRTC`, else the wheel of `make kernels` in this repository.
fn nvrtc_location(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("SWALLOW_NVRTC").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| nvrtc::wheel_dirs(common::repo()).into_iter().next());
    if found.is_none() {
        let why = "no NVRTC: neither SWALLOW_NVRTC nor out/cuda-tools (run `make kernels`)";
        assert!(std::env::var("SWALLOW_REQUIRE_NVRTC").as_deref() != Ok("1"), "{test}: {why}, and SWALLOW_REQUIRE_NVRTC=1");
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

fn compile(arch: u32, cache: &Path, lib: &Path) -> Compilation {
    let opts = CompileOptions { arch: Arch(arch), cache_dir: cache.to_path_buf(), nvrtc: Some(lib.to_path_buf()), cuda_include: None };
    compile_all(&opts).unwrap_or_else(|e| panic!("compiling for sm_{arch}: {e:#}"))
}

/// The target line of a PTX (`.target sm_90`).
fn ptx_target(ptx: &[u8]) -> String {
    let text = String::from_utf8_lossy(ptx);
    text.lines().find(|l| l.starts_with(".target")).unwrap_or("").to_string()
}

/// ELF64 little-endian for NVIDIA CUDA (e_machine 190, EM_CUDA).
fn is_cuda_elf(cubin: &[u8]) -> bool {
    cubin.len() > 64 && cubin.starts_with(b"\x7fELF\x02\x01") && u16::from_le_bytes([cubin[18], cubin[19]]) == 190
}

fn cache_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn every_kernel_compiles_for_sm_90_and_the_second_call_hits_the_cache() {
    let Some(lib) = nvrtc_location("every_kernel_compiles_for_sm_90") else { return };
    let cache = common::tmpdir("kernel-compile", "cache");

    let first = compile(90, &cache, &lib);
    eprintln!("NVRTC {:?} at {}, headers {}", first.nvrtc.version, first.nvrtc.path.display(), first.cuda_include.display());
    assert_eq!(first.modules.len(), SOURCES.len());
    assert!(first.modules.iter().all(|m| !m.cached), "an empty cache cannot hit");
    for m in &first.modules {
        assert_eq!(ptx_target(&m.ptx), ".target sm_90", "{}", m.source.file);
        assert!(is_cuda_elf(&m.cubin), "{}: the CUBIN is not a CUDA ELF", m.source.file);
    }
    for k in KERNELS {
        let m = first.module_of(k).unwrap_or_else(|| panic!("no module defines {k}"));
        assert!(ptx_defines(&String::from_utf8_lossy(&m.ptx), k), "the PTX of {} has no entry {k}", m.source.file);
    }
    // Two files per module, no temporaries left behind.
    let files = cache_files(&cache);
    assert_eq!(files.len(), 2 * SOURCES.len(), "{files:?}");
    assert!(files.iter().all(|f| !f.starts_with('.') && f.contains("-sm_90-")), "{files:?}");

    let second = compile(90, &cache, &lib);
    assert!(second.modules.iter().all(|m| m.cached), "second compilation must come from the cache");
    for (a, b) in first.modules.iter().zip(&second.modules) {
        assert_eq!((&a.ptx, &a.cubin), (&b.ptx, &b.cubin), "{}", a.source.file);
    }

    // Another architecture is another key: compiled, and both sets stay in the cache.
    let sm80 = compile(80, &cache, &lib);
    assert!(sm80.modules.iter().all(|m| !m.cached && ptx_target(&m.ptx) == ".target sm_80"));
    assert_eq!(cache_files(&cache).len(), 4 * SOURCES.len());

    // A damaged entry is compiled again; the others still hit.
    let victim = &second.modules[0];
    std::fs::write(cache.join(format!("{}.cubin", victim.stem)), b"\x7fEL").unwrap();
    let third = compile(90, &cache, &lib);
    let hits: Vec<bool> = third.modules.iter().map(|m| m.cached).collect();
    assert!(!hits[0] && hits[1..].iter().all(|&h| h), "{hits:?}");
    assert!(is_cuda_elf(&std::fs::read(cache.join(format!("{}.cubin", victim.stem))).unwrap()), "the damaged entry is rewritten");
    std::fs::remove_dir_all(&cache).unwrap();
}

fn swallow(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_swallow")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn kernels_compile_command_prewarms_the_cache() {
    let Some(lib) = nvrtc_location("kernels_compile_command") else { return };
    let cache = common::tmpdir("kernel-compile", "cli");
    let (lib, dir) = (lib.to_str().unwrap(), cache.to_str().unwrap());
    let n = SOURCES.len();
    let (ok, out, err) = swallow(&["kernels", "compile", "--arch", "sm_90", "--cache", dir, "--nvrtc", lib]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{n} modules for sm_90: {n} compiled, 0 from the cache")), "{out}");
    let (ok, out, err) = swallow(&["kernels", "compile", "--arch", "9.0", "--cache", dir, "--nvrtc", lib]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{n} modules for sm_90: 0 compiled, {n} from the cache")), "{out}");
    std::fs::remove_dir_all(&cache).unwrap();
}

/// Bad input needs no NVRTC: one `error:` line naming the value, exit 1.
#[test]
fn bad_architectures_and_nvrtc_paths_are_named() {
    let empty = common::tmpdir("kernel-compile", "empty");
    let e = empty.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--arch", "sm_9x"], "architecture \"sm_9x\": expected sm_XX"),
        (&["--arch", "sm_90", "--nvrtc", "/nonexistent/libnvrtc.so.12"], "/nonexistent/libnvrtc.so.12 does not exist"),
        (&["--arch", "sm_90", "--nvrtc", e], "no libnvrtc.so.12 or libnvrtc.so or libnvrtc.so.13 in"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["kernels", "compile", "--cache", e];
        all.extend_from_slice(args);
        let (ok, _, err) = swallow(&all);
        assert!(!ok, "{args:?} must fail");
        assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1 && err.contains(needle), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&empty).unwrap();
}

/// The architecture comes from the device when there is one; without a driver the error says to
/// give it explicitly.
#[test]
fn device_architecture_or_a_clear_error() {
    match Arch::of_device(0) {
        Ok(a) => assert!(a.0 >= 50, "{a:?}"),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.contains("--arch") || e.contains("CUDA"), "{e}");
            eprintln!("no device: {e}");
        }
    }
}
