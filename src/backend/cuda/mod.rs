//! The CUDA backend's kernel layer: the hand-written kernels of kernels/*.cu (bf16 storage, fp32
//! accumulation), their launch geometry (launch.rs, shared by real CUDA and the emulation), the
//! emulation build that runs the very same sources on CPU (emu.rs), so every kernel is checked
//! against the CPU backend in every test run (tests/kernel_conformance.rs), and their run-time
//! compilation for the GPU's architecture: the sources embedded in the binary (sources.rs),
//! NVRTC loaded at run time (nvrtc.rs), and the on-disk cache of compiled modules (compile.rs).
//! Under them, the device runtime (runtime.rs: memory, copies, launches, cuBLASLt-contract GEMMs)
//! with two implementations, a real GPU (driver.rs) and its emulation on the CPU (emulated.rs);
//! probe.rs finds the CUDA driver without panicking and picks the training device. On top,
//! backend.rs is the training `Backend` over a runtime (bf16 activations, fp32 master weights);
//! instrument.rs meters its device memory and times each kernel and GEMM for the GPU benchmark.

pub mod backend;
pub mod compile;
pub mod driver;
pub mod emu;
pub mod emulated;
pub mod launch;
pub mod nvrtc;
pub mod instrument;
pub mod probe;
pub mod runtime;
pub mod sources;
