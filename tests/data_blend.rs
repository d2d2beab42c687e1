//! Blended sampling end to end: data specs open real shards, the blended stream keeps every entry's
//! share at every prefix, is deterministic and layout-free (random access = in-order reading), a
//! one-entry spec reads exactly what `GptSampler` reads, train/valid/test parts read disjoint
//! documents, and the swallow-mix preset parses.

use std::path::{Path, PathBuf};
use std::time::Instant;
use swallow::data::blend::{entry_seed, BlendedSampler, Part, Split, BLOCK};
use swallow::data::indexed::IndexedDataset;
use swallow::data::indexed_writer::IndexedWriter;
use swallow::data::token_dtype::TokenDtype;
use swallow::data::sampler::GptSampler;
use swallow::data::spec::DataSpec;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swallow-blend-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A shard of `docs` documents of 5 tokens each, ids starting at `base` (so each shard's tokens
/// are recognisable).
fn shard(p: &Path, base: u32, docs: u32) {
    let mut w = IndexedWriter::create(p, TokenDtype::U16).unwrap();
    for d in 0..docs {
        let doc: Vec<u32> = (0..5).map(|k| base + d * 5 + k).collect();
        w.add_document(&doc).unwrap();
    }
    w.finish().unwrap();
}

/// The blending rule written out independently: position i takes the entry with the largest
/// w * (i + 1) - count (first one on ties).
fn reference(weights: &[f64], n: usize) -> Vec<(usize, u64)> {
    let mut c = vec![0u64; weights.len()];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut best = 0;
        for d in 1..weights.len() {
            let e = |d: usize| weights[d] * (i + 1) as f64 - c[d] as f64;
            if e(d) > e(best) {
                best = d;
            }
        }
        out.push((best, c[best]));
        c[best] += 1;
    }
    out
}

fn blend_of(dir: &Path, weights: &[f64], seed: u64) -> BlendedSampler {
    let mut spec = String::new();
    for (d, w) in weights.iter().enumerate() {
        let p = dir.join(format!("s{d}"));
        if !p.with_extension("idx").exists() {
            shard(&p, 1000 * d as u32, 40);
        }
        spec += &format!("{w} {} ", p.display());
    }
    BlendedSampler::open(&spec, 8, seed, 10_000).unwrap()
}

#[test]
fn shares_hold_at_every_prefix() {
    let dir = tmpdir("shares");
    let cases: &[(&[f64], f64)] = &[
        (&[9e9, 1e9], 1.0),
        (&[1.0, 1.0], 1.0),
        (&[0.37, 0.21, 0.42], 1.0),
        (&[5.0, 1.0, 1.0], 1.0),
        (&[3.0, 2.0, 1.5, 1.0, 0.5, 0.25, 0.1, 0.01], 2.0),
    ];
    for &(w, tol) in cases {
        let s = blend_of(&dir, w, 3);
        let sum: f64 = w.iter().sum();
        let norm: Vec<f64> = w.iter().map(|x| x / sum).collect();
        assert_eq!(s.weights(), norm.as_slice());
        let n = 3 * BLOCK as usize + 17;
        let mut counts = vec![0u64; w.len()];
        let mut worst = 0f64;
        for i in 0..n {
            let (d, k) = s.source(i as u64);
            assert_eq!(
                k, counts[d],
                "weights {w:?}: sample {i} of entry {d} out of order"
            );
            counts[d] += 1;
            for (c, x) in counts.iter().zip(&norm) {
                worst = worst.max((*c as f64 - x * (i + 1) as f64).abs());
            }
        }
        assert!(
            worst < tol,
            "weights {w:?}: share off by {worst} samples (tolerance {tol})"
        );
        assert_eq!(
            (0..n as u64).map(|i| s.source(i)).collect::<Vec<_>>(),
            reference(&norm, n),
            "weights {w:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_access_equals_in_order_reading_and_is_fast() {
    let dir = tmpdir("access");
    let w = [0.5, 0.3, 0.2];
    let n = 5 * BLOCK as usize;
    let want = reference(&w, n);
    // Backwards, strided and jumping far ahead on fresh samplers: same answers.
    let s = blend_of(&dir, &w, 1);
    for i in (0..n).rev().step_by(7) {
        assert_eq!(s.source(i as u64), want[i], "sample {i}");
    }
    let s = blend_of(&dir, &w, 1);
    let i = n - 3;
    assert_eq!(s.source(i as u64), want[i]);
    assert_eq!(s.source(5), want[5]);
    // Ten million positions: well under a second even unoptimised.
    let s = blend_of(&dir, &w, 1);
    let t = Instant::now();
    let (d, k) = s.source(10_000_000);
    let dt = t.elapsed().as_secs_f64();
    assert!(dt < 2.0, "jumping to sample 1e7 took {dt:.2} s");
    let expect = (w[d] * 10_000_001f64).round() as i64;
    assert!(
        (k as i64 - expect).abs() <= 1,
        "entry {d} sample {k}, about {expect} expected"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn samples_come_from_their_entries_and_are_deterministic() {
    let dir = tmpdir("determinism");
    let w = [2.0, 1.0];
    let a = blend_of(&dir, &w, 11);
    let b = blend_of(&dir, &w, 11);
    let c = blend_of(&dir, &w, 12);
    let mut x = vec![0u32; 9];
    let mut y = vec![0u32; 9];
    let mut differs = false;
    for i in (0..300u64).rev() {
        a.sample(i, &mut x).unwrap();
        b.sample(i, &mut y).unwrap();
        assert_eq!(x, y, "sample {i}");
        let (d, k) = a.source(i);
        // Entry d's tokens are 1000*d + ..., and the sample is that entry's k-th.
        assert!(x.iter().all(|&t| t / 1000 == d as u32), "sample {i}: {x:?}");
        a.samplers()[d].sample(k, &mut y).unwrap();
        assert_eq!(x, y);
        c.sample(i, &mut y).unwrap();
        differs |= x != y;
    }
    assert!(differs, "another seed must give another order");
    // The entries shuffle independently: entry 1 is not entry 0's order shifted.
    assert_eq!(a.samplers()[0].seed(), 11);
    assert_eq!(a.samplers()[1].seed(), entry_seed(11, 1));
    assert_ne!(entry_seed(11, 1), 11);
    // Sequential reading covers entry 0's windows, then entry 1's.
    assert_eq!(a.num_samples(), 2 * 24); // 200 tokens per shard: (200 - 1) / 8
    a.sequential(0, &mut x).unwrap();
    assert_eq!(x, (0..9).collect::<Vec<u32>>());
    a.sequential(24, &mut x).unwrap();
    assert_eq!(x, (1000..1009).collect::<Vec<u32>>());
    assert!(a.sequential(48, &mut x).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_entry_reads_exactly_what_gpt_sampler_reads() {
    let dir = tmpdir("single");
    let (p, q) = (dir.join("p"), dir.join("q"));
    shard(&p, 0, 30);
    shard(&q, 500, 7);
    let spec = format!("{},{}", p.display(), q.display());
    let blend = BlendedSampler::open(&spec, 6, 77, 1000).unwrap();
    let plain = GptSampler::new(
        vec![
            IndexedDataset::open(&p).unwrap(),
            IndexedDataset::open(&q).unwrap(),
        ],
        6,
        77,
        1000,
    )
    .unwrap();
    assert_eq!(blend.num_samples(), plain.num_samples());
    assert_eq!(blend.num_tokens(), plain.num_tokens());
    let (mut x, mut y) = (vec![0u32; 7], vec![0u32; 7]);
    for i in 0..3 * plain.num_samples() {
        blend.sample(i, &mut x).unwrap();
        plain.sample(i, &mut y).unwrap();
        assert_eq!(x, y, "sample {i}");
    }
    for j in 0..plain.num_samples() {
        blend.sequential(j, &mut x).unwrap();
        plain.sequential(j, &mut y).unwrap();
        assert_eq!(x, y, "window {j}");
    }
    // A weighted spec with one entry is the same stream too.
    let weighted = BlendedSampler::open(&format!("42 {spec}"), 6, 77, 1000).unwrap();
    weighted.sample(5, &mut x).unwrap();
    plain.sample(5, &mut y).unwrap();
    assert_eq!(x, y);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_entries_are_named() {
    let dir = tmpdir("bad");
    let p = dir.join("ok");
    shard(&p, 0, 3);
    let missing = dir.join("missing");
    let e = BlendedSampler::open(
        &format!("1 {} 1 {}", p.display(), missing.display()),
        4,
        0,
        100,
    )
    .err()
    .unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("missing.idx: no such file"), "{e}");
    let e = BlendedSampler::open(&format!("1 {} x y", p.display()), 4, 0, 100)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("found \"x\""));
    // An entry too small for one sample is named by its index and weight.
    let small = dir.join("small");
    let mut w = IndexedWriter::create(&small, TokenDtype::U16).unwrap();
    w.add_document(&[1, 2]).unwrap();
    w.finish().unwrap();
    let e = BlendedSampler::open(
        &format!("1 {} 3 {}", p.display(), small.display()),
        4,
        0,
        100,
    )
    .err()
    .unwrap();
    let e = format!("{e:#}");
    assert!(
        e.contains("blend entry 1 (weight 3)") && e.contains("has 2 tokens"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn swallow_mix_preset_parses_with_nine_to_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/configs/swallow-mix.toml");
    let spec = DataSpec::parse(path.to_str().unwrap()).unwrap();
    assert_eq!(spec.entries.len(), 4);
    let w = spec.normalized_weights();
    let ja = w[0] + w[1];
    assert!(
        (ja / (w[2] + w[3]) - 9.0).abs() < 0.5,
        "ja:en = {ja}:{}",
        1.0 - ja
    );
    for e in &spec.entries {
        assert!(
            e.prefixes[0].starts_with("/path/to/swallow-shards"),
            "{e:?}"
        );
    }
    // Its canonical command-line form parses back to the same spec.
    assert_eq!(DataSpec::parse(&spec.to_string()).unwrap(), spec);
}

#[test]
fn split_parts_read_disjoint_documents() {
    let dir = tmpdir("split");
    // 100 documents of 5 tokens: document d holds 5d..5d+5 (entry 0) / 1000+5d.. (entry 1).
    shard(&dir.join("a"), 0, 100);
    shard(&dir.join("b"), 1000, 100);
    let spec = DataSpec::parse(&format!(
        "1 {} 1 {}",
        dir.join("a").display(),
        dir.join("b").display()
    ))
    .unwrap();
    let split = Split::parse("80,10,10").unwrap();
    let mut x = vec![0u32; 5];
    let mut total = 0;
    for (part, docs) in Part::ALL.into_iter().zip([0..80u32, 80..90, 90..100]) {
        let s = BlendedSampler::new_part(&spec, &split, part, 4, 5, 10_000).unwrap();
        total += s.num_tokens();
        for i in 0..3 * s.num_samples() {
            s.sample(i, &mut x).unwrap();
            for &t in &x {
                assert!(
                    docs.contains(&(t % 1000 / 5)),
                    "{part}: token {t} of sample {i} is outside documents {docs:?}"
                );
            }
        }
    }
    assert_eq!(total, 2 * 500);
    // An empty part is an error naming the part, not a silent empty stream.
    let e = BlendedSampler::new_part(
        &spec,
        &Split::parse("1").unwrap(),
        Part::Valid,
        4,
        5,
        10_000,
    )
    .err()
    .unwrap();
    let e = format!("{e:#}");
    assert!(
        e.contains("valid part") && e.contains("has 0 tokens"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
