//! The project's hashes: `mix64`, splitmix64's finaliser, a bijection of u64 that spreads every
//! input bit over the output (the samplers' permutations, the blends' document keys, the
//! checkpoints' per-tensor checksums, the corpus' MinHash permutations and band keys); `fnv1a`, a
//! hash of bytes (parameter names for the init's keys, file identities for the token-id cache).

/// splitmix64 finalizer: a strong 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a (64-bit) of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}
