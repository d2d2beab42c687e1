//! The driver of `swallow corpus`: every rank refines its share of the inputs (input i goes to rank
//! i mod N), then the ranks remove duplicates together and each writes the parts of its inputs.
//!
//! 1. Per input, large units to small: WARC records -> host block list -> charset -> Japanese
//!    pre-check -> nesting guard -> main text -> language -> NG words, quality and repetition rules -> cleaning ->
//!    dedup keys. The survivors and their keys go to DIR/.work/in-NNNNN.jsonl.zst and the input's
//!    report to DIR/.work/in-NNNNN.done.json, written last: the input's done marker.
//! 2. Duplicates over all ranks (dedup.rs): exact keys first, then exact and band keys together;
//!    a document is dropped when an earlier one (input order, then record order) shares a key.
//! 3. Per input, DIR/part-NNNNN.jsonl.zst: the input's documents that are no duplicates, one JSON
//!    line each (`text`, `url`, `date`, `warc_record_id`), written under a temporary name and
//!    renamed. Part n holds input n's documents, so the parts in name order are the same for any
//!    rank and thread count.
//!
//! A killed run restarts where it stopped: finished inputs are not read again and existing parts
//! are not rewritten (never a document twice). Rank 0 holds DIR's lock for the run (dirlock.rs:
//! a second run at the same time is refused); DIR/.work/run.json holds the inputs and the config
//! of the run, and a different one is refused. Rank 0 writes DIR/report.json (report.rs).

use super::config::CorpusConfig;
use super::dedup::{duplicates, DocKeys};
use super::extract::{looks_japanese, main_text};
use super::filters::Filters;
use super::minhash::{band_keys, exact_key};
use super::nesting::{nesting_depth, MAX_NESTING};
use super::report::Report;
use super::warc::WarcReader;
use super::{charset, clean, lang};
use crate::atomic_file;
use crate::dirlock::DirLock;
use crate::parallel::agree::agree;
use crate::progress::ProgressMeter;
use anyhow::{bail, Context, Result};
use mpi::collective::CommunicatorCollectives;
use mpi::topology::{Communicator, SimpleCommunicator};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

pub struct CorpusOptions {
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    pub config: Option<PathBuf>,
    /// Threads per rank (0: all cores).
    pub workers: usize,
}

/// A document after stage 1, with its dedup keys.
#[derive(Serialize, Deserialize)]
struct WorkDoc {
    text: String,
    url: String,
    date: String,
    warc_record_id: String,
    exact: u64,
    bands: Vec<u64>,
}

/// A line of a part.
#[derive(Serialize)]
struct OutDoc<'a> {
    text: &'a str,
    url: &'a str,
    date: &'a str,
    warc_record_id: &'a str,
}

/// What a run directory was made with.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RunIdentity {
    inputs: Vec<String>,
    config: String,
}

fn work_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(".work").join(format!("in-{i:05}.jsonl.zst"))
}

fn done_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(".work").join(format!("in-{i:05}.done.json"))
}

fn part_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("part-{i:05}.jsonl.zst"))
}

/// A zstd stream into `w` (one frame, one thread: the same bytes every time).
fn zstd_lines(w: &mut dyn Write, level: i32, lines: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let mut z = zstd::Encoder::new(w, level)?;
    lines(&mut z)?;
    z.finish()?;
    Ok(())
}

/// Calls `each` with every document of a work file, in order, streaming.
fn read_work(path: &Path, mut each: impl FnMut(usize, WorkDoc) -> Result<()>) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let r = BufReader::new(zstd::Decoder::new(f)?);
    for (n, line) in r.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let doc = serde_json::from_str(&line).with_context(|| format!("{}:{}: damaged work file (delete its done marker to redo the input)", path.display(), n + 1))?;
        each(n, doc)?;
    }
    Ok(())
}

/// The global order of document `k` of input `i`.
fn order(i: usize, k: usize) -> u64 {
    ((i as u64) << 32) | k as u64
}

/// The stages of one record's text, each timed; `Err((stage, rule))` when the document is removed.
struct Refinery<'a> {
    cfg: &'a CorpusConfig,
    filters: &'a Filters,
}

impl Refinery<'_> {
    /// Refines input `path` into its work file and returns its report.
    fn input(&self, path: &Path, work: &Path, meter: Option<&Mutex<ProgressMeter>>) -> Result<Report> {
        let mut report = Report { inputs: 1, ..Report::default() };
        let mut kept: Vec<WorkDoc> = Vec::new();
        let mut clock = Instant::now();
        let mut lap = |report: &mut Report, stage: &str| {
            let now = Instant::now();
            report.time(stage, (now - clock).as_secs_f64());
            clock = now;
        };
        for item in WarcReader::open(path, &self.cfg.warc)? {
            report.records_read += 1;
            let rec = match item {
                Ok(r) => r,
                Err(s) => {
                    report.skip(s.reason, s.bytes);
                    lap(&mut report, "warc");
                    continue;
                }
            };
            lap(&mut report, "warc");
            let bytes = rec.payload.len() as u64;
            if let Err(rule) = self.filters.check_url(&rec.target_uri) {
                report.remove("host", rule, 0, bytes);
                continue;
            }
            let html = match charset::decode(&rec.payload, rec.content_type.as_deref()) {
                Ok((html, _)) => html,
                Err(reason) => {
                    report.skip(reason, bytes);
                    lap(&mut report, "charset");
                    continue;
                }
            };
            lap(&mut report, "charset");
            if !looks_japanese(&html) {
                report.remove("precheck", "not_japanese_html", 0, bytes);
                lap(&mut report, "precheck");
                continue;
            }
            lap(&mut report, "precheck");
            if nesting_depth(&html) > MAX_NESTING {
                report.remove("extract", "nesting_too_deep", 0, bytes);
                lap(&mut report, "extract");
                continue;
            }
            let text = main_text(&html).text;
            lap(&mut report, "extract");
            let chars = text.chars().count() as u64;
            if lang::japanese_score(&text) < self.cfg.lang.threshold {
                report.remove("lang", "not_japanese", chars, bytes);
                lap(&mut report, "lang");
                continue;
            }
            lap(&mut report, "lang");
            if let Err(rule) = self.filters.check_text(&text) {
                report.remove("filters", rule, chars, bytes);
                lap(&mut report, "filters");
                continue;
            }
            lap(&mut report, "filters");
            let text = clean::clean(&text, &self.cfg.clean);
            lap(&mut report, "clean");
            let (exact, bands) = (exact_key(&text), band_keys(&text, &self.cfg.dedup));
            lap(&mut report, "minhash");
            kept.push(WorkDoc { text, url: rec.target_uri, date: rec.date, warc_record_id: rec.record_id, exact, bands });
        }
        if let (Some(m), Ok(meta)) = (meter, std::fs::metadata(path)) {
            m.lock().expect("progress lock").advance(meta.len());
        }
        let level = self.cfg.output.zstd_level;
        atomic_file::write_with(work, |w| {
            zstd_lines(w, level, |z| {
                for d in &kept {
                    serde_json::to_writer(&mut *z, d)?;
                    z.write_all(b"\n")?;
                }
                Ok(())
            })
        })?;
        Ok(report)
    }
}

/// Checks the inputs and the run directory; rank 0 locks the directory for the run (one writer)
/// and records the run's identity there.
fn open_run(o: &CorpusOptions, cfg_text: &str, inputs: &[PathBuf], rank: i32) -> Result<Option<DirLock>> {
    for p in inputs {
        let meta = std::fs::metadata(p).with_context(|| format!("input {} cannot be read", p.display()))?;
        if !meta.is_file() {
            bail!("input {} is not a regular file", p.display());
        }
    }
    if rank != 0 {
        return Ok(None);
    }
    let lock = crate::dirlock::lock(&o.output, "--output")?;
    std::fs::create_dir_all(o.output.join(".work")).with_context(|| format!("creating {}", o.output.join(".work").display()))?;
    let identity = RunIdentity { inputs: inputs.iter().map(|p| p.display().to_string()).collect(), config: cfg_text.to_string() };
    let marker = o.output.join(".work").join("run.json");
    match std::fs::read(&marker) {
        Ok(bytes) => {
            let before: RunIdentity = serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", marker.display()))?;
            if before != identity {
                bail!(
                    "--output {} holds a run with other inputs or another config ({}): use a new directory",
                    o.output.display(),
                    marker.display()
                );
            }
        }
        Err(_) => atomic_file::write_with(&marker, |w| Ok(serde_json::to_writer_pretty(w, &identity)?))?,
    }
    Ok(Some(lock))
}

/// Test hook: with `SWALLOW_TEST_CORPUS_PAUSE_S=S` in the environment, a rank prints its pid and
/// sleeps S seconds after each input it finishes, so that tests/corpus.rs can kill a run in
/// the middle. Unset, it does nothing.
fn pause_after_an_input_for_tests(rank: i32) {
    if let Some(s) = std::env::var("SWALLOW_TEST_CORPUS_PAUSE_S").ok().and_then(|v| v.parse::<f64>().ok()) {
        println!("test hook: rank {rank} (pid {}) pausing after an input for {s} s", std::process::id());
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_secs_f64(s));
    }
}

/// `swallow corpus`: returns the whole run's report on rank 0.
pub fn run(o: &CorpusOptions, world: &SimpleCommunicator) -> Result<Option<Report>> {
    let (rank, size) = (world.rank(), world.size() as usize);
    let setup = (|| {
        let inputs = crate::data::prep_input::expand_inputs(&o.inputs)?;
        if inputs.is_empty() {
            bail!("no input files given");
        }
        let cfg_text = match &o.config {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read the corpus config {}", p.display()))?,
            None => String::new(),
        };
        let cfg = CorpusConfig::parse(&cfg_text, &o.config.as_ref().map(|p| p.display().to_string()).unwrap_or("the default corpus config".into()))?;
        cfg.dedup.validate()?;
        let filters = Filters::new(&cfg.filters)?;
        Ok((inputs, cfg_text, cfg, filters))
    })();
    let (inputs, cfg_text, cfg, filters) = agree(world, setup)?;
    let _lock = agree(world, open_run(o, &cfg_text, &inputs, rank))?;
    world.barrier();
    let mine: Vec<usize> = (0..inputs.len()).filter(|i| i % size == rank as usize).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(o.workers).build().context("starting corpus threads")?;

    // 1. Refine each input not done yet.
    let todo_bytes: u64 = mine.iter().filter(|&&i| !done_file(&o.output, i).exists()).map(|&i| std::fs::metadata(&inputs[i]).map(|m| m.len()).unwrap_or(0)).sum();
    let meter = Mutex::new(ProgressMeter::new("corpus", todo_bytes.max(1), rank == 0));
    let refinery = Refinery { cfg: &cfg, filters: &filters };
    let stage1: Result<Vec<Report>> = pool.install(|| {
        mine.par_iter()
            .map(|&i| {
                let done = done_file(&o.output, i);
                if let Ok(bytes) = std::fs::read(&done) {
                    return serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged (delete it to redo the input)", done.display()));
                }
                let report = refinery.input(&inputs[i], &work_file(&o.output, i), Some(&meter))?;
                atomic_file::write_with(&done, |w| Ok(serde_json::to_writer(w, &report)?))?;
                pause_after_an_input_for_tests(rank);
                Ok(report)
            })
            .collect()
    });
    drop(meter);
    let stage1 = agree(world, stage1)?;

    // 2. Duplicates, over every rank's keys (the texts stay on disk).
    let t = Instant::now();
    let mut keys: Vec<DocKeys> = Vec::new();
    let read = mine.iter().try_for_each(|&i| {
        read_work(&work_file(&o.output, i), |k, d| {
            keys.push(DocKeys { order: order(i, k), exact: d.exact, bands: d.bands });
            Ok(())
        })
    });
    agree(world, read)?;
    let exact_only: Vec<DocKeys> = keys.iter().map(|d| DocKeys { order: d.order, exact: d.exact, bands: Vec::new() }).collect();
    let exact_dups = duplicates(world, &exact_only)?;
    drop(exact_only);
    let all_dups = duplicates(world, &keys)?;
    drop(keys);
    let mut report = Report::default();
    for r in &stage1 {
        report.merge(r);
    }
    report.time("dedup", t.elapsed().as_secs_f64());

    // 3. The parts.
    let t = Instant::now();
    let written = mine.iter().try_for_each(|&i| {
        let part = part_file(&o.output, i);
        // An existing part is complete (it was renamed into place): count, do not rewrite.
        let exists = part.exists();
        let mut write = |w: &mut dyn Write| -> Result<()> {
            read_work(&work_file(&o.output, i), |k, d| {
                let chars = d.text.chars().count() as u64;
                let rule = match order(i, k) {
                    n if exact_dups.contains(&n) => "exact_duplicate",
                    n if all_dups.contains(&n) => "near_duplicate",
                    _ => {
                        report.documents_kept += 1;
                        report.characters_kept += chars;
                        serde_json::to_writer(&mut *w, &OutDoc { text: &d.text, url: &d.url, date: &d.date, warc_record_id: &d.warc_record_id })?;
                        return Ok(w.write_all(b"\n")?);
                    }
                };
                report.remove("dedup", rule, chars, 0);
                Ok(())
            })
        };
        match exists {
            true => write(&mut std::io::sink()),
            false => atomic_file::write_with(&part, |w| zstd_lines(w, cfg.output.zstd_level, |z| write(z))),
        }
    });
    agree(world, written)?;
    report.time("write", t.elapsed().as_secs_f64());
    let total = report.gather(world);
    if let Some(r) = &total {
        atomic_file::write_with(&o.output.join("report.json"), |w| Ok(serde_json::to_writer_pretty(w, r)?))?;
    }
    Ok(total)
}

