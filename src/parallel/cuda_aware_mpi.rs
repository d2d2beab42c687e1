//! CUDA-aware MPI as a device communicator (`DeviceComm` on `MpiGroup`, `--comm mpi`): device
//! addresses handed to MPI as they are, fp32 only (MPI has no bf16 sum; the backend converts bf16
//! buffers through fp32 scratch; messages go as 16-bit units), run when called (the caller
//! synchronises the device first), each call's bytes and time counted on the group.

use super::comm::{Collectives, MpiGroup};
use super::device::DeviceComm;
use crate::backend::cuda::launch::{DevPtr, Dtype};
use anyhow::{bail, Result};
use mpi::ffi;
use mpi::raw::AsRaw;
use std::ffi::c_void;
use std::time::Instant;

fn mpi_count(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| anyhow::anyhow!("CUDA-aware MPI: {n} elements exceed MPI's int count"))
}

/// The MPI type a message of `dtype` travels as: a message is not summed, so bf16 goes as its
/// 16-bit patterns.
pub(super) fn message_type(dtype: Dtype) -> ffi::MPI_Datatype {
    // SAFETY: rsmpi's datatype handles are constants set when the library loads.
    match dtype {
        Dtype::F32 => unsafe { ffi::RSMPI_FLOAT },
        Dtype::Bf16 => unsafe { ffi::RSMPI_UINT16_T },
    }
}

fn mpi_ok(what: &str, rc: i32) -> Result<()> {
    if rc != 0 {
        bail!("CUDA-aware MPI: {what} returned error {rc}");
    }
    Ok(())
}

/// CUDA-aware MPI: the caller has synchronised the device (MPI reads and writes device memory
/// when called, outside the device's stream order).
impl DeviceComm for MpiGroup {
    fn supports(&self, dtype: Dtype) -> bool {
        dtype == Dtype::F32
    }
    fn in_place(&self) -> bool {
        false
    }
    fn stream_ordered(&self) -> bool {
        false
    }
    unsafe fn all_reduce_sum(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n: usize, _stream: u64) -> Result<()> {
        assert_eq!(dtype, Dtype::F32, "CUDA-aware MPI sums fp32 only");
        let start = Instant::now();
        let rc = ffi::MPI_Allreduce(send as *const c_void, recv as *mut c_void, mpi_count(n)?, ffi::RSMPI_FLOAT, ffi::RSMPI_SUM, self.comm().as_raw());
        mpi_ok("MPI_Allreduce", rc)?;
        self.account(self.all_reduce_bytes(4 * n), start);
        Ok(())
    }
    unsafe fn reduce_scatter_sum(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n_recv: usize, _stream: u64) -> Result<()> {
        assert_eq!(dtype, Dtype::F32, "CUDA-aware MPI sums fp32 only");
        let start = Instant::now();
        let rc = ffi::MPI_Reduce_scatter_block(send as *const c_void, recv as *mut c_void, mpi_count(n_recv)?, ffi::RSMPI_FLOAT, ffi::RSMPI_SUM, self.comm().as_raw());
        mpi_ok("MPI_Reduce_scatter_block", rc)?;
        self.account(((self.size() - 1) * 4 * n_recv) as f64, start);
        Ok(())
    }
    unsafe fn all_gather(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n_send: usize, _stream: u64) -> Result<()> {
        let start = Instant::now();
        let (n, t) = (mpi_count(n_send)?, message_type(dtype));
        let rc = ffi::MPI_Allgather(send as *const c_void, n, t, recv as *mut c_void, n, t, self.comm().as_raw());
        mpi_ok("MPI_Allgather", rc)?;
        self.account(((self.size() - 1) * dtype.bytes() * n_send) as f64, start);
        Ok(())
    }
    unsafe fn send(&self, to: usize, tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
        let start = Instant::now();
        let rc = ffi::MPI_Send(buf as *const c_void, mpi_count(n)?, message_type(dtype), to as i32, tag, self.comm().as_raw());
        mpi_ok("MPI_Send", rc)?;
        self.account((dtype.bytes() * n) as f64, start);
        Ok(())
    }
    unsafe fn recv(&self, from: usize, tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
        let start = Instant::now();
        let rc = ffi::MPI_Recv(buf as *mut c_void, mpi_count(n)?, message_type(dtype), from as i32, tag, self.comm().as_raw(), ffi::RSMPI_STATUS_IGNORE);
        mpi_ok("MPI_Recv", rc)?;
        self.account(0.0, start);
        Ok(())
    }
}
