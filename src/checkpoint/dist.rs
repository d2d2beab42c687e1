//! Distributed checkpoint files: one HDF5 file written and read collectively by all ranks through
//! parallel HDF5 (MPI-IO). The file holds logical tensors (full unsharded shapes, fp32) and
//! root attributes; it knows nothing of models or layouts. Each rank names, per tensor, the flat
//! row-major global element ranges it owns (`Writer::put`) or wants (`read`): that is what makes
//! resharding free, since any layout reads exactly its own ranges of the same logical tensors.
//!
//! Per dataset a rank's ranges become one union of hyperslab blocks (hyperslab.rs) and
//! one collective `H5Dwrite`/`H5Dread` (each rank then moves its own blocks). Collective calls must
//! match on every rank, so every rank passes the same tensors (names, shapes, order), even those
//! of which it owns nothing, and the same attributes.

use super::hyperslab::{selection_blocks, Block};
use super::integrity;
use super::pagecache::{Hints, READ_AHEAD_BYTES};
use crate::parallel::agree::agree;
use crate::progress::ProgressMeter;
use anyhow::{bail, ensure, Context, Result};
use hdf5_metno as h5;
use hdf5_metno::types::VarLenUnicode;
use hdf5_metno_sys::{h5d, h5p, h5s, h5t};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{AsRaw, CommunicatorCollectives};
use mpi::Count;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;

/// The dataset attribute holding a tensor's checksum (integrity.rs).
pub const CHECKSUM: &str = "checksum";

/// This rank's part of one logical tensor to write: (global flat range, its values) pairs.
pub struct TensorPiece<'a> {
    /// Dataset path in the file (`a/b/c` creates the groups `a` and `a/b`).
    pub name: String,
    pub shape: Vec<u64>,
    pub pieces: Vec<(Range<u64>, &'a [f32])>,
}

/// This rank's wish to read parts of one logical tensor into its buffers.
pub struct TensorRequest<'a> {
    pub name: String,
    /// Expected shape; a different one in the file is an error naming both.
    pub shape: Vec<u64>,
    pub pieces: Vec<(Range<u64>, &'a mut [f32])>,
}

/// A root attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    U64(u64),
    Str(String),
}

/// An HDF5 id closed on drop.
struct Id(i64, unsafe extern "C" fn(i64) -> i32);

impl Drop for Id {
    fn drop(&mut self) {
        unsafe { (self.1)(self.0) };
    }
}

fn h5id(id: i64, what: &str, close: unsafe extern "C" fn(i64) -> i32) -> Result<Id> {
    ensure!(id >= 0, "HDF5: {what} failed");
    Ok(Id(id, close))
}

/// `what` failed unless `rc >= 0`; the error carries HDF5's own account (its error stack's outer
/// and innermost frames, where the operating system's reason, "No space left on device", shows).
fn h5ok(rc: i32, what: &str) -> Result<()> {
    if rc >= 0 {
        return Ok(());
    }
    match h5::Error::query() {
        Ok(stack) => bail!("HDF5: {what} failed: {stack}"),
        Err(_) => bail!("HDF5: {what} failed"),
    }
}

/// The operating system's reason a write to `path` failed, where it is a full file system
/// (HDF5's error stack ends at "file write failed", without errno): "No space left on device"
/// when the file system holding `path` has less free than `needed` bytes or 1 MiB.
fn full_disk(path: &Path, needed: u64) -> Option<String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let free = free_bytes(dir)? as u64;
    (free < needed.max(1 << 20)).then(|| {
        format!("No space left on device (ENOSPC): the file system holding {} has {free} bytes free", dir.display())
    })
}

/// Bytes available to this user on the file system holding `dir` (statvfs), where it tells.
pub fn free_bytes(dir: &Path) -> Option<f64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64)
}

/// `result` of a write of `bytes` to `path`, with the full file system named where that is why.
fn or_full_disk<T>(result: Result<T>, path: &Path, bytes: u64) -> Result<T> {
    result.map_err(|e| match full_disk(path, bytes) {
        Some(reason) => e.context(reason),
        None => e,
    })
}

/// A file dataspace of `ds` selecting `blocks`, a memory dataspace of their element count, and a
/// collective transfer property list.
fn selection(ds: &h5::Dataset, blocks: &[Block]) -> Result<(Id, Id, Id, u64)> {
    unsafe {
        let file = h5id(h5d::H5Dget_space(ds.id()), "H5Dget_space", h5s::H5Sclose)?;
        if blocks.is_empty() {
            h5ok(h5s::H5Sselect_none(file.0), "H5Sselect_none")?;
        }
        for (i, b) in blocks.iter().enumerate() {
            let op = if i == 0 { h5s::H5S_seloper_t::H5S_SELECT_SET } else { h5s::H5S_seloper_t::H5S_SELECT_OR };
            h5ok(
                h5s::H5Sselect_hyperslab(file.0, op, b.start.as_ptr(), std::ptr::null(), b.count.as_ptr(), std::ptr::null()),
                "H5Sselect_hyperslab",
            )?;
        }
        let n: u64 = blocks.iter().map(|b| b.count.iter().product::<u64>()).sum();
        let dims = [n.max(1)];
        let mem = h5id(h5s::H5Screate_simple(1, dims.as_ptr(), std::ptr::null()), "H5Screate_simple", h5s::H5Sclose)?;
        if n == 0 {
            h5ok(h5s::H5Sselect_none(mem.0), "H5Sselect_none")?;
        }
        let xfer = h5id(h5p::H5Pcreate(*h5p::H5P_CLS_DATASET_XFER), "H5Pcreate(dataset transfer)", h5p::H5Pclose)?;
        h5ok(h5p::H5Pset_dxpl_mpio(xfer.0, h5p::H5FD_mpio_xfer_t::H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio")?;
        // A collective call whose ranks then write their own (few, large) blocks directly: on
        // the 2-core test machines two-phase aggregation was 3-4x slower (docs/CHECKPOINT.md).
        let individual = h5p::H5FD_mpio_collective_opt_t::H5FD_MPIO_INDIVIDUAL_IO;
        h5ok(h5p::H5Pset_dxpl_mpio_collective_opt(xfer.0, individual), "H5Pset_dxpl_mpio_collective_opt")?;
        Ok((file, mem, xfer, n))
    }
}

fn open_parallel(path: &Path, comm: &SimpleCommunicator, create: bool) -> Result<h5::File> {
    let raw = comm.as_raw();
    let mut b = h5::File::with_options();
    b.with_fapl(|p| p.mpio(raw, None));
    let f = if create { b.create(path) } else { b.open(path) };
    f.with_context(|| {
        if create {
            format!("checkpoint {}: cannot create the file", path.display())
        } else {
            format!("checkpoint {}: cannot open it as an HDF5 file (missing, truncated or corrupt?)", path.display())
        }
    })
}

/// A checkpoint file being written collectively, one tensor at a time (the writers stream the
/// state through one host buffer); every rank makes the same calls in the same order. Each call
/// ends on every rank together (dist::agree): a rank whose write fails (a full disk) makes every
/// rank return its error, where it would otherwise leave the others waiting in the next
/// collective forever. A writer dropped unfinished closes the file on every rank and removes it.
pub struct Writer<'p> {
    file: Option<h5::File>,
    path: &'p Path,
    comm: &'p SimpleCommunicator,
    groups: HashSet<String>,
    hints: Hints,
    /// Each tensor's checksum over this rank's pieces (integrity.rs), summed over ranks at finish.
    checksums: Vec<(String, u64)>,
}

impl<'p> Writer<'p> {
    /// Collectively creates the file at `path` (replaced if present).
    pub fn create(path: &'p Path, comm: &'p SimpleCommunicator) -> Result<Self> {
        let file = agree(comm, open_parallel(path, comm, true))?;
        Ok(Writer { file: Some(file), path, comm, groups: HashSet::new(), hints: Hints::open(path), checksums: Vec::new() })
    }

    /// Collectively creates the dataset of `t` and writes this rank's pieces of it; refused on
    /// every rank, before any HDF5 call, when some rank's pieces hold a non-finite value.
    pub fn put(&mut self, t: &TensorPiece) -> Result<()> {
        let scanned = t.pieces.iter().try_fold(0u64, |sum, (r, data)| match integrity::first_non_finite(data, r.start) {
            Some((i, x)) => bail!(
                "writing checkpoint {}: tensor {} holds a non-finite value ({x} at element {i}), so it is not saved (the previous checkpoints stay)",
                self.path.display(), t.name
            ),
            None => Ok(sum.wrapping_add(integrity::checksum(data, r.start))),
        });
        let sum = agree(self.comm, scanned)?;
        self.checksums.push((t.name.clone(), sum));
        let local = self.put_local(t);
        agree(self.comm, local)
    }

    fn file(&self) -> &h5::File {
        self.file.as_ref().expect("the file is open until finish")
    }

    fn put_local(&mut self, t: &TensorPiece) -> Result<()> {
        let path = self.path;
        let ctx = || format!("writing checkpoint {}", path.display());
        let mut prefix = String::new();
        for seg in t.name.split('/').collect::<Vec<_>>().split_last().map(|(_, g)| g).unwrap_or(&[]) {
            prefix = if prefix.is_empty() { seg.to_string() } else { format!("{prefix}/{seg}") };
            if self.groups.insert(prefix.clone()) {
                self.file().create_group(&prefix).with_context(|| format!("group {prefix}")).with_context(ctx)?;
            }
        }
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let ds = self
            .file()
            .new_dataset::<f32>()
            .shape(shape)
            .fill_time(h5::dataset::FillTime::Never)
            .create(t.name.as_str())
            .with_context(|| format!("dataset {}", t.name))
            .with_context(ctx)?;
        let mut order: Vec<usize> = (0..t.pieces.len()).collect();
        order.sort_by_key(|&i| t.pieces[i].0.start);
        let ranges: Vec<Range<u64>> = order.iter().map(|&i| t.pieces[i].0.clone()).collect();
        let blocks = selection_blocks(&t.name, &t.shape, &ranges).with_context(ctx)?;
        for (r, data) in &t.pieces {
            ensure!(data.len() as u64 == r.end - r.start, "tensor {}: range {r:?} given {} values", t.name, data.len());
        }
        // One piece is written from where it lies; several are gathered in file order first.
        let gathered: Vec<f32>;
        let data: &[f32] = match t.pieces.as_slice() {
            [(_, one)] => one,
            _ => {
                gathered = order.iter().flat_map(|&i| t.pieces[i].1.iter().copied()).collect();
                &gathered
            }
        };
        let (fs, ms, xfer, _) = selection(&ds, &blocks).with_context(ctx)?;
        let rc = unsafe { h5d::H5Dwrite(ds.id(), *h5t::H5T_NATIVE_FLOAT, ms.0, fs.0, xfer.0, data.as_ptr().cast()) };
        or_full_disk(h5ok(rc, &format!("H5Dwrite of {}", t.name)), path, 4 * data.len() as u64).with_context(ctx)?;
        if let Some(bytes) = byte_span(&ds, &ranges) {
            self.hints.write_back(bytes);
        }
        Ok(())
    }

    /// Collectively writes each tensor's checksum (a `checksum` attribute of its dataset) and
    /// the root attributes, and closes the file.
    pub fn finish(mut self, attrs: &[(&str, AttrValue)]) -> Result<()> {
        let ctx = format!("writing checkpoint {}", self.path.display());
        let mine: Vec<u64> = self.checksums.iter().map(|c| c.1).collect();
        let mut sums = vec![0u64; mine.len()];
        self.comm.all_reduce_into(&mine[..], &mut sums[..], SystemOperation::sum());
        let checksummed = self.checksums.iter().zip(&sums).try_for_each(|((name, _), sum)| -> Result<()> {
            let ds = self.file().dataset(name)?;
            ds.new_attr::<u64>().create(CHECKSUM)?.write_scalar(sum)?;
            Ok(())
        });
        agree(self.comm, or_full_disk(checksummed, self.path, 0).with_context(|| ctx.clone()))?;
        let written = attrs.iter().try_for_each(|(name, v)| -> Result<()> {
            match v {
                AttrValue::U64(x) => self.file().new_attr::<u64>().create(*name).and_then(|a| a.write_scalar(x)),
                AttrValue::Str(s) => {
                    let s: VarLenUnicode = s.parse().map_err(|e| anyhow::anyhow!("attribute {name}: {e}"))?;
                    self.file().new_attr::<VarLenUnicode>().create(*name).and_then(|a| a.write_scalar(&s))
                }
            }
            .with_context(|| format!("attribute {name}"))
        });
        agree(self.comm, or_full_disk(written, self.path, 0).with_context(|| ctx.clone()))?;
        // The close flushes HDF5's metadata: on a full disk this is where rank 0 fails.
        let file = self.file.take().expect("the file is open until finish");
        let closed = or_full_disk(file.close().context("closing it"), self.path, 0).with_context(|| ctx);
        let closed = agree(self.comm, closed);
        if closed.is_err() {
            self.remove_file();
        }
        closed
    }

    /// Rank 0 removes the unfinished file (the ranks agreed that it failed).
    fn remove_file(&self) {
        if self.comm.rank() == 0 {
            if let Err(e) = std::fs::remove_file(self.path) {
                log::warn!("cannot remove the unfinished checkpoint {}: {e}", self.path.display());
            }
        }
    }
}

impl Drop for Writer<'_> {
    /// Unfinished (a call failed on some rank, and every rank returned): close on every rank, then
    /// remove the file, which no reader must take for a checkpoint.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // The close flushes HDF5's metadata; on a full disk it would fail and leave the file
            // open in HDF5, which then crashes in MPI_Finalize. So the data goes first: rank 0
            // empties the file (its size comes back as holes), then every rank closes it.
            self.comm.barrier();
            if self.comm.rank() == 0 {
                let _ = std::fs::OpenOptions::new().write(true).open(self.path).and_then(|f| f.set_len(0));
            }
            self.comm.barrier();
            drop(file);
            self.comm.barrier();
            self.remove_file();
        }
    }
}

/// Bytes of one stored tensor of `shape` (fp32, as every dataset is stored).
pub fn tensor_bytes(shape: &[u64]) -> u64 {
    4 * shape.iter().product::<u64>()
}

/// Collectively reads the requested ranges from the file at `path` and returns its root
/// attributes. Every rank passes the same tensors in the same order. Every value read must be
/// finite, and every tensor that the ranks read whole together must match its checksum
/// (integrity.rs; files written before checksums were stored are not verified): otherwise every
/// rank returns the same error naming the tensor. `meter` advances by each tensor's stored bytes.
pub fn read(
    path: &Path,
    comm: &SimpleCommunicator,
    requests: &mut [TensorRequest],
    mut meter: Option<&mut ProgressMeter>,
) -> Result<BTreeMap<String, AttrValue>> {
    let file = agree(comm, open_parallel(path, comm, false))?;
    let ctx = || format!("reading checkpoint {}", path.display());
    let attrs = read_attrs(&file).with_context(ctx)?;
    for t in requests.iter_mut() {
        t.pieces.sort_by_key(|p| p.0.start);
    }
    let (counted, whole) = count_once(comm, requests);
    // A read-ahead window of this rank's byte spans, READ_AHEAD_BYTES beyond the current tensor.
    let hints = Hints::open(path);
    let spans: Vec<Option<Range<u64>>> = requests
        .iter()
        .map(|t| {
            let ranges: Vec<Range<u64>> = t.pieces.iter().map(|p| p.0.clone()).collect();
            file.dataset(&t.name).ok().and_then(|ds| byte_span(&ds, &ranges))
        })
        .collect();
    let (mut advised, mut ahead) = (0, 0u64);
    let mut sums = vec![0u64; requests.len()];
    let mut stored: Vec<Option<u64>> = vec![None; requests.len()];
    let mut non_finite: Option<String> = None;
    for (i, t) in requests.iter_mut().enumerate() {
        while advised < spans.len() && (advised <= i || ahead < READ_AHEAD_BYTES) {
            if let Some(s) = &spans[advised] {
                hints.will_need(s.clone());
                ahead += s.end - s.start;
            }
            advised += 1;
        }
        if let Some(s) = &spans[i] {
            ahead = ahead.saturating_sub(s.end - s.start);
        }
        let ds = file.dataset(&t.name).map_err(|_| anyhow::anyhow!("checkpoint {} has no tensor {}", path.display(), t.name))?;
        let shape: Vec<u64> = ds.shape().iter().map(|&d| d as u64).collect();
        ensure!(shape == t.shape, "checkpoint {}: tensor {} has shape {shape:?}, expected {:?}", path.display(), t.name, t.shape);
        let ranges: Vec<Range<u64>> = t.pieces.iter().map(|p| p.0.clone()).collect();
        let blocks = selection_blocks(&t.name, &t.shape, &ranges).with_context(ctx)?;
        for (r, dst) in t.pieces.iter() {
            ensure!(dst.len() as u64 == r.end - r.start, "tensor {}: range {r:?} given a buffer of {}", t.name, dst.len());
        }
        let (fs, ms, xfer, n) = selection(&ds, &blocks).with_context(ctx)?;
        // One piece is read in place; several through a buffer in file order.
        let mut staged = match t.pieces.len() {
            1 => Vec::new(),
            _ => vec![0f32; n as usize],
        };
        let dst: *mut f32 = match t.pieces.as_mut_slice() {
            [(_, one)] => one.as_mut_ptr(),
            _ => staged.as_mut_ptr(),
        };
        let rc = unsafe { h5d::H5Dread(ds.id(), *h5t::H5T_NATIVE_FLOAT, ms.0, fs.0, xfer.0, dst.cast()) };
        agree(comm, h5ok(rc, &format!("H5Dread of {}", t.name)).with_context(ctx))?;
        if t.pieces.len() > 1 {
            let mut at = 0;
            for (_, dst) in t.pieces.iter_mut() {
                let len = dst.len();
                dst.copy_from_slice(&staged[at..at + len]);
                at += len;
            }
        }
        stored[i] = ds.attr(CHECKSUM).and_then(|a| a.read_scalar::<u64>()).ok();
        if let Some(m) = meter.as_deref_mut() {
            m.advance(tensor_bytes(&t.shape));
        }
        for (r, values) in t.pieces.iter() {
            if let (None, Some((e, x))) = (&non_finite, integrity::first_non_finite(values, r.start)) {
                non_finite = Some(format!("tensor {} holds a non-finite value ({x} at element {e})", t.name));
            }
            for c in counted[i].iter().filter(|c| c.start < r.end && r.start < c.end) {
                let (a, b) = (c.start.max(r.start), c.end.min(r.end));
                sums[i] = sums[i].wrapping_add(integrity::checksum(&values[(a - r.start) as usize..(b - r.start) as usize], a));
            }
        }
    }
    file.close().with_context(ctx)?;
    let mut total = vec![0u64; sums.len()];
    comm.all_reduce_into(&sums[..], &mut total[..], SystemOperation::sum());
    let corrupt = requests
        .iter()
        .enumerate()
        .find(|&(i, _)| whole[i] && stored[i].is_some_and(|s| s != total[i]))
        .map(|(_, t)| format!("tensor {} does not match its checksum: the file is corrupt (a flipped bit, a damaged disk); load an older checkpoint", t.name));
    let verdict = match non_finite.or(corrupt) {
        Some(what) => Err(anyhow::anyhow!("checkpoint {}: {what}", path.display())),
        None => Ok(attrs),
    };
    agree(comm, verdict)
}

/// For each request, the parts of this rank's (sorted) ranges that it alone counts in the
/// tensor's checksum (no lower rank reads them), and whether the ranks together read the whole
/// tensor (only then can its checksum be verified). One exchange of every rank's ranges.
fn count_once(comm: &SimpleCommunicator, requests: &[TensorRequest]) -> (Vec<Vec<Range<u64>>>, Vec<bool>) {
    let mine: Vec<u64> = requests
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.pieces.iter().flat_map(move |p| [i as u64, p.0.start, p.0.end]))
        .collect();
    let mut counts = vec![0 as Count; comm.size() as usize];
    comm.all_gather_into(&(mine.len() as Count), &mut counts[..]);
    let displs: Vec<Count> = counts.iter().scan(0, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
    let mut all = vec![0u64; counts.iter().map(|&c| c as usize).sum()];
    comm.all_gather_varcount_into(&mine[..], &mut PartitionMut::new(&mut all[..], &counts[..], &displs[..]));
    let (mut lower, mut every) = (vec![Vec::new(); requests.len()], vec![Vec::new(); requests.len()]);
    for (rank, (&d, &c)) in displs.iter().zip(&counts).enumerate() {
        for triple in all[d as usize..(d + c) as usize].chunks(3) {
            let (i, r) = (triple[0] as usize, triple[1]..triple[2]);
            if rank < comm.rank() as usize {
                lower[i].push(r.clone());
            }
            every[i].push(r);
        }
    }
    let counted = requests
        .iter()
        .zip(&lower)
        .map(|(t, lower)| integrity::counted_here(&t.pieces.iter().map(|p| p.0.clone()).collect::<Vec<_>>(), lower))
        .collect();
    let whole = requests.iter().zip(&every).map(|(t, ranges)| integrity::union_len(ranges) == t.shape.iter().product::<u64>()).collect();
    (counted, whole)
}

/// The bytes of the file from the first to the last element of `ranges` of the (contiguous) f32
/// dataset `ds`, or None when it has no address yet or `ranges` is empty.
fn byte_span(ds: &h5::Dataset, ranges: &[Range<u64>]) -> Option<Range<u64>> {
    let first = ranges.iter().map(|r| r.start).min()?;
    let last = ranges.iter().map(|r| r.end).max()?;
    let base = unsafe { h5d::H5Dget_offset(ds.id()) };
    (base != u64::MAX && last > first).then(|| base + 4 * first..base + 4 * last)
}

fn read_attrs(file: &h5::File) -> Result<BTreeMap<String, AttrValue>> {
    let mut out = BTreeMap::new();
    for name in file.attr_names()? {
        let a = file.attr(&name)?;
        let v = if a.dtype()?.is::<u64>() {
            AttrValue::U64(a.read_scalar::<u64>()?)
        } else {
            AttrValue::Str(a.read_scalar::<VarLenUnicode>()?.to_string())
        };
        out.insert(name, v);
    }
    Ok(out)
}

/// Opens the file on this rank alone and returns its root attributes.
pub fn read_root_attributes(path: &Path) -> Result<BTreeMap<String, AttrValue>> {
    let file = h5::File::open(path)
        .with_context(|| format!("checkpoint {}: cannot open it as an HDF5 file (missing, truncated or corrupt?)", path.display()))?;
    read_attrs(&file).with_context(|| format!("checkpoint {}: unreadable", path.display()))
}

/// Opens the file on this rank alone and returns its attributes and every dataset's path and
/// shape: the check that a checkpoint is complete and readable.
pub fn inspect(path: &Path) -> Result<(BTreeMap<String, AttrValue>, BTreeMap<String, Vec<u64>>)> {
    let file = h5::File::open(path)
        .with_context(|| format!("checkpoint {}: cannot open it as an HDF5 file (missing, truncated or corrupt?)", path.display()))?;
    let ctx = || format!("checkpoint {}: unreadable", path.display());
    let attrs = read_attrs(&file).with_context(ctx)?;
    let mut shapes = BTreeMap::new();
    let mut stack = vec![file.as_group().with_context(ctx)?];
    while let Some(g) = stack.pop() {
        for ds in g.datasets().with_context(ctx)? {
            shapes.insert(ds.name().trim_start_matches('/').to_string(), ds.shape().iter().map(|&d| d as u64).collect());
        }
        stack.extend(g.groups().with_context(ctx)?);
    }
    file.close().with_context(ctx)?;
    Ok((attrs, shapes))
}
