//! The CUDA backend's kernel layer: the hand-written kernels of kernels/*.cu (bf16 storage, fp32
//! accumulation), their launch geometry (launch.rs, shared by real CUDA and the emulation), and
//! the emulation build that runs the very same sources on CPU (emu.rs), so every kernel is
//! checked against the CPU backend in every test run (tests/kernel_conformance.rs).

pub mod emu;
pub mod launch;
