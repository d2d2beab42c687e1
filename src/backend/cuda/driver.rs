//! The real device runtime: `Runtime` through the CUDA driver API and cuBLASLt, both opened at
//! run time by cudarc (probe.rs first, so a missing library is an error, not a panic). One
//! primary context on the chosen device; every kernels/*.cu module compiled for the device's
//! architecture by compile.rs (or read from its cache) and loaded from its CUBIN; launches with
//! launch.rs's geometry and argument array on the legacy default stream; GEMMs through
//! cuBLASLt with fp32 compute (`Gemm` row-major, mapped onto cuBLASLt's column-major layouts);
//! a non-blocking side stream per `SideLane` for overlapped collectives, ordered by events.
//! Launches and GEMMs are asynchronous in stream order (copies to and from the host wait for
//! them); `SWALLOW_CUDA_SYNC=1` synchronises after each, so an error names its kernel. Each GEMM
//! shape's cuBLASLt descriptors and algorithm are made once and cached. NOT YET RUN ON HARDWARE: it compiles and is
//! selected by `SWALLOW_CONFORMANCE_DEVICE=cuda` (tests/kernel_conformance.rs), which is the check
//! to run on the first GPU machine.

use super::compile::{self, Arch, CompileOptions};
use super::launch::{DevPtr, Launch};
use super::probe;
use super::runtime::{Gemm, GemmOut, Runtime};
use crate::backend::SideLane;
use anyhow::{bail, Result};
use cudarc::cublaslt::{result as lt, sys as lt_sys};
use cudarc::driver::{result as cu, sys as cu_sys};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::sync::Mutex;

/// cuBLASLt's workspace: 32 MiB, what NVIDIA recommends for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// What `DriverRuntime::new` needs: the device and how to compile the kernels for it.
#[derive(Clone, Debug, Default)]
pub struct DriverOptions {
    pub ordinal: usize,
    /// The kernel cache (else `compile::default_cache_dir`).
    pub cache_dir: Option<PathBuf>,
    pub nvrtc: Option<PathBuf>,
    pub cuda_include: Option<PathBuf>,
    /// libcublasLt or its directory (else `$SWALLOW_CUBLASLT`, else the library path).
    pub cublaslt: Option<PathBuf>,
}

/// A GPU through the CUDA driver and cuBLASLt.
pub struct DriverRuntime {
    ordinal: usize,
    arch: Arch,
    dev: cu_sys::CUdevice,
    ctx: cu_sys::CUcontext,
    modules: Vec<cu_sys::CUmodule>,
    functions: HashMap<&'static str, cu_sys::CUfunction>,
    lt: lt_sys::cublasLtHandle_t,
    workspace: cu_sys::CUdeviceptr,
    /// Serialises launches and GEMMs (one stream, one cuBLASLt handle).
    lock: Mutex<()>,
    /// cuBLASLt descriptors and algorithm per GEMM shape.
    plans: Mutex<HashMap<GemmKey, GemmPlan>>,
    /// Synchronise after every launch and GEMM (`SWALLOW_CUDA_SYNC=1`).
    synchronous: bool,
    /// The side streams, by `SideLane`, each made on first use.
    side: Mutex<[Option<SideStream>; 2]>,
}

/// A non-blocking stream (the legacy default stream, where launches go, does not wait for it
/// implicitly) and the two events that order it against the default stream.
struct SideStream {
    stream: cu_sys::CUstream,
    /// Recorded on the default stream by `fork_side`, waited for by the side stream.
    forked: cu_sys::CUevent,
    /// Recorded on the side stream by `join_side`, waited for by the default stream.
    joined: cu_sys::CUevent,
    /// `mark_side`'s events, by slot (made on first use).
    marks: Vec<cu_sys::CUevent>,
}

/// What a GEMM's cuBLASLt descriptors depend on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct GemmKey {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldb: usize,
    ldc: usize,
    trans_a: bool,
    trans_b: bool,
    out: GemmOut,
    /// `alignment` of a, b and c: the algorithm must work with them.
    align: [u32; 3],
}

/// The largest power of two up to 256 dividing `ptr`: the alignment cuBLASLt may assume of an
/// operand (its heuristic assumes 256 unless told less, and an algorithm needing more than an
/// operand has fails).
fn alignment(ptr: DevPtr) -> u32 {
    1 << ptr.trailing_zeros().min(8)
}

struct GemmPlan {
    d: LtDescriptors,
    algo: lt_sys::cublasLtMatmulAlgo_t,
}

// SAFETY: the driver API is thread-safe; every call makes `ctx` current on the calling thread
// first, and launches and GEMMs are serialised by `lock`.
unsafe impl Send for DriverRuntime {}
unsafe impl Sync for DriverRuntime {}

fn cu_err(what: &str) -> impl Fn(cu::DriverError) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("CUDA driver: {what}: {e:?}")
}

fn lt_err(what: &str) -> impl Fn(lt::CublasError) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("cuBLASLt: {what}: {e:?}")
}

impl DriverRuntime {
    pub fn new(opts: &DriverOptions) -> Result<DriverRuntime> {
        let count = probe::init_driver()?;
        if opts.ordinal >= count {
            bail!("CUDA device {} does not exist ({count} devices)", opts.ordinal);
        }
        open_cublaslt(opts.cublaslt.clone())?;
        let arch = Arch::of_device(opts.ordinal)?;
        let cache_dir = match &opts.cache_dir {
            Some(d) => d.clone(),
            None => compile::default_cache_dir()?,
        };
        let compiled = compile::compile_all(&CompileOptions { arch, cache_dir, nvrtc: opts.nvrtc.clone(), cuda_include: opts.cuda_include.clone() })?;
        check_driver_takes(compiled.nvrtc.version, &compiled.nvrtc.path.display().to_string())?;
        // SAFETY: the driver is initialised and `ordinal` exists (checked above).
        unsafe {
            let dev = cu::device::get(opts.ordinal as i32).map_err(cu_err("cuDeviceGet"))?;
            let ctx = cu::primary_ctx::retain(dev).map_err(cu_err("cuDevicePrimaryCtxRetain"))?;
            cu::ctx::set_current(ctx).map_err(cu_err("cuCtxSetCurrent"))?;
            // Built before anything else is created, so that Drop releases what was made before an error.
            let mut rt = DriverRuntime {
                ordinal: opts.ordinal,
                arch,
                dev,
                ctx,
                modules: Vec::new(),
                functions: HashMap::new(),
                lt: std::ptr::null_mut(),
                workspace: 0,
                lock: Mutex::new(()),
                plans: Mutex::new(HashMap::new()),
                synchronous: std::env::var("SWALLOW_CUDA_SYNC").is_ok_and(|v| v == "1"),
                side: Mutex::new([None, None]),
            };
            rt.lt = lt::create_handle().map_err(lt_err("cublasLtCreate"))?;
            rt.workspace = cu::malloc_sync(WORKSPACE_BYTES).map_err(cu_err("cuMemAlloc (cuBLASLt workspace)"))?;
            for m in &compiled.modules {
                if m.cubin.is_empty() {
                    bail!("{}: NVRTC produced no CUBIN for {}", m.source.file, arch.name());
                }
                let module = cu::module::load_data(m.cubin.as_ptr() as *const c_void)
                    .map_err(|e| anyhow::anyhow!("CUDA driver: cuModuleLoadData of {}'s CUBIN for {}: {e:?}", m.source.file, arch.name()))?;
                rt.modules.push(module);
                for &k in m.source.kernels {
                    let f = cu::module::get_function(module, CString::new(k)?)
                        .map_err(|e| anyhow::anyhow!("CUDA driver: cuModuleGetFunction {k} in {}: {e:?}", m.source.file))?;
                    rt.functions.insert(k, f);
                }
            }
            Ok(rt)
        }
    }

    fn make_current(&self) -> Result<()> {
        // SAFETY: `ctx` is the retained primary context, alive until Drop.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(cu_err("cuCtxSetCurrent"))
    }

    /// After `what` was issued: synchronises when asked to (`SWALLOW_CUDA_SYNC=1`).
    fn issued(&self, what: &str) -> Result<()> {
        if self.synchronous {
            cu::ctx::synchronize().map_err(|e| anyhow::anyhow!("CUDA: {what} failed: {e:?}"))?;
        }
        Ok(())
    }

    /// The cuBLASLt descriptors and algorithm of `g`'s shape.
    unsafe fn plan(&self, g: &Gemm) -> Result<GemmPlan> {
        use lt_sys::cublasLtMatmulDescAttributes_t::{CUBLASLT_MATMUL_DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSB};
        use lt_sys::cudaDataType::{CUDA_R_16BF, CUDA_R_32F};
        // Row-major c = op(a) op(b) is column-major cᵀ = op(b)ᵀ op(a)ᵀ, and a row-major [r, c]
        // matrix with leading dimension ld is a column-major [c, r] one with the same ld: so
        // cuBLASLt's A is our b (its op is trans_b), its B is our a (op trans_a), and D is cᵀ [n, m].
        // cublasOperation_t: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 (cudarc's cuBLASLt bindings lack the enum).
        let op = |t: bool| t as i32;
        let [(ar, ac), (br, bc)] = g.stored_shapes();
        let c_type = match g.out {
            GemmOut::Bf16 => CUDA_R_16BF,
            GemmOut::F32 => CUDA_R_32F,
        };
        let mut d = LtDescriptors::default();
        d.desc = Some(lt::create_matmul_desc(lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, CUDA_R_32F).map_err(lt_err("cublasLtMatmulDescCreate"))?);
        for (ty, rows, cols, ld) in [(CUDA_R_16BF, bc, br, g.ldb), (CUDA_R_16BF, ac, ar, g.lda), (c_type, g.n, g.m, g.ldc)] {
            d.layouts.push(lt::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64).map_err(lt_err("cublasLtMatrixLayoutCreate"))?);
        }
        d.pref = Some(lt::create_matmul_pref().map_err(lt_err("cublasLtMatmulPreferenceCreate"))?);
        let (desc, pref, [la, lb, lc]) = (d.desc.unwrap(), d.pref.unwrap(), [d.layouts[0], d.layouts[1], d.layouts[2]]);
        for (attr, t) in [(CUBLASLT_MATMUL_DESC_TRANSA, op(g.trans_b)), (CUBLASLT_MATMUL_DESC_TRANSB, op(g.trans_a))] {
            lt::set_matmul_desc_attribute(desc, attr, &t as *const i32 as *const c_void, 4).map_err(lt_err("cublasLtMatmulDescSetAttribute"))?;
        }
        use lt_sys::cublasLtMatmulPreferenceAttributes_t::*;
        let ws = WORKSPACE_BYTES as u64;
        lt::set_matmul_pref_attribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws as *const u64 as *const c_void, 8)
            .map_err(lt_err("cublasLtMatmulPreferenceSetAttribute"))?;
        // The operands' alignments (cuBLASLt's A is our b, its B our a; C and D are our c).
        let [a, b, c] = [g.a, g.b, g.c].map(alignment);
        for (attr, bytes) in [
            (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, b),
            (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, a),
            (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, c),
            (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, c),
        ] {
            lt::set_matmul_pref_attribute(pref, attr, &bytes as *const u32 as *const c_void, 4).map_err(lt_err("cublasLtMatmulPreferenceSetAttribute"))?;
        }
        // Split-K partial sums are added in fp32 only: not in the output type (bf16 would be rounded
        // more than once, unlike `Gemm`'s contract), nor in place with atomics (run-to-run
        // differences, which full recomputation must not have).
        let scheme = lt_sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE as u32;
        lt::set_matmul_pref_attribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &scheme as *const u32 as *const c_void, 4)
            .map_err(lt_err("cublasLtMatmulPreferenceSetAttribute"))?;
        let heuristic = lt::get_matmul_algo_heuristic(self.lt, desc, la, lb, lc, lc, pref).map_err(|e| {
            anyhow::anyhow!(
                "cuBLASLt: no algorithm for the GEMM m {} n {} k {} (lda {} ldb {} ldc {}, trans a {} b {}, {:?} out, operand alignments {a}/{b}/{c} bytes): {e:?}",
                g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.trans_a, g.trans_b, g.out
            )
        })?;
        Ok(GemmPlan { d, algo: heuristic.algo })
    }
}

/// Fails unless the driver runs code of NVRTC `nvrtc` (major, minor) at `path`: a driver takes
/// the CUBINs of its own CUDA major version and older.
fn check_driver_takes(nvrtc: (i32, i32), path: &str) -> Result<()> {
    let mut v = 0;
    // SAFETY: writes one int; the driver is initialised.
    unsafe { cu_sys::cuDriverGetVersion(&mut v) }.result().map_err(cu_err("cuDriverGetVersion"))?;
    nvrtc_fits_driver(nvrtc, v, path)
}

/// `check_driver_takes` for a driver reporting version `v` (1000 x major + 10 x minor).
fn nvrtc_fits_driver(nvrtc: (i32, i32), v: i32, path: &str) -> Result<()> {
    let driver = (v / 1000, v % 1000 / 10);
    if nvrtc.0 > driver.0 {
        bail!(
            "NVRTC {}.{} ({path}) is newer than the CUDA driver, which runs CUDA {}.{} code: use an NVRTC of CUDA {} or older (SWALLOW_NVRTC / --nvrtc)",
            nvrtc.0, nvrtc.1, driver.0, driver.1, driver.0
        );
    }
    Ok(())
}

/// Makes cuBLASLt loadable by cudarc: opens `explicit` or `$SWALLOW_CUBLASLT` (the library or
/// its directory, e.g. a PyTorch wheel's nvidia/cublas/lib) for the process, then checks that
/// cudarc finds a library by its names (libcublasLt.so, .so.12, ...).
fn open_cublaslt(explicit: Option<PathBuf>) -> Result<()> {
    let env = std::env::var_os("SWALLOW_CUBLASLT").filter(|v| !v.is_empty()).map(PathBuf::from);
    let opened = match explicit.or(env) {
        Some(p) => Some(super::nvrtc::open_named(&p, "cuBLASLt", &["libcublasLt.so.12", "libcublasLt.so"])?.0),
        None => None,
    };
    // SAFETY: only probes library names with dlopen.
    if !unsafe { lt_sys::is_culib_present() } {
        bail!(
            "cuBLASLt (libcublasLt.so.12, CUDA 12) not found on the library path: set SWALLOW_CUBLASLT to the library or its \
             directory; a CUDA 13 libcublasLt.so.13 loads when linked as libcublasLt.so on the library path \
             (scripts/gpu-check.sh does that)"
        );
    }
    if let Some(opened) = opened {
        // SAFETY: the library is known to load (checked above).
        let create = unsafe { lt_sys::culib().get::<unsafe extern "C" fn()>(b"cublasLtCreate") };
        super::nvrtc::warn_unless_used("cuBLASLt", &opened, create.ok().and_then(|f| super::nvrtc::file_at(*f as *const c_void)).as_deref());
    }
    Ok(())
}

impl Drop for DriverRuntime {
    fn drop(&mut self) {
        // SAFETY: everything released here was created in `new` and is used by nothing else.
        unsafe {
            let _ = cu::ctx::set_current(self.ctx);
            let _ = cu::ctx::synchronize();
            self.plans.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
            for side in self.side.get_mut().unwrap_or_else(|e| e.into_inner()).iter_mut().filter_map(Option::take) {
                for e in [side.forked, side.joined].into_iter().chain(side.marks) {
                    let _ = cu::event::destroy(e);
                }
                let _ = cu::stream::destroy(side.stream);
            }
            for &m in &self.modules {
                let _ = cu::module::unload(m);
            }
            if self.workspace != 0 {
                let _ = cu::free_sync(self.workspace);
            }
            if !self.lt.is_null() {
                let _ = lt::destroy_handle(self.lt);
            }
            let _ = cu::primary_ctx::release(self.dev);
        }
    }
}

impl Runtime for DriverRuntime {
    fn describe(&self) -> String {
        format!("CUDA device {} ({}) through the driver API and cuBLASLt", self.ordinal, self.arch.name())
    }

    fn alloc(&self, bytes: usize) -> Result<DevPtr> {
        self.make_current()?;
        // SAFETY: a plain allocation in the current context.
        unsafe { cu::malloc_sync(bytes.max(1)) }.map_err(|e| anyhow::anyhow!("CUDA: cannot allocate {bytes} bytes on device {}: {e:?}", self.ordinal))
    }

    unsafe fn free(&self, ptr: DevPtr) -> Result<()> {
        // Launches still queued may use the memory: wait for them first.
        self.synchronize()?;
        cu::free_sync(ptr).map_err(cu_err("cuMemFree"))
    }

    fn upload(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.make_current()?;
        // SAFETY: the driver checks that `dst` is device memory of the context.
        unsafe { cu::memcpy_htod_sync(dst, src) }.map_err(cu_err("cuMemcpyHtoD"))
    }

    fn download(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.make_current()?;
        // SAFETY: the driver checks that `src` is device memory of the context.
        unsafe { cu::memcpy_dtoh_sync(dst, src) }.map_err(cu_err("cuMemcpyDtoH"))
    }

    unsafe fn launch(&self, l: &Launch) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.make_current()?;
        let Some(&f) = self.functions.get(l.kernel) else { bail!("kernel {} is not in any loaded module", l.kernel) };
        let mut params = l.params();
        let [gx, gy, gz] = l.grid;
        let [bx, by, bz] = l.block;
        cu::launch_kernel(f, (gx, gy, gz), (bx, by, bz), l.smem, std::ptr::null_mut(), &mut params).map_err(cu_err(l.kernel))?;
        self.issued(l.kernel)
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        g.extents()?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.make_current()?;
        let align = [g.a, g.b, g.c].map(alignment);
        let key = GemmKey { m: g.m, n: g.n, k: g.k, lda: g.lda, ldb: g.ldb, ldc: g.ldc, trans_a: g.trans_a, trans_b: g.trans_b, out: g.out, align };
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let p = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.plan(g)?),
        };
        let (la, lb, lc) = (p.d.layouts[0], p.d.layouts[1], p.d.layouts[2]);
        let (alpha, beta) = (g.alpha, g.beta);
        lt::matmul(
            self.lt,
            p.d.desc.unwrap(),
            &alpha as *const f32 as *const c_void,
            &beta as *const f32 as *const c_void,
            g.b as *const c_void,
            la,
            g.a as *const c_void,
            lb,
            g.c as *const c_void,
            lc,
            g.c as *mut c_void,
            lc,
            &p.algo,
            self.workspace as *mut c_void,
            WORKSPACE_BYTES,
            std::ptr::null_mut(),
        )
        .map_err(lt_err("cublasLtMatmul"))?;
        self.issued("cublasLtMatmul")
    }

    fn synchronize(&self) -> Result<()> {
        self.make_current()?;
        cu::ctx::synchronize().map_err(|e| anyhow::anyhow!("CUDA: a launch or GEMM failed: {e:?}"))
    }

    fn side_stream(&self, lane: SideLane) -> Result<u64> {
        self.with_side(lane, |side| Ok(side.stream as u64))
    }

    fn fork_side(&self, lane: SideLane) -> Result<()> {
        // SAFETY: the events and the stream live until Drop.
        self.with_side(lane, |side| unsafe {
            cu::event::record(side.forked, cu::stream::null()).map_err(cu_err("cuEventRecord (fork)"))?;
            cu::stream::wait_event(side.stream, side.forked, cu_sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT).map_err(cu_err("cuStreamWaitEvent (fork)"))
        })
    }

    fn join_side(&self, lane: SideLane) -> Result<()> {
        // SAFETY: as in `fork_side`.
        self.with_side(lane, |side| unsafe {
            cu::event::record(side.joined, side.stream).map_err(cu_err("cuEventRecord (join)"))?;
            cu::stream::wait_event(cu::stream::null(), side.joined, cu_sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT).map_err(cu_err("cuStreamWaitEvent (join)"))
        })
    }

    fn mark_side(&self, lane: SideLane, slot: usize) -> Result<()> {
        self.with_side(lane, |side| {
            while side.marks.len() <= slot {
                side.marks.push(cu::event::create(cu_sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(cu_err("cuEventCreate"))?);
            }
            // SAFETY: the event and the stream live until Drop.
            unsafe { cu::event::record(side.marks[slot], side.stream) }.map_err(cu_err("cuEventRecord (mark)"))
        })
    }

    fn wait_side(&self, lane: SideLane, slot: usize) -> Result<()> {
        self.with_side(lane, |side| {
            // A mark never recorded has no work before it (as on the emulated runtime).
            let Some(&mark) = side.marks.get(slot) else { return Ok(()) };
            // SAFETY: as in `mark_side`.
            unsafe { cu::stream::wait_event(cu::stream::null(), mark, cu_sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT) }.map_err(cu_err("cuStreamWaitEvent (mark)"))
        })
    }
}

impl DriverRuntime {
    /// Runs `f` on side stream `lane`, made (with its events) on first use.
    fn with_side<T>(&self, lane: SideLane, f: impl FnOnce(&mut SideStream) -> Result<T>) -> Result<T> {
        self.make_current()?;
        let mut sides = self.side.lock().unwrap_or_else(|e| e.into_inner());
        let side = &mut sides[lane as usize];
        if side.is_none() {
            let flags = cu_sys::CUevent_flags::CU_EVENT_DISABLE_TIMING;
            let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking).map_err(cu_err("cuStreamCreate"))?;
            let forked = cu::event::create(flags).map_err(cu_err("cuEventCreate"))?;
            let joined = cu::event::create(flags).map_err(cu_err("cuEventCreate"))?;
            *side = Some(SideStream { stream, forked, joined, marks: Vec::new() });
        }
        f(side.as_mut().unwrap())
    }
}

/// The cuBLASLt descriptors of one GEMM, destroyed on every path out of it.
#[derive(Default)]
struct LtDescriptors {
    desc: Option<lt_sys::cublasLtMatmulDesc_t>,
    layouts: Vec<lt_sys::cublasLtMatrixLayout_t>,
    pref: Option<lt_sys::cublasLtMatmulPreference_t>,
}

impl Drop for LtDescriptors {
    fn drop(&mut self) {
        // SAFETY: each was created once by cuBLASLt and is destroyed once here.
        unsafe {
            for &l in &self.layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
            if let Some(p) = self.pref {
                let _ = lt::destroy_matmul_pref(p);
            }
            if let Some(d) = self.desc {
                let _ = lt::destroy_matmul_desc(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_alignment_is_the_largest_power_of_two_up_to_256() {
        assert_eq!([0x1000, 0x1100, 0x1080, 0x1002, 0x1010, 0].map(alignment), [256, 256, 128, 2, 16, 256]);
    }

    /// cuBLASLt loads through cudarc and answers, or its absence is an error naming it (this
    /// machine has no libcublasLt on the library path unless one is put there).
    #[test]
    fn cublaslt_loads_or_is_named_missing() {
        match open_cublaslt(None) {
            // SAFETY: the library is present (checked by `open_cublaslt`).
            Ok(()) => {
                let v = unsafe { lt_sys::cublasLtGetVersion() };
                eprintln!("cuBLASLt version {v}");
                assert!(v >= 120000, "cuBLASLt version {v}");
            }
            Err(e) => assert!(e.to_string().starts_with("cuBLASLt (libcublasLt.so.12, CUDA 12) not found"), "{e}"),
        }
        let e = open_cublaslt(Some(PathBuf::from("/nonexistent/libcublasLt.so.12"))).unwrap_err().to_string();
        assert!(e.contains("cuBLASLt: /nonexistent/libcublasLt.so.12 does not exist"), "{e}");
    }

    #[test]
    fn an_nvrtc_newer_than_the_driver_is_refused_by_name() {
        assert!(nvrtc_fits_driver((13, 0), 13000, "n").is_ok());
        assert!(nvrtc_fits_driver((12, 9), 13000, "n").is_ok());
        assert!(nvrtc_fits_driver((12, 9), 12020, "n").is_ok(), "CUBINs of a newer minor version run (minor version compatibility)");
        let err = nvrtc_fits_driver((13, 0), 12080, "/x/libnvrtc.so.13").unwrap_err().to_string();
        assert!(err.contains("NVRTC 13.0 (/x/libnvrtc.so.13)") && err.contains("runs CUDA 12.8 code") && err.contains("CUDA 12 or older"), "{err}");
    }
}
