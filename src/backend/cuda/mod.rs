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

/// How far a training run of the CUDA backend (bf16 activations and weight copies, fp32 masters
/// and gradients) may stray from the CPU backend's f32 run of the same model and layout, relative,
/// after the 1e-2 learning-rate warm-up step the checks use: the loss (measured at most 5.3e-4,
/// tests/cuda_emulated.rs) and the gradient norm (at most 1.9e-2: Adam's near-sign update of the
/// smallest gradients turns bf16 rounding differences into whole steps).
pub const LOSS_TOLERANCE: f64 = 1e-3;
pub const GRAD_NORM_TOLERANCE: f64 = 5e-2;

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
