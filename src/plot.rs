//! `swallow plot METRICS.jsonl [MORE.jsonl ...] --out FILE.png`: the training curves of one or
//! several metrics files as one PNG — loss (with the validation losses and the skipped steps
//! marked), learning rate, and throughput (tokens/s) against the step; several runs share the
//! panels, one colour each, named in a legend by the shortest path suffix that tells them apart.
//! Text is drawn with a bundled font (data/fonts/, through plotters' ab_glyph feature), so nothing
//! depends on the system's fonts.
//!
//! A resumed run appends steps it had already logged before its checkpoint: the last record of
//! each step wins, as in the run that continued.

use anyhow::{bail, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One step record's curves; `None` where the value was not finite (JSON null).
struct Step {
    loss: Option<f64>,
    lr: f64,
    tokens_per_s: f64,
    skipped: bool,
}

/// The curves of a metrics file, by step.
struct Curves {
    steps: BTreeMap<u64, Step>,
    valid: BTreeMap<u64, f64>,
}

const FONT: &str = "sans-serif";
const FONT_BYTES: &[u8] = include_bytes!("../data/fonts/DejaVuSansMono.ttf");
const ORANGE: RGBColor = RGBColor(230, 120, 0);
const DARK_GREEN: RGBColor = RGBColor(0, 140, 60);
/// One colour per run when several are drawn (then cycling).
const RUN_COLOURS: [RGBColor; 6] = [BLUE, ORANGE, DARK_GREEN, MAGENTA, RGBColor(120, 60, 180), RGBColor(0, 150, 170)];

/// The legend names of `paths`: the file names, or as many trailing path components as make them
/// differ (run-a/metrics.jsonl, run-b/metrics.jsonl).
fn run_labels(paths: &[&Path]) -> Vec<String> {
    let parts: Vec<Vec<String>> = paths.iter().map(|p| p.components().rev().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect()).collect();
    let longest = parts.iter().map(Vec::len).max().unwrap_or(1);
    for n in 1..=longest {
        let labels: Vec<String> = parts
            .iter()
            .map(|c| c.iter().take(n).rev().cloned().collect::<Vec<_>>().join("/"))
            .collect();
        let distinct: std::collections::HashSet<&String> = labels.iter().collect();
        if distinct.len() == labels.len() {
            return labels;
        }
    }
    paths.iter().map(|p| p.display().to_string()).collect()
}

fn read_curves(path: &Path) -> Result<Curves> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read metrics file {}", path.display()))?;
    let mut curves = Curves { steps: BTreeMap::new(), valid: BTreeMap::new() };
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not a JSON line", at()))?;
        let num = |key: &str| -> Result<Option<f64>> {
            match v.get(key) {
                Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).with_context(|| format!("{}: {key} = {x} is not a number", at())),
                None => bail!("{}: no {key:?} field (expected a swallow train --metrics record)", at()),
            }
        };
        let step = v.get("step").and_then(|s| s.as_u64()).with_context(|| format!("{}: no integer \"step\" field", at()))?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("valid") {
            if let Some(loss) = num("valid_loss")? {
                curves.valid.insert(step, loss);
            }
            continue;
        }
        let loss = num("loss")?;
        let lr = num("lr")?.unwrap_or(f64::NAN);
        let tokens_per_s = num("tokens_per_s")?.unwrap_or(f64::NAN);
        let skipped = v.get("skipped").and_then(|s| s.as_bool()).unwrap_or(false);
        curves.steps.insert(step, Step { loss, lr, tokens_per_s, skipped });
    }
    if curves.steps.is_empty() {
        bail!("{}: no step records to plot", path.display());
    }
    Ok(curves)
}

/// `lo..hi` widened by 5% on each side (and made non-empty).
fn padded(values: impl Iterator<Item = f64>, from_zero: bool) -> Range<f64> {
    let (mut lo, mut hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 * hi.abs().max(1e-12) };
    (if from_zero { lo } else { lo - pad })..hi + pad
}

/// Compact tick labels on an axis spanning `span`: 3.4M, 12k, 8.5k, 1.0e-4, and otherwise as many
/// decimals as tell ticks about span/8 apart from each other (6.5, 8.322).
fn tick(v: f64, span: f64) -> String {
    let a = v.abs().max(span);
    match a {
        _ if v == 0.0 => "0".into(),
        _ if a >= 1e6 => format!("{:.1}M", v / 1e6),
        _ if a >= 1e4 => format!("{:.0}k", v / 1e3),
        _ if a >= 1e3 => format!("{:.1}k", v / 1e3),
        _ if a < 1e-2 => format!("{v:.1e}"),
        _ => {
            let decimals = (-(span / 8.0).log10()).ceil().clamp(0.0, 4.0) as usize;
            format!("{v:.decimals$}")
        }
    }
}

/// Draws the curves of `paths` into the PNG `out` of `size` pixels (written under a temporary
/// name, then renamed).
pub fn run(paths: &[PathBuf], out: &Path, size: (u32, u32)) -> Result<()> {
    if !(200..=10_000).contains(&size.0) || !(200..=10_000).contains(&size.1) {
        bail!("plot size {}x{}: expected 200 to 10000 pixels each way", size.0, size.1);
    }
    if out.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) != Some("png".into()) {
        bail!("--out {}: expected a .png file name", out.display());
    }
    if paths.is_empty() {
        bail!("swallow plot: name at least one metrics file");
    }
    let runs: Vec<Curves> = paths.iter().map(|p| read_curves(p)).collect::<Result<_>>()?;
    let labels = run_labels(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    // Registering twice (plot called twice in one process) is harmless: the same bytes.
    plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).map_err(|_| anyhow::anyhow!("bundled font is invalid"))?;
    let name = out.file_name().context("--out needs a file name")?.to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    let drawn = draw(&runs, &labels, &tmp, size).with_context(|| format!("drawing {}", out.display()));
    if drawn.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drawn?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    let counts = |c: &Curves| format!("{} steps, {} validation points", c.steps.len(), c.valid.len());
    match runs.as_slice() {
        [one] => println!("plot: {} -> {}", counts(one), out.display()),
        _ => {
            let each: Vec<String> = labels.iter().zip(&runs).map(|(l, c)| format!("{l}: {}", counts(c))).collect();
            println!("plot: {} runs ({}) -> {}", runs.len(), each.join("; "), out.display());
        }
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: axes with labels over `x` (steps) and `y`, text scaled by `scale`.
fn panel<'a, 'b>(area: &'a DrawingArea<BitMapBackend<'b>, Shift>, x: Range<f64>, y: Range<f64>, ydesc: &str, scale: f64) -> Result<Chart<'a, 'b>> {
    let px = |p: f64| (p * scale).round() as u32;
    let span = y.end - y.start;
    // Whole steps only: at most one label per step.
    let x_labels = ((x.end - x.start) as usize + 1).min(10);
    let x_span = x.end - x.start;
    let mut chart = ChartBuilder::on(area)
        .margin(px(12.0))
        .x_label_area_size(px(40.0))
        .y_label_area_size(px(80.0))
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(ydesc)
        .label_style((FONT, px(16.0)))
        .axis_desc_style((FONT, px(17.0)))
        .x_labels(x_labels)
        .x_label_formatter(&|v| if v.fract() == 0.0 { tick(*v, x_span) } else { String::new() })
        .y_label_formatter(&|v| tick(*v, span))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

/// The points of one curve: (step, value) where the value is finite.
fn series(c: &Curves, f: &dyn Fn(&Step) -> Option<f64>) -> Vec<(f64, f64)> {
    c.steps.iter().filter_map(|(&s, r)| f(r).filter(|v| v.is_finite()).map(|v| (s as f64, v))).collect()
}

fn draw(runs: &[Curves], labels: &[String], file: &Path, size: (u32, u32)) -> Result<()> {
    let root = BitMapBackend::new(file, size).into_drawing_area();
    root.fill(&WHITE)?;
    let scale = (size.1 as f64 / 900.0).clamp(0.6, 3.0);
    let px = |p: f64| (p * scale).round() as u32;
    let title = match labels {
        [one] => format!("swallow: {one}"),
        _ => format!("swallow: {} runs", labels.len()),
    };
    let root = root.titled(&title, (FONT, px(22.0)))?;
    let panels = root.split_evenly((3, 1));
    let first = runs.iter().filter_map(|c| c.steps.keys().next()).min().copied().unwrap_or(0);
    let last = runs.iter().filter_map(|c| c.steps.keys().last()).max().copied().unwrap_or(0);
    let x = first as f64..(last as f64).max(first as f64 + 1.0);
    let stroke = px(2.0).max(2);
    let several = runs.len() > 1;
    // One run: a colour per kind of curve; several: a colour per run.
    let colour = |i: usize, own: RGBColor| if several { RUN_COLOURS[i % RUN_COLOURS.len()] } else { own };
    let losses = runs.iter().flat_map(|c| series(c, &|r| r.loss).into_iter().map(|p| p.1).chain(c.valid.values().copied()));
    let mut chart = panel(&panels[0], x.clone(), padded(losses, false), "loss", scale)?;
    for (i, (c, label)) in runs.iter().zip(labels).enumerate() {
        let (line, dots) = (colour(i, BLUE), colour(i, ORANGE));
        let train = series(c, &|r| r.loss.filter(|_| !r.skipped));
        let drawn = chart.draw_series(LineSeries::new(train, line.stroke_width(stroke)))?;
        drawn
            .label(if several { label.clone() } else { "train loss".into() })
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], line.stroke_width(stroke)));
        let valid: Vec<(f64, f64)> = c.valid.iter().map(|(&s, &v)| (s as f64, v)).collect();
        if !valid.is_empty() {
            if !several {
                chart.draw_series(LineSeries::new(valid.clone(), dots.stroke_width(stroke)))?;
            }
            let marks = chart.draw_series(valid.iter().map(|&p| Circle::new(p, px(4.0), dots.filled())))?;
            if !several {
                marks.label("validation loss").legend(move |(x, y)| Circle::new((x + 10, y), 4, dots.filled()));
            }
        }
        let skipped = series(c, &|r| r.loss.filter(|_| r.skipped));
        if !skipped.is_empty() {
            let marks = chart.draw_series(skipped.iter().map(|&p| Cross::new(p, px(5.0), RED.stroke_width(stroke))))?;
            if i == 0 {
                marks.label("skipped step").legend(move |(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(2)));
            }
        }
    }
    if several && runs.iter().any(|c| !c.valid.is_empty()) {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?
            .label("dots: validation loss")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, px(16.0)))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    let lrs: Vec<Vec<(f64, f64)>> = runs.iter().map(|c| series(c, &|r| Some(r.lr))).collect();
    let mut chart = panel(&panels[1], x.clone(), padded(lrs.iter().flatten().map(|p| p.1), true), "learning rate", scale)?;
    for (i, lr) in lrs.into_iter().enumerate() {
        chart.draw_series(LineSeries::new(lr, colour(i, DARK_GREEN).stroke_width(stroke)))?;
    }
    let tps: Vec<Vec<(f64, f64)>> = runs.iter().map(|c| series(c, &|r| Some(r.tokens_per_s))).collect();
    let mut chart = panel(&panels[2], x, padded(tps.iter().flatten().map(|p| p.1), true), "tokens/s", scale)?;
    for (i, t) in tps.into_iter().enumerate() {
        chart.draw_series(LineSeries::new(t, colour(i, MAGENTA).stroke_width(stroke)))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_never_empty() {
        let r = padded([1.0, 3.0, f64::NAN].into_iter(), false);
        assert!((r.start - 0.9).abs() < 1e-12 && (r.end - 3.1).abs() < 1e-12, "{r:?}");
        let r = padded([2.0].into_iter(), true);
        assert_eq!(r, 0.0..2.1);
        assert_eq!(padded(std::iter::empty(), false), -0.05..1.05);
        let ticks = [(0.0, 1.0), (12_345.0, 2e4), (8_500.0, 9e3), (640.0, 100.0), (3.4e6, 4e6), (1e-4, 2e-3), (6.5, 4.0), (8.322, 0.02)];
        assert_eq!(ticks.map(|(v, span)| tick(v, span)), ["0", "12k", "8.5k", "640", "3.4M", "1.0e-4", "6.5", "8.322"]);
    }

    #[test]
    fn runs_are_named_by_the_shortest_suffix_that_tells_them_apart() {
        let names = |p: &[&str]| run_labels(&p.iter().map(Path::new).collect::<Vec<_>>());
        assert_eq!(names(&["/x/a.jsonl", "/y/b.jsonl"]), ["a.jsonl", "b.jsonl"]);
        assert_eq!(names(&["runs/7b/metrics.jsonl", "runs/13b/metrics.jsonl"]), ["7b/metrics.jsonl", "13b/metrics.jsonl"]);
        assert_eq!(names(&["a/m.jsonl"]), ["m.jsonl"]);
    }
}
