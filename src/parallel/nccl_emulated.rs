//! NCCL's device collectives emulated over MPI for the emulated device (`--comm nccl-emulated`,
//! with `--device cuda-emulated`), so that CI runs the CUDA backend's NCCL path: bf16 sums
//! without fp32 copies, the in-place forms, stream order (work issued to the side stream waits
//! in the emulated runtime until the default stream joins it, backend/cuda/emulated.rs), and
//! point-to-point messages matched in issue order with the tag ignored, as ncclSend/ncclRecv
//! match. The emulated device's addresses are host memory: each operation copies its input to
//! fp32 host vectors (bf16 widened exactly), runs the MPI collective, and writes the result in
//! the buffer's type (bf16 rounded once to nearest even, as NCCL's bf16 sum of two ranks does).

use super::comm::MpiGroup;
use super::cuda_aware_mpi::message_type;
use crate::backend::cuda::emulated;
use crate::backend::cuda::launch::{DevPtr, Dtype};
use anyhow::Result;
use half::bf16;
use mpi::ffi;
use mpi::raw::AsRaw;
use std::ffi::c_void;

/// An MPI communicator handle that queued work may carry (MPI handles are plain values, and
/// every rank issues and runs its queued work on one thread).
#[derive(Clone, Copy)]
struct RawComm(ffi::MPI_Comm);
// SAFETY: see above; the communicator outlives the runtime's queue, which the optimizer step
// joins before anything is freed.
unsafe impl Send for RawComm {}

/// `n` elements of `dtype` at host address `at`, widened to fp32.
unsafe fn read(at: DevPtr, dtype: Dtype, n: usize) -> Vec<f32> {
    match dtype {
        Dtype::F32 => std::slice::from_raw_parts(at as *const f32, n).to_vec(),
        Dtype::Bf16 => std::slice::from_raw_parts(at as *const bf16, n).iter().map(|x| x.to_f32()).collect(),
    }
}

/// `v` written at host address `at` as `dtype`.
unsafe fn write(at: DevPtr, dtype: Dtype, v: &[f32]) {
    match dtype {
        Dtype::F32 => std::slice::from_raw_parts_mut(at as *mut f32, v.len()).copy_from_slice(v),
        Dtype::Bf16 => std::slice::from_raw_parts_mut(at as *mut bf16, v.len()).iter_mut().zip(v).for_each(|(d, &x)| *d = bf16::from_f32(x)),
    }
}

fn check(what: &str, rc: i32) {
    assert_eq!(rc, 0, "emulated NCCL: {what} returned MPI error {rc}");
}

/// One collective of `group` on stream `stream`: `input` elements read from `send`, `op` from
/// them to `output` elements written to `recv`.
unsafe fn collective(group: &MpiGroup, stream: u64, send: DevPtr, recv: DevPtr, dtype: Dtype, io: (usize, usize), op: fn(RawComm, &[f32], &mut [f32])) {
    let comm = RawComm(group.comm().as_raw());
    let work = move || {
        let input = read(send, dtype, io.0);
        let mut output = vec![0.0f32; io.1];
        op(comm, &input, &mut output);
        write(recv, dtype, &output);
    };
    // SAFETY: the backend passes 0 or its runtime's side stream.
    emulated::issue(stream, Box::new(work));
}

/// ncclAllReduce (sum), in place when `send == recv`.
///
/// # Safety
/// Both addresses hold `n` elements of `dtype` in host memory.
pub unsafe fn all_reduce(group: &MpiGroup, send: DevPtr, recv: DevPtr, dtype: Dtype, n: usize, stream: u64) -> Result<()> {
    collective(group, stream, send, recv, dtype, (n, n), |c, i, o| {
        check("MPI_Allreduce", ffi::MPI_Allreduce(i.as_ptr() as *const c_void, o.as_mut_ptr() as *mut c_void, i.len() as i32, ffi::RSMPI_FLOAT, ffi::RSMPI_SUM, c.0));
    });
    Ok(())
}

/// ncclReduceScatter (sum), in place when `recv` is block rank of `send`.
///
/// # Safety
/// `send` holds size x `n_recv` elements of `dtype`, `recv` `n_recv`, in host memory.
pub unsafe fn reduce_scatter(group: &MpiGroup, send: DevPtr, recv: DevPtr, dtype: Dtype, n_recv: usize, stream: u64) -> Result<()> {
    let size = mpi::topology::Communicator::size(group.comm()) as usize;
    collective(group, stream, send, recv, dtype, (size * n_recv, n_recv), |c, i, o| {
        check("MPI_Reduce_scatter_block", ffi::MPI_Reduce_scatter_block(i.as_ptr() as *const c_void, o.as_mut_ptr() as *mut c_void, o.len() as i32, ffi::RSMPI_FLOAT, ffi::RSMPI_SUM, c.0));
    });
    Ok(())
}

/// ncclAllGather, in place when `send` is block rank of `recv`.
///
/// # Safety
/// `send` holds `n_send` elements of `dtype`, `recv` size x `n_send`, in host memory.
pub unsafe fn all_gather(group: &MpiGroup, send: DevPtr, recv: DevPtr, dtype: Dtype, n_send: usize, stream: u64) -> Result<()> {
    let size = mpi::topology::Communicator::size(group.comm()) as usize;
    collective(group, stream, send, recv, dtype, (n_send, size * n_send), |c, i, o| {
        let n = i.len() as i32;
        check("MPI_Allgather", ffi::MPI_Allgather(i.as_ptr() as *const c_void, n, ffi::RSMPI_FLOAT, o.as_mut_ptr() as *mut c_void, n, ffi::RSMPI_FLOAT, c.0));
    });
    Ok(())
}

/// ncclSend: one tag for every message, so they match in issue order as NCCL's do.
///
/// # Safety
/// `buf` holds `n` elements of `dtype` in host memory.
pub unsafe fn send(group: &MpiGroup, to: usize, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
    check("MPI_Send", ffi::MPI_Send(buf as *const c_void, n as i32, message_type(dtype), to as i32, 0, group.comm().as_raw()));
    Ok(())
}

/// ncclRecv (see `send`).
///
/// # Safety
/// `buf` holds `n` elements of `dtype` in host memory.
pub unsafe fn recv(group: &MpiGroup, from: usize, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
    check("MPI_Recv", ffi::MPI_Recv(buf as *mut c_void, n as i32, message_type(dtype), from as i32, 0, group.comm().as_raw(), ffi::RSMPI_STATUS_IGNORE));
    Ok(())
}
