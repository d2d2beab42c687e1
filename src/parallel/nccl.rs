//! NCCL communicators for the TP, DP and PP groups of a CUDA run (`--comm nccl`, the default on a
//! GPU): `NcclGroup` is an MPI group (its host-slice collectives and point-to-point messages go
//! through MPI as before) that also offers `DeviceComm` through NCCL, bf16 and fp32, enqueued on
//! the device's stream in order with the backend's launches. Made collectively: rank 0 of the
//! group asks NCCL for a unique id, MPI broadcasts its 128 bytes, every rank joins with
//! ncclCommInitRank on its current CUDA device. libnccl.so.2 is opened at run time
//! (nccl_lib.rs), its absence an error that says where it looked. NOT YET RUN ON HARDWARE: neither
//! the collectives nor the pipeline's ncclSend/ncclRecv have run on a GPU; the emulated device
//! runs the same calls with NCCL emulated over MPI (`--comm nccl-emulated`, nccl_emulated.rs).
//!
//! Pipeline messages are single ncclSend/ncclRecv calls, not grouped: each returns on the host at
//! once and blocks the stream until the peer's matching call (NCCL matches a pair of ranks' p2p
//! calls in issue order, ignoring tags). That cannot deadlock on the pipeline's lists: they are
//! placed for rendezvous sends (pipeline/schedule.rs), every rank's list being a projection of one
//! global sequence of exchanges and computes, and TP collectives inside a compute are issued by
//! ranks of one stage with identical lists; so the earliest unfinished operation in that sequence
//! always has every participant's stream at it (all earlier ones finished), and a host waiting on
//! its own stream waits only for operations earlier in the sequence. The side streams' work
//! cannot close a cycle either: the DP gradient exchange and ZeRO-1's weight all-gather (DP side
//! lane) are issued by DP peers with identical lists, and waited for (the optimizer step's join,
//! the forward pass's mark waits) only after every peer has issued them; a TP input-gradient
//! reduction (TP side lane) is joined within the same layer's backward, by TP peers with
//! identical lists, before the TP communicator is used again.
//!
//! The environment must leave NCCL blocking and the bootstrap to us: `NCCL_COMM_ID` (one root for
//! every communicator) and `NCCL_COMM_BLOCKING=0` (calls that return before they are enqueued)
//! are refused with a message.

use super::comm::{Collectives, CommStats, MpiGroup};
use super::device::DeviceComm;
use super::nccl_emulated as emulated;
use super::nccl_lib::Nccl;
use crate::backend::cuda::launch::{DevPtr, Dtype};
use anyhow::{bail, Result};
use cudarc::nccl::sys as nc_sys;
use mpi::collective::Root;
use mpi::topology::Communicator;
use std::ffi::c_void;
use std::time::Instant;

pub struct NcclGroup {
    inner: MpiGroup,
    transport: Transport,
}

/// What carries the device collectives: an NCCL communicator, or its emulation over MPI for the
/// emulated device (nccl_emulated.rs).
enum Transport {
    Nccl(&'static Nccl, nc_sys::ncclComm_t),
    Emulated,
}

fn nccl_type(dtype: Dtype) -> nc_sys::ncclDataType_t {
    match dtype {
        Dtype::Bf16 => nc_sys::ncclDataType_t::ncclBfloat16,
        Dtype::F32 => nc_sys::ncclDataType_t::ncclFloat32,
    }
}

impl NcclGroup {
    /// Collective over `inner`'s ranks, each with its CUDA device current.
    pub fn new(inner: MpiGroup) -> Result<NcclGroup> {
        let lib = Nccl::get().map_err(|e| anyhow::anyhow!("--comm nccl: {e:#}"))?;
        check_environment(|k| std::env::var(k).ok())?;
        let mut id = if inner.rank() == 0 { lib.unique_id()? } else { nc_sys::ncclUniqueId { internal: [0; 128] } };
        // SAFETY: the id is 128 plain bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(id.internal.as_mut_ptr() as *mut u8, id.internal.len()) };
        inner.comm().process_at_rank(0).broadcast_into(bytes);
        let comm = lib.comm_init_rank(inner.size(), id, inner.rank())?;
        Ok(NcclGroup { inner, transport: Transport::Nccl(lib, comm) })
    }

    /// Runs `op` on this group's transport and accounts `bytes` sent, with the time the call took
    /// (NCCL's: the enqueueing).
    fn accounted(&self, bytes: f64, op: impl FnOnce(&Transport) -> Result<()>) -> Result<()> {
        let start = Instant::now();
        op(&self.transport)?;
        self.inner.account(bytes, start);
        Ok(())
    }

    /// The same group with NCCL emulated over MPI (`--comm nccl-emulated`, emulated device only).
    pub fn emulated(inner: MpiGroup) -> NcclGroup {
        NcclGroup { inner, transport: Transport::Emulated }
    }
}

/// Fails when the environment (`var`) sets what breaks how swallow makes and drives its
/// communicators.
fn check_environment(var: impl Fn(&str) -> Option<String>) -> Result<()> {
    if let Some(id) = var("NCCL_COMM_ID") {
        bail!("--comm nccl: NCCL_COMM_ID is set ({id}): it gives every communicator one bootstrap root, but swallow makes one per TP, DP and PP group with its own unique id broadcast over MPI; unset it");
    }
    if var("NCCL_COMM_BLOCKING").as_deref() == Some("0") {
        bail!("--comm nccl: NCCL_COMM_BLOCKING=0 makes NCCL calls return before they are enqueued, which swallow does not poll for; unset it or set it to 1");
    }
    Ok(())
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        if let Transport::Nccl(lib, comm) = self.transport {
            // SAFETY: made in `new`, destroyed once, after the device has finished the work
            // issued to it (an error here means no context is current: nothing to wait for).
            let _ = cudarc::driver::result::ctx::synchronize();
            let _ = unsafe { lib.comm_destroy(comm) };
        }
    }
}

impl Collectives for NcclGroup {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        self.inner.all_reduce_sum_f32(buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        self.inner.all_reduce_sum_f64(buf)
    }
    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        self.inner.reduce_scatter_sum_f32(send, recv)
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) {
        self.inner.all_gather_f32(send, recv)
    }
    fn split(&self, color: usize, key: usize) -> Box<dyn Collectives> {
        self.inner.split(color, key)
    }
    fn send_f32(&self, to: usize, tag: i32, buf: &[f32]) {
        self.inner.send_f32(to, tag, buf)
    }
    fn recv_f32(&self, from: usize, tag: i32, buf: &mut [f32]) {
        self.inner.recv_f32(from, tag, buf)
    }
    fn stats(&self) -> CommStats {
        self.inner.stats()
    }
    fn device(&self) -> Option<&dyn DeviceComm> {
        Some(self)
    }
}

/// Enqueued on `stream` (point-to-point messages on the legacy default stream), after the
/// backend's launches; the time accounted is
/// the enqueueing, not the transfer.
impl DeviceComm for NcclGroup {
    fn supports(&self, _dtype: Dtype) -> bool {
        true
    }
    fn in_place(&self) -> bool {
        true
    }
    fn stream_ordered(&self) -> bool {
        true
    }
    unsafe fn all_reduce_sum(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n: usize, stream: u64) -> Result<()> {
        let sum = nc_sys::ncclRedOp_t::ncclSum;
        self.accounted(self.inner.all_reduce_bytes(n * dtype.bytes()), |t| match *t {
            Transport::Nccl(lib, comm) => lib.all_reduce(send as *const c_void, recv as *mut c_void, n, nccl_type(dtype), sum, comm, stream as _),
            Transport::Emulated => emulated::all_reduce(&self.inner, send, recv, dtype, n, stream),
        })
    }
    unsafe fn reduce_scatter_sum(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n_recv: usize, stream: u64) -> Result<()> {
        let sum = nc_sys::ncclRedOp_t::ncclSum;
        self.accounted(((self.size() - 1) * n_recv * dtype.bytes()) as f64, |t| match *t {
            Transport::Nccl(lib, comm) => lib.reduce_scatter(send as *const c_void, recv as *mut c_void, n_recv, nccl_type(dtype), sum, comm, stream as _),
            Transport::Emulated => emulated::reduce_scatter(&self.inner, send, recv, dtype, n_recv, stream),
        })
    }
    unsafe fn all_gather(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n_send: usize, stream: u64) -> Result<()> {
        self.accounted(((self.size() - 1) * n_send * dtype.bytes()) as f64, |t| match *t {
            Transport::Nccl(lib, comm) => lib.all_gather(send as *const c_void, recv as *mut c_void, n_send, nccl_type(dtype), comm, stream as _),
            Transport::Emulated => emulated::all_gather(&self.inner, send, recv, dtype, n_send, stream),
        })
    }
    unsafe fn send(&self, to: usize, _tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
        self.accounted((n * dtype.bytes()) as f64, |t| match *t {
            Transport::Nccl(lib, comm) => lib.send(buf as *const c_void, n, nccl_type(dtype), to, comm, std::ptr::null_mut()),
            Transport::Emulated => emulated::send(&self.inner, to, buf, dtype, n),
        })
    }
    unsafe fn recv(&self, from: usize, _tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
        self.accounted(0.0, |t| match *t {
            Transport::Nccl(lib, comm) => lib.recv(buf as *mut c_void, n, nccl_type(dtype), from, comm, std::ptr::null_mut()),
            Transport::Emulated => emulated::recv(&self.inner, from, buf, dtype, n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_environment;

    #[test]
    fn a_shared_bootstrap_root_or_non_blocking_calls_are_refused() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string());
        assert!(check_environment(env(&[])).is_ok());
        assert!(check_environment(env(&[("NCCL_COMM_BLOCKING", "1"), ("NCCL_DEBUG", "INFO")])).is_ok());
        let err = check_environment(env(&[("NCCL_COMM_ID", "10.0.0.1:5555")])).unwrap_err().to_string();
        assert!(err.contains("NCCL_COMM_ID is set (10.0.0.1:5555)") && err.contains("unset it"), "{err}");
        let err = check_environment(env(&[("NCCL_COMM_BLOCKING", "0")])).unwrap_err().to_string();
        assert!(err.contains("NCCL_COMM_BLOCKING=0"), "{err}");
    }
}
