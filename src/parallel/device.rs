//! Collectives on device memory, for the CUDA backend: the `DeviceComm` trait (sum all-reduce,
//! sum reduce-scatter and all-gather between distinct device buffers, and the pipeline's
//! point-to-point send and receive, in the order of the device's work), `CommKind` (`--comm`: how
//! a run's TP, DP and PP groups reach device memory). The implementations: CUDA-aware MPI on
//! `MpiGroup` (cuda_aware_mpi.rs), NCCL (nccl.rs). Without a device communicator the model stages
//! collectives and messages through host memory (`Collectives`' host-slice methods).

use crate::backend::cuda::launch::{DevPtr, Dtype};
use anyhow::{bail, Result};

/// How the TP, DP and PP groups of a CUDA run move device buffers (`--comm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommKind {
    /// Through host memory: download, MPI on host slices, upload (every device; the CPU's only).
    Host,
    /// CUDA-aware MPI on device addresses (the MPI library must be built with CUDA support).
    Mpi,
    /// NCCL communicators, their unique ids broadcast over MPI.
    Nccl,
    /// NCCL's calls emulated over MPI on the emulated device (CI's check of the NCCL path).
    NcclEmulated,
}

impl CommKind {
    pub fn name(self) -> &'static str {
        match self {
            CommKind::Host => "host",
            CommKind::Mpi => "CUDA-aware MPI",
            CommKind::Nccl => "NCCL",
            CommKind::NcclEmulated => "NCCL emulated over MPI",
        }
    }

    /// `--comm auto|host|mpi|nccl|nccl-emulated` for a run on `device` (`cpu`, `cuda`,
    /// `cuda-emulated`): auto is NCCL on a GPU, else host; NCCL needs a GPU, mpi a CUDA device or
    /// its emulation, nccl-emulated the emulation.
    pub fn choose(requested: &str, device: &str) -> Result<CommKind> {
        Ok(match (requested, device) {
            ("auto", "cuda") => CommKind::Nccl,
            ("auto", _) | ("host", _) => CommKind::Host,
            ("mpi", "cuda" | "cuda-emulated") => CommKind::Mpi,
            ("nccl", "cuda") => CommKind::Nccl,
            ("nccl-emulated", "cuda-emulated") => CommKind::NcclEmulated,
            ("nccl-emulated", _) => bail!("--comm nccl-emulated emulates NCCL for the emulated device: it needs --device cuda-emulated"),
            ("mpi" | "nccl", _) => bail!("--comm {requested} moves device buffers: it needs --device cuda{}", if requested == "mpi" { " (or cuda-emulated)" } else { "" }),
            (other, _) => bail!("--comm {other:?}: expected auto, host, mpi, nccl or nccl-emulated"),
        })
    }
}

/// Collectives between device buffers of one group, issued to device stream `stream` when
/// `stream_ordered` (0: the default stream, where the backend's launches go; else the runtime's
/// side stream), else run when called. `send` and `recv` are distinct device
/// addresses of `dtype` elements, unless `in_place()` (then also the in-place forms: `send ==
/// recv` for the all-reduce, `recv` block rank of `send` for the reduce-scatter, `send` block
/// rank of `recv` for the all-gather); work already issued to the device that writes `send` is
/// complete or ordered before the collective, and work issued after it sees `recv`.
pub trait DeviceComm {
    /// Whether the collectives sum `dtype` (all-gathers and messages take every dtype: they do
    /// not sum).
    fn supports(&self, dtype: Dtype) -> bool;
    /// Whether the collectives take their in-place forms (NCCL does; MPI would need MPI_IN_PLACE,
    /// which rsmpi does not export, so the backend stages through scratch instead).
    fn in_place(&self) -> bool;
    /// Whether the collectives are ordered with the device's work (NCCL: enqueued on its stream),
    /// or read device memory when called (CUDA-aware MPI: the caller synchronises first).
    fn stream_ordered(&self) -> bool;
    /// `recv[..n]` = the sum over the group of every rank's `send[..n]`.
    ///
    /// # Safety
    /// Both addresses are live device memory of `n` elements.
    unsafe fn all_reduce_sum(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n: usize, stream: u64) -> Result<()>;
    /// `send` holds `size` blocks of `n_recv`; block r of the sum lands in rank r's `recv`.
    ///
    /// # Safety
    /// `send` holds `size * n_recv` elements, `recv` `n_recv`.
    unsafe fn reduce_scatter_sum(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n_recv: usize, stream: u64) -> Result<()>;
    /// Rank r's `send[..n_send]` becomes block r of every rank's `recv`.
    ///
    /// # Safety
    /// `send` holds `n_send` elements, `recv` `size * n_send`.
    unsafe fn all_gather(&self, send: DevPtr, recv: DevPtr, dtype: Dtype, n_send: usize, stream: u64) -> Result<()>;
    /// Point-to-point send of `buf[..n]` to group rank `to` (pipeline activations and gradients),
    /// which receives it with `recv(this rank, tag, ..)`. To the caller it behaves as the host
    /// `send_f32`: later work may overwrite `buf`. Messages between two ranks match in the order
    /// they are issued: CUDA-aware MPI by tag, blocking on the host until the receiver has the
    /// data or MPI has buffered it; NCCL ignores the tag and matches in issue order, returning on
    /// the host at once while the device's stream waits for the peer's matching call. Both sides
    /// must therefore issue their messages in one global order (the pipeline's lists do, see
    /// pipeline/schedule.rs), else the streams deadlock.
    ///
    /// # Safety
    /// `buf` is live device memory of `n` elements.
    unsafe fn send(&self, to: usize, tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()>;
    /// Point-to-point receive of exactly `n` elements from group rank `from` into `buf`; work
    /// issued after it sees them (see `send` for the ordering).
    ///
    /// # Safety
    /// `buf` is live device memory of `n` elements.
    unsafe fn recv(&self, from: usize, tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::comm::Collectives;
    use crate::backend::cuda::backend::CudaBackend;
    use crate::backend::cuda::emulated::EmulatedRuntime;
    use crate::backend::{Backend, Role};
    use crate::parallel::{CommStats, LocalGroup};
    use std::cell::RefCell;
    use std::sync::Arc;

    /// A message as sent: (peer, tag, dtype, bytes).
    type Sent = (usize, i32, Dtype, Vec<u8>);

    /// A group of two whose device messages go to a wire this test reads: the emulated device's
    /// addresses are host addresses. Sums bf16 like NCCL, or fp32 only like CUDA-aware MPI.
    struct Wire {
        takes_bf16: bool,
        sent: RefCell<Vec<Sent>>,
    }

    impl Collectives for Wire {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn all_reduce_sum_f32(&self, _: &mut [f32]) {
            unreachable!("host path")
        }
        fn all_reduce_sum_f64(&self, _: &mut [f64]) {
            unreachable!("host path")
        }
        fn reduce_scatter_sum_f32(&self, _: &[f32], _: &mut [f32]) {
            unreachable!("host path")
        }
        fn all_gather_f32(&self, _: &[f32], _: &mut [f32]) {
            unreachable!("host path")
        }
        fn split(&self, _: usize, _: usize) -> Box<dyn Collectives> {
            unreachable!("host path")
        }
        fn send_f32(&self, _: usize, _: i32, _: &[f32]) {
            unreachable!("host path")
        }
        fn recv_f32(&self, _: usize, _: i32, _: &mut [f32]) {
            unreachable!("host path")
        }
        fn stats(&self) -> CommStats {
            CommStats::default()
        }
        fn device(&self) -> Option<&dyn DeviceComm> {
            Some(self)
        }
    }

    impl DeviceComm for Wire {
        fn supports(&self, dtype: Dtype) -> bool {
            self.takes_bf16 || dtype == Dtype::F32
        }
        fn in_place(&self) -> bool {
            false
        }
        fn stream_ordered(&self) -> bool {
            self.takes_bf16
        }
        unsafe fn all_reduce_sum(&self, _: DevPtr, _: DevPtr, _: Dtype, _: usize, _: u64) -> Result<()> {
            unreachable!("messages only")
        }
        unsafe fn reduce_scatter_sum(&self, _: DevPtr, _: DevPtr, _: Dtype, _: usize, _: u64) -> Result<()> {
            unreachable!("messages only")
        }
        unsafe fn all_gather(&self, _: DevPtr, _: DevPtr, _: Dtype, _: usize, _: u64) -> Result<()> {
            unreachable!("messages only")
        }
        unsafe fn send(&self, to: usize, tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
            let bytes = std::slice::from_raw_parts(buf as *const u8, n * dtype.bytes()).to_vec();
            self.sent.borrow_mut().push((to, tag, dtype, bytes));
            Ok(())
        }
        /// Delivers the last message sent (this test's peer echoes it back).
        unsafe fn recv(&self, _from: usize, _tag: i32, buf: DevPtr, dtype: Dtype, n: usize) -> Result<()> {
            let sent = self.sent.borrow();
            let (_, _, t, bytes) = sent.last().expect("a message to receive");
            assert_eq!((*t, bytes.len()), (dtype, n * dtype.bytes()), "received as sent");
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, bytes.len());
            Ok(())
        }
    }

    /// An activation (bf16 on the device) goes to the communicator as its bf16 bits, also where
    /// its collectives sum fp32 only (a message is not summed), and comes back unchanged; without
    /// a device communicator the backend leaves the message to the caller.
    #[test]
    fn pipeline_messages_leave_from_and_land_in_device_buffers_as_bf16() {
        let be = CudaBackend::new(Arc::new(EmulatedRuntime::new())).unwrap();
        let values = [1.0f32, -2.5, 0.15625, 30720.0, -7.0];
        let mut act = be.zeros_as(values.len(), Role::Activation);
        be.upload(&values, &mut act);
        for takes_bf16 in [false, true] {
            let wire = Wire { takes_bf16, sent: RefCell::new(Vec::new()) };
            assert!(be.send_on_device(&act, &wire, 1, 7));
            let (to, tag, dtype, bytes) = wire.sent.borrow()[0].clone();
            assert_eq!((to, tag, dtype, bytes.len()), (1, 7, Dtype::Bf16, 2 * values.len()));
            let on_wire: Vec<f32> = bytes.chunks(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
            assert_eq!(on_wire, values, "sums bf16: {takes_bf16}");
            let mut back = be.zeros_as(values.len(), Role::Activation);
            assert!(be.recv_on_device(&mut back, &wire, 1, 7));
            assert_eq!(be.download(&back), values, "sums bf16: {takes_bf16}");
        }
        assert!(!be.send_on_device(&act, &LocalGroup, 1, 7));
        assert!(!be.recv_on_device(&mut act, &LocalGroup, 1, 7));
    }

    #[test]
    fn comm_choice_follows_the_device() {
        assert_eq!(CommKind::choose("auto", "cuda").unwrap(), CommKind::Nccl);
        assert_eq!(CommKind::choose("auto", "cuda-emulated").unwrap(), CommKind::Host);
        assert_eq!(CommKind::choose("auto", "cpu").unwrap(), CommKind::Host);
        assert_eq!(CommKind::choose("mpi", "cuda-emulated").unwrap(), CommKind::Mpi);
        assert_eq!(CommKind::choose("nccl", "cuda").unwrap(), CommKind::Nccl);
        let e = CommKind::choose("nccl", "cuda-emulated").unwrap_err().to_string();
        assert_eq!(e, "--comm nccl moves device buffers: it needs --device cuda");
        let e = CommKind::choose("mpi", "cpu").unwrap_err().to_string();
        assert_eq!(e, "--comm mpi moves device buffers: it needs --device cuda (or cuda-emulated)");
        assert_eq!(CommKind::choose("nccl-emulated", "cuda-emulated").unwrap(), CommKind::NcclEmulated);
        let e = CommKind::choose("nccl-emulated", "cuda").unwrap_err().to_string();
        assert_eq!(e, "--comm nccl-emulated emulates NCCL for the emulated device: it needs --device cuda-emulated");
        assert!(CommKind::choose("gloo", "cuda").unwrap_err().to_string().contains("expected auto, host, mpi, nccl or nccl-emulated"));
    }
}
