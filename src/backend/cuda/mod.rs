//! The CUDA backend's kernel layer: the hand-written kernels of kernels/*.cu (bf16 storage, fp32
//! accumulation), their launch geometry (launch.rs, shared by real CUDA and the emulation), the
//! emulation build that runs the very same sources on CPU (emu.rs), so every kernel is checked
//! against the CPU backend in every test run (tests/kernel_conformance.rs), and their run-time
//! compilation for the GPU's architecture: the sources embedded in the binary (sources.rs),
//! NVRTC loaded at run time (nvrtc.rs), and the on-disk cache of compiled modules (compile.rs).

pub mod compile;
pub mod emu;
pub mod launch;
pub mod nvrtc;
pub mod sources;
