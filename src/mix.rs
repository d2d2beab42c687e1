//! The one 64-bit mixer of the project: splitmix64's finaliser, a bijection of u64 that spreads
//! every input bit over the output. The samplers' permutations, the blends' document keys and the
//! checkpoints' per-tensor checksums are built on it.

/// splitmix64 finalizer: a strong 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
