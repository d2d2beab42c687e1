//! One parameter's part of this rank's ZeRO-1 block (a `Segment`): where it sits in the block and
//! in the parameter's shard, its weight-decay and norm-counting settings, and its fp32 master,
//! gradient, weight copy and moments (AdamW's or LAMB's). Held by the sharded optimizer (zero.rs) and updated in
//! place by the device exchange (zero_device.rs).

use crate::backend::Backend;

/// The part of one parameter that falls into this rank's ZeRO block.
pub(super) struct Segment<B: Backend> {
    /// Element offset inside this rank's block.
    pub(super) block_offset: usize,
    /// The parameter, and the segment's first element in this rank's shard of it.
    pub(super) param: usize,
    pub(super) local_start: usize,
    pub(super) len: usize,
    pub(super) decay: bool,
    /// Counted in the gradient norm (one copy of a shard held by several ranks is).
    pub(super) counted: bool,
    pub(super) master: B::Buf,
    /// The reduced gradient: a view into the gradient buffer on the device path.
    pub(super) grad: B::Buf,
    /// This rank's part of the weight copies on the device path: a view into the bf16 buffer the
    /// all-gather fills.
    pub(super) copy: Option<B::Buf>,
    pub(super) m: B::Buf,
    pub(super) v: B::Buf,
}
