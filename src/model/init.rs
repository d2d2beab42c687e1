//! Layout-independent initialisation: every initial weight is a pure function of
//! (seed, parameter name, global element index), drawn from a counter-based RNG (Philox4x32-10).
//! Whatever slice of a tensor a rank owns (TP shard, PP stage, ZeRO partition), it computes the
//! same values the single-rank run computes there, so every layout starts from the same model.

use super::params::{InitKind, ParamSpec};

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds (Salmon et al., SC'11): maps (key, counter) to 128 random bits.
pub fn philox4x32(key: [u32; 2], counter: [u32; 4]) -> [u32; 4] {
    let [mut k0, mut k1] = key;
    let mut c = counter;
    for _ in 0..10 {
        let p0 = (PHILOX_M0 as u64) * (c[0] as u64);
        let p1 = (PHILOX_M1 as u64) * (c[2] as u64);
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k0,
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k1,
            p0 as u32,
        ];
        k0 = k0.wrapping_add(PHILOX_W0);
        k1 = k1.wrapping_add(PHILOX_W1);
    }
    c
}

/// The Philox key of one parameter: FNV-1a of its name mixed with the seed (splitmix64 finaliser).
pub fn param_key(seed: u64, name: &str) -> [u32; 2] {
    let mut z = crate::mix::fnv1a(name.as_bytes()) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    [z as u32, (z >> 32) as u32]
}

/// A standard normal sample for element `index` under `key` (Box–Muller on two 53-bit uniforms).
pub fn normal_at(key: [u32; 2], index: u64) -> f64 {
    let r = philox4x32(key, [index as u32, (index >> 32) as u32, 0, 0]);
    let u53 = |hi: u32, lo: u32| (((hi as u64) << 21) ^ (lo as u64 >> 11)) as f64 / (1u64 << 53) as f64;
    let u1 = 1.0 - u53(r[0], r[1]); // (0, 1]
    let u2 = u53(r[2], r[3]); // [0, 1)
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Initial values of elements `range` (flat, row-major global indices) of parameter `spec`.
pub fn init_values(spec: &ParamSpec, seed: u64, std: f64, range: std::ops::Range<u64>) -> Vec<f32> {
    match spec.init {
        InitKind::Ones => vec![1.0; (range.end - range.start) as usize],
        InitKind::Normal => {
            use rayon::prelude::*;
            let key = param_key(seed, &spec.name);
            range.into_par_iter().map(|i| (std * normal_at(key, i)) as f32).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::ShardKind;

    #[test]
    fn philox_matches_the_random123_known_answer() {
        // Known-answer vectors of Random123's kat_vectors for philox4x32_10.
        assert_eq!(philox4x32([0, 0], [0, 0, 0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(
            philox4x32([0xffffffff, 0xffffffff], [0xffffffff; 4]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32([0xa4093822, 0x299f31d0], [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn a_slice_equals_the_same_slice_of_the_whole() {
        let spec = ParamSpec {
            name: "model.layers.0.mlp.up_proj.weight".into(),
            shape: vec![64, 32],
            shard: ShardKind::Column,
            init: InitKind::Normal,
            weight_decay: true,
        };
        let whole = init_values(&spec, 7, 0.02, 0..2048);
        let part = init_values(&spec, 7, 0.02, 1000..1500);
        assert_eq!(&whole[1000..1500], &part[..]);
        let other_seed = init_values(&spec, 8, 0.02, 0..2048);
        assert_ne!(whole, other_seed);
    }

    #[test]
    fn normals_have_the_right_moments() {
        let key = param_key(1, "x");
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|i| normal_at(key, i)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    }
}
