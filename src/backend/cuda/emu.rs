//! FFI to the emulation build of the kernels (kernels/emu/, compiled by build.rs): runs a
//! `Launch` on CPU with host pointers in place of device pointers, with the same kernel name,
//! grid, block, shared-memory size and argument array a real CUDA launch uses.

use super::launch::Launch;
use std::ffi::{c_char, c_void, CString};

extern "C" {
    fn swallow_emu_launch(
        name: *const c_char,
        gx: u32,
        gy: u32,
        gz: u32,
        bx: u32,
        by: u32,
        bz: u32,
        smem: u64,
        params: *mut *mut c_void,
    ) -> i32;
}

/// Runs `l` to completion on the calling thread (launches from several threads are serialised).
///
/// # Safety
/// Every pointer argument of `l` must be a host address valid for all the accesses the kernel
/// makes with the launch's shapes, and buffers a kernel writes must not be aliased elsewhere.
pub unsafe fn launch(l: &Launch) {
    let name = CString::new(l.kernel).expect("kernel name without NUL");
    let mut params = l.params();
    let [gx, gy, gz] = l.grid;
    let [bx, by, bz] = l.block;
    let rc = swallow_emu_launch(name.as_ptr(), gx, gy, gz, bx, by, bz, l.smem as u64, params.as_mut_ptr());
    assert_eq!(rc, 0, "emulation build has no kernel named {}", l.kernel);
}
