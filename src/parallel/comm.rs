//! The collectives trait the parallel code talks to (collectives and the pipeline's point-to-point
//! messages), on host f32/f64 slices, and its two
//! implementations: `MpiGroup` (an MPI communicator: the DP, TP or PP group of this rank) and
//! `LocalGroup` (a group of one, where every collective is the identity). A group may also offer
//! collectives on device buffers (`device`: CUDA-aware MPI in device.rs, NCCL in nccl.rs).

use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::datatype::Equivalence;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Color, Communicator, SimpleCommunicator};
use super::device::DeviceComm;
use std::cell::{Cell, RefCell};
use std::time::Instant;

/// What a group has communicated so far from this rank: bytes under the ring model (all-reduce
/// 2(p-1)/p of the buffer, reduce-scatter and all-gather (p-1)/p of the whole, a send its size),
/// calls, and seconds spent inside the calls (waiting included).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommStats {
    pub bytes: f64,
    pub calls: u64,
    pub seconds: f64,
}

impl std::ops::Sub for CommStats {
    type Output = CommStats;
    fn sub(self, o: CommStats) -> CommStats {
        CommStats { bytes: self.bytes - o.bytes, calls: self.calls - o.calls, seconds: self.seconds - o.seconds }
    }
}

pub trait Collectives {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// In place: every rank ends with the element-wise sum.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// `send` holds `size` equal blocks; block r of the sum lands in rank r's `recv`.
    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]);
    /// Rank r's `send` becomes block r of every rank's `recv`.
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]);
    /// A sub-group of the ranks sharing `color`, ordered by `key` (collective over this group).
    fn split(&self, color: usize, key: usize) -> Box<dyn Collectives>;
    /// Blocking point-to-point send to group rank `to` (pipeline activations and gradients).
    fn send_f32(&self, to: usize, tag: i32, buf: &[f32]);
    /// Blocking receive of exactly `buf.len()` values from group rank `from`.
    fn recv_f32(&self, from: usize, tag: i32, buf: &mut [f32]);
    /// Traffic of this rank in this group so far.
    fn stats(&self) -> CommStats;
    /// Collectives on device buffers, when this group has them (`--comm mpi|nccl`).
    fn device(&self) -> Option<&dyn DeviceComm> {
        None
    }
}

/// The groups a rank takes part in: tensor-parallel, data-parallel, pipeline, and the
/// model-parallel group (TP x PP: every rank holding a part of the same model replica).
pub struct ParallelGroups {
    pub tp: Box<dyn Collectives>,
    pub dp: Box<dyn Collectives>,
    pub pp: Box<dyn Collectives>,
    pub mp: Box<dyn Collectives>,
}

impl ParallelGroups {
    /// One rank holding the whole model.
    pub fn single() -> Self {
        ParallelGroups { tp: Box::new(LocalGroup), dp: Box::new(LocalGroup), pp: Box::new(LocalGroup), mp: Box::new(LocalGroup) }
    }
}

/// A group of one rank: collectives are copies.
pub struct LocalGroup;

impl Collectives for LocalGroup {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) {}
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn split(&self, _color: usize, _key: usize) -> Box<dyn Collectives> {
        Box::new(LocalGroup)
    }
    fn send_f32(&self, to: usize, _tag: i32, _buf: &[f32]) {
        unreachable!("a group of one rank has no rank {to} to send to");
    }
    fn recv_f32(&self, from: usize, _tag: i32, _buf: &mut [f32]) {
        unreachable!("a group of one rank has no rank {from} to receive from");
    }
    fn stats(&self) -> CommStats {
        CommStats::default()
    }
}

/// An MPI communicator used as a collectives group.
pub struct MpiGroup {
    comm: SimpleCommunicator,
    stats: Cell<CommStats>,
    /// Send-side copy for in-place reductions (rsmpi has no MPI_IN_PLACE), reused across steps.
    scratch: RefCell<Vec<f32>>,
    /// MPI accepts device addresses (`--comm mpi`): `device` offers the CUDA-aware collectives.
    cuda_aware: bool,
}

impl MpiGroup {
    pub fn new(comm: SimpleCommunicator) -> Self {
        MpiGroup { comm, stats: Cell::new(CommStats::default()), scratch: RefCell::new(Vec::new()), cuda_aware: false }
    }

    /// This group, its collectives also on device addresses through CUDA-aware MPI.
    pub fn cuda_aware(self) -> Self {
        MpiGroup { cuda_aware: true, ..self }
    }

    pub(crate) fn comm(&self) -> &SimpleCommunicator {
        &self.comm
    }

    /// The sub-group of the ranks sharing `color`, ordered by `key` (collective).
    pub fn split_group(&self, color: usize, key: usize) -> MpiGroup {
        let comm = self
            .comm
            .split_by_color_with_key(Color::with_value(color as i32), key as i32)
            .expect("every rank has a colour, so MPI_Comm_split returns a communicator");
        MpiGroup::new(comm)
    }

    pub(crate) fn account(&self, bytes: f64, start: Instant) {
        let s = self.stats.get();
        self.stats.set(CommStats { bytes: s.bytes + bytes, calls: s.calls + 1, seconds: s.seconds + start.elapsed().as_secs_f64() });
    }

    /// Ring-model bytes of an all-reduce of `bytes` over this group.
    pub(crate) fn all_reduce_bytes(&self, bytes: usize) -> f64 {
        let p = self.size() as f64;
        2.0 * (p - 1.0) / p * bytes as f64
    }
}

impl Collectives for MpiGroup {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }
    fn size(&self) -> usize {
        self.comm.size() as usize
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        if self.size() == 1 {
            return;
        }
        let start = Instant::now();
        let mut send = self.scratch.borrow_mut();
        send.clear();
        send.extend_from_slice(buf);
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        self.account(self.all_reduce_bytes(4 * buf.len()), start);
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        if self.size() == 1 {
            return;
        }
        let start = Instant::now();
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        self.account(self.all_reduce_bytes(8 * buf.len()), start);
    }
    fn reduce_scatter_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        assert_eq!(send.len(), recv.len() * self.size(), "reduce-scatter: send is not size x recv");
        let start = Instant::now();
        self.comm.reduce_scatter_block_into(send, recv, SystemOperation::sum());
        self.account(((self.size() - 1) * 4 * recv.len()) as f64, start);
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) {
        assert_eq!(recv.len(), send.len() * self.size(), "all-gather: recv is not size x send");
        let start = Instant::now();
        self.comm.all_gather_into(send, recv);
        self.account(((self.size() - 1) * 4 * send.len()) as f64, start);
    }
    fn split(&self, color: usize, key: usize) -> Box<dyn Collectives> {
        Box::new(self.split_group(color, key))
    }
    fn send_f32(&self, to: usize, tag: i32, buf: &[f32]) {
        let start = Instant::now();
        self.comm.process_at_rank(to as i32).send_with_tag(buf, tag);
        self.account((4 * buf.len()) as f64, start);
    }
    fn recv_f32(&self, from: usize, tag: i32, buf: &mut [f32]) {
        let start = Instant::now();
        let status = self.comm.process_at_rank(from as i32).receive_into_with_tag(buf, tag);
        debug_assert_eq!(status.count(f32::equivalent_datatype()) as usize, buf.len());
        self.account(0.0, start);
    }
    fn stats(&self) -> CommStats {
        self.stats.get()
    }
    fn device(&self) -> Option<&dyn DeviceComm> {
        self.cuda_aware.then_some(self as &dyn DeviceComm)
    }
}
