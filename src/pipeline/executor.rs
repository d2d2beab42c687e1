//! Runs one rank's pipeline action list for one optimizer step: forwards and backwards of its
//! model chunks on micro-batches, and the activations and gradients that cross stages as blocking
//! point-to-point messages over the pipeline group (the lists are placed for blocking sends, see
//! schedule.rs), between the device buffers when the group has a device communicator (CUDA-aware
//! MPI, or NCCL whose stream-ordered sends the same placement keeps deadlock-free), else through
//! host memory. Each (micro-batch, chunk) gets an activation slot of the model from the first
//! action of the list that names it (its receive or forward) until the last (its gradient sent,
//! or its backward — its W pass when split — run, whichever comes later); the number of slots
//! per chunk is the most the list ever holds at once.

use super::schedule::{schedule, Action, ScheduleKind};
use crate::backend::Backend;
use crate::parallel::Collectives;
use crate::model::Llama;
use anyhow::Result;
use std::collections::HashMap;

/// What the optimizer learns from the pipeline as a step runs (the DP exchange's overlap, and
/// ZeRO-2's streaming of each micro-batch's gradients).
pub trait ParamEvents<B: Backend> {
    /// A chunk's first forward of the step is about to read the weights of `params`.
    fn weights_needed(&mut self, params: &[usize]) {
        let _ = params;
    }
    /// A backward (any micro-batch) has added its part to the gradients of `params` in `grads`
    /// (the model's, all parameters): called before `grads_complete` of the same parameters.
    fn grads_computed(&mut self, params: &[usize], grads: &mut [B::Buf]) {
        let _ = (params, grads);
    }
    /// A chunk's last backward of the step has completed the gradients of `params`.
    fn grads_complete(&mut self, params: &[usize]) {
        let _ = params;
    }
}

/// No one listening.
impl<B: Backend> ParamEvents<B> for () {}

pub struct Executor {
    actions: Vec<Action>,
    pp: usize,
    stage: usize,
    vpp: usize,
    /// Free slot indices of the model, per chunk.
    free: Vec<Vec<usize>>,
    /// Slot of each (micro-batch, chunk) in flight.
    slot_of: HashMap<(usize, usize), usize>,
    /// Per chunk: the index in `actions` of its first forward (its weights first read) and of
    /// its last backward or W pass (its gradients complete after it).
    first_forward: Vec<usize>,
    last_backward: Vec<usize>,
    /// Per action: the (micro-batch, chunk) whose slot is free after it (its last action).
    releases: Vec<Option<(usize, usize)>>,
    host: Vec<f32>,
}

/// The (micro-batch, chunk) an action works on.
fn subject(a: &Action) -> (usize, usize) {
    match *a {
        Action::Forward { microbatch, chunk }
        | Action::Backward { microbatch, chunk }
        | Action::BackwardInput { microbatch, chunk }
        | Action::BackwardWeight { microbatch, chunk }
        | Action::SendActivation { microbatch, chunk, .. }
        | Action::RecvActivation { microbatch, chunk, .. }
        | Action::SendGrad { microbatch, chunk, .. }
        | Action::RecvGrad { microbatch, chunk, .. } => (microbatch, chunk),
    }
}

impl Executor {
    pub fn new(kind: ScheduleKind, pp: usize, vpp: usize, stage: usize, microbatches: usize) -> Result<Self> {
        let actions = schedule(kind, pp, vpp, microbatches, stage)?;
        let (mut first_forward, mut last_backward) = (vec![usize::MAX; vpp], vec![usize::MAX; vpp]);
        for (i, a) in actions.iter().enumerate().rev() {
            if let Action::Forward { chunk, .. } = *a {
                first_forward[chunk] = i;
            }
        }
        // A split backward's gradients are complete after its W pass, which follows its B.
        let completes = |a: &Action| match *a {
            Action::Backward { chunk, .. } | Action::BackwardWeight { chunk, .. } => Some(chunk),
            _ => None,
        };
        for (i, a) in actions.iter().enumerate() {
            if let Some(chunk) = completes(a) {
                last_backward[chunk] = i;
            }
        }
        let mut releases = vec![None; actions.len()];
        let mut seen = std::collections::HashSet::new();
        for (i, a) in actions.iter().enumerate().rev() {
            if seen.insert(subject(a)) {
                releases[i] = Some(subject(a));
            }
        }
        Ok(Executor {
            actions,
            first_forward,
            last_backward,
            releases,
            pp,
            stage,
            vpp,
            free: vec![Vec::new(); vpp],
            slot_of: HashMap::new(),
            host: Vec::new(),
        })
    }

    /// Send actions (activations and gradients) in one step of this rank's list.
    pub fn sends(&self) -> usize {
        self.actions.iter().filter(|a| matches!(a, Action::SendActivation { .. } | Action::SendGrad { .. })).count()
    }

    /// Activation slots each chunk needs: the most (micro-batch, chunk) pairs it holds at once.
    pub fn slots_per_chunk(&self) -> Vec<usize> {
        let mut live = std::collections::HashSet::new();
        let mut now = vec![0usize; self.vpp];
        let mut peak = vec![0usize; self.vpp];
        for (a, release) in self.actions.iter().zip(&self.releases) {
            let (mb, c) = subject(a);
            if live.insert((mb, c)) {
                now[c] += 1;
                peak[c] = peak[c].max(now[c]);
            }
            if release.is_some() {
                live.remove(&(mb, c));
                now[c] -= 1;
            }
        }
        peak
    }

    fn slot(&mut self, mb: usize, chunk: usize) -> usize {
        let free = &mut self.free[chunk];
        *self.slot_of.entry((mb, chunk)).or_insert_with(|| free.pop().expect("slots sized from the schedule"))
    }

    fn release(&mut self, mb: usize, chunk: usize) {
        if let Some(s) = self.slot_of.remove(&(mb, chunk)) {
            self.free[chunk].push(s);
        }
    }

    fn tag(&self, a: &Action) -> i32 {
        let m = a.message(self.stage, self.pp).expect("a send or receive");
        ((m.microbatch * self.pp * self.vpp + m.boundary) * 2 + m.grad as usize) as i32 % 32768
    }

    /// Sends buffer `buf` of the model to pipeline rank `to`: from where it lies when the backend
    /// and the group can (`--comm mpi|nccl` on a CUDA device), else staged through host memory.
    fn send<B: Backend>(&mut self, be: &B, pp: &dyn Collectives, to: usize, tag: i32, buf: &B::Buf) {
        if be.send_on_device(buf, pp, to, tag) {
            return;
        }
        self.host.resize(be.len(buf), 0.0);
        be.download_into(buf, &mut self.host);
        pp.send_f32(to, tag, &self.host);
    }

    /// Receives from pipeline rank `from` into buffer `buf` of the model (as `send`).
    fn recv<B: Backend>(&mut self, be: &B, pp: &dyn Collectives, from: usize, tag: i32, buf: &mut B::Buf) {
        if be.recv_on_device(buf, pp, from, tag) {
            return;
        }
        self.host.resize(be.len(buf), 0.0);
        pp.recv_f32(from, tag, &mut self.host);
        be.upload(&self.host, buf);
    }

    /// One step over `batch` (the rank's micro-batches, each `micro_batch` rows of `seq + 1`
    /// tokens); returns the summed token loss computed on this rank (non-zero on the last stage).
    /// Each chunk's first forward tells `events` which weights it is about to read, each backward
    /// (each W pass when split: its B pass reports nothing) which gradients it has added to, and
    /// its last backward (or W pass) which it has completed, as it goes (`Llama::forward_slot`,
    /// `Llama::backward_slot`, `Llama::backward_weight_slot`).
    pub fn run<B: Backend>(&mut self, model: &mut Llama<B>, batch: &[u32], grad_scale: f32, pp: &dyn Collectives, events: &mut dyn ParamEvents<B>) -> f64 {
        if self.free.iter().all(Vec::is_empty) {
            // First step: the model's slots become this executor's free lists.
            for (s, c) in model.slot_chunks().into_iter().enumerate() {
                self.free[c].push(s);
            }
        }
        let rows = model.micro_batch * (model.seq + 1);
        let be = model.backend.clone();
        let mut loss = 0.0;
        for i in 0..self.actions.len() {
            let a = self.actions[i];
            match a {
                Action::Forward { microbatch, chunk } => {
                    let s = self.slot(microbatch, chunk);
                    let ch = &model.chunks[chunk];
                    if ch.embed || ch.head {
                        model.load_slot(s, &batch[microbatch * rows..(microbatch + 1) * rows]);
                    }
                    let mut needed = |params: &[usize]| events.weights_needed(params);
                    loss += model.forward_slot(s, grad_scale, (i == self.first_forward[chunk]).then_some(&mut needed));
                }
                Action::Backward { microbatch, chunk } | Action::BackwardWeight { microbatch, chunk } => {
                    let s = self.slot(microbatch, chunk);
                    let last = i == self.last_backward[chunk];
                    let mut computed = |params: &[usize], grads: &mut [B::Buf]| {
                        events.grads_computed(params, grads);
                        if last {
                            events.grads_complete(params);
                        }
                    };
                    match a {
                        Action::Backward { .. } => model.backward_slot(s, Some(&mut computed)),
                        _ => model.backward_weight_slot(s, Some(&mut computed)),
                    }
                }
                Action::BackwardInput { microbatch, chunk } => {
                    let s = self.slot(microbatch, chunk);
                    model.backward_input_slot(s);
                }
                Action::SendActivation { to_stage, microbatch, chunk } => {
                    let s = self.slot(microbatch, chunk);
                    self.send(&*be, pp, to_stage, self.tag(&a), model.slot_output(s));
                }
                Action::RecvActivation { from_stage, microbatch, chunk } => {
                    let s = self.slot(microbatch, chunk);
                    self.recv(&*be, pp, from_stage, self.tag(&a), model.slot_input_mut(s));
                }
                Action::SendGrad { to_stage, microbatch, chunk } => {
                    let s = self.slot(microbatch, chunk);
                    self.send(&*be, pp, to_stage, self.tag(&a), model.slot_grad(s));
                }
                Action::RecvGrad { from_stage, microbatch, chunk } => {
                    let s = self.slot(microbatch, chunk);
                    self.recv(&*be, pp, from_stage, self.tag(&a), model.slot_grad_mut(s));
                }
            }
            if let Some((mb, chunk)) = self.releases[i] {
                self.release(mb, chunk);
            }
        }
        debug_assert!(self.slot_of.is_empty(), "every slot is released by the end of the step");
        loss
    }
}
