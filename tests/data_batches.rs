//! Layout independence of the data path under real mpirun: the rows making global batch s,
//! gathered from all DP ranks (`swallow data batches`, which reads them with the same code as
//! `swallow train`), are identical for DP = 1, 2 and 4, equal the blended stream's samples
//! `(s-1)*G ..` read in-process, and a run resumed at a consumed-sample count continues exactly.

mod common;
use common::{mpirun, repo, sample, tmpdir};
use std::process::Command;
use swallow::data::blend::{BlendedSampler, Part, Split};
use swallow::data::spec::DataSpec;

fn fnv1a64(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in ids.iter().flat_map(|t| t.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
    }
    h
}

fn step_lines(o: &std::process::Output) -> Vec<String> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("step "))
        .map(str::to_string)
        .collect()
}

#[test]
fn global_batches_are_identical_for_dp_1_2_4_and_on_resume() {
    let dir = tmpdir("batches", "dp");
    let all = sample(&dir);
    // A second entry for the blend: the English half alone.
    let en = dir.join("en");
    let o = Command::new(env!("CARGO_BIN_EXE_swallow"))
        .args(["prep", "--append-eod", "--tokenizer"])
        .arg(repo().join("data/sample/tokenizer.json"))
        .arg("--input")
        .arg(repo().join("data/sample/en.jsonl"))
        .arg("--output")
        .arg(&en)
        .output()
        .unwrap();
    assert!(o.status.success());
    let spec = format!("3 {all} 1 {}", en.display());
    let (seq, gb, steps) = (256usize, 8usize, 40u64);
    let args = |start: u64| -> Vec<String> {
        [
            "data", "batches", "--data", &spec, "--split", "90,5,5", "--seq-len", &seq.to_string(),
            "--global-batch", &gb.to_string(), "--steps", &steps.to_string(), "--seed", "7",
            "--vocab-size", "4096", "--start-step", &start.to_string(),
        ]
        .map(String::from)
        .to_vec()
    };
    let a0 = args(0);
    let argv: Vec<&str> = a0.iter().map(String::as_str).collect();
    let single = step_lines(&Command::new(env!("CARGO_BIN_EXE_swallow")).args(&argv).output().unwrap());
    assert_eq!(single.len(), steps as usize);

    // The in-process stream: step s holds samples (s-1)*G .. s*G; the run crosses epochs of both
    // entries, so the per-epoch document shuffles are part of what is compared.
    let sampler = BlendedSampler::new_part(
        &DataSpec::parse(&spec).unwrap(),
        &Split::parse("90,5,5").unwrap(),
        Part::Train,
        seq,
        7,
        4096,
    )
    .unwrap();
    assert!((steps * gb as u64) > 2 * sampler.samplers()[1].num_samples(), "does not cross epochs");
    let mut row = vec![0u32; seq + 1];
    for (s, line) in single.iter().enumerate() {
        let want: Vec<String> = (0..gb as u64)
            .map(|i| {
                sampler.sample(s as u64 * gb as u64 + i, &mut row).unwrap();
                format!("{:016x}", fnv1a64(&row))
            })
            .collect();
        assert_eq!(*line, format!("step {}: {}", s + 1, want.join(" ")));
    }

    for np in [1, 2, 4] {
        assert_eq!(step_lines(&mpirun(np, &argv)), single, "DP {np}");
    }
    // Resumed after 25 steps (200 consumed samples), under DP 2 and DP 4.
    let a25 = args(25);
    let argv25: Vec<&str> = a25.iter().map(String::as_str).collect();
    for np in [2, 4] {
        assert_eq!(step_lines(&mpirun(np, &argv25)), single[25..], "resumed under DP {np}");
    }
    // A global batch the DP size does not divide is refused with the numbers.
    let mut bad = argv.clone();
    let k = bad.iter().position(|a| *a == "--global-batch").unwrap();
    bad[k + 1] = "6";
    let o = mpirun(4, &bad);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("global batch 6 is not a positive multiple of the 4 data-parallel ranks"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
