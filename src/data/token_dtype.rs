//! The element type of a Megatron shard's token ids (`TokenDtype`): Megatron's dtype codes 1..=8,
//! their sizes, the largest id each holds, the choice for a vocabulary, and the little-endian
//! encoding and decoding of ids.

use std::fmt;

/// Element type of the token ids in `.bin`, with Megatron's dtype codes (1..=8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenDtype {
    U8,
    I8,
    I16,
    I32,
    I64,
    F64,
    F32,
    U16,
}

impl TokenDtype {
    pub const ALL: [TokenDtype; 8] = [
        TokenDtype::U8,
        TokenDtype::I8,
        TokenDtype::I16,
        TokenDtype::I32,
        TokenDtype::I64,
        TokenDtype::F64,
        TokenDtype::F32,
        TokenDtype::U16,
    ];

    /// Megatron's dtype code as stored in the `.idx` header.
    pub fn code(self) -> u8 {
        match self {
            TokenDtype::U8 => 1,
            TokenDtype::I8 => 2,
            TokenDtype::I16 => 3,
            TokenDtype::I32 => 4,
            TokenDtype::I64 => 5,
            TokenDtype::F64 => 6,
            TokenDtype::F32 => 7,
            TokenDtype::U16 => 8,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|d| d.code() == code)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TokenDtype::U8 | TokenDtype::I8 => 1,
            TokenDtype::I16 | TokenDtype::U16 => 2,
            TokenDtype::I32 | TokenDtype::F32 => 4,
            TokenDtype::I64 | TokenDtype::F64 => 8,
        }
    }

    /// Short name as numpy spells it ("u16", "i32", ...).
    pub fn name(self) -> &'static str {
        match self {
            TokenDtype::U8 => "u8",
            TokenDtype::I8 => "i8",
            TokenDtype::I16 => "i16",
            TokenDtype::I32 => "i32",
            TokenDtype::I64 => "i64",
            TokenDtype::F64 => "f64",
            TokenDtype::F32 => "f32",
            TokenDtype::U16 => "u16",
        }
    }

    /// The dtype `preprocess_data.py` picks: u16 when the vocabulary has < 65,500 entries, else i32.
    pub fn for_vocab(vocab: usize) -> Self {
        if vocab < 65_500 {
            TokenDtype::U16
        } else {
            TokenDtype::I32
        }
    }

    /// Largest token id this dtype stores exactly (ids are u32 here).
    pub fn max_id(self) -> u32 {
        match self {
            TokenDtype::U8 => u8::MAX as u32,
            TokenDtype::I8 => i8::MAX as u32,
            TokenDtype::I16 => i16::MAX as u32,
            TokenDtype::U16 => u16::MAX as u32,
            TokenDtype::I32 => i32::MAX as u32,
            TokenDtype::F32 => 1 << 24,
            TokenDtype::I64 | TokenDtype::F64 => u32::MAX,
        }
    }

    /// Append `id` in this dtype, little-endian. The caller has checked `id <= max_id()`.
    pub(crate) fn push(self, id: u32, buf: &mut Vec<u8>) {
        match self {
            TokenDtype::U8 | TokenDtype::I8 => buf.push(id as u8),
            TokenDtype::I16 | TokenDtype::U16 => buf.extend_from_slice(&(id as u16).to_le_bytes()),
            TokenDtype::I32 => buf.extend_from_slice(&(id as i32).to_le_bytes()),
            TokenDtype::I64 => buf.extend_from_slice(&(id as i64).to_le_bytes()),
            TokenDtype::F32 => buf.extend_from_slice(&(id as f32).to_le_bytes()),
            TokenDtype::F64 => buf.extend_from_slice(&(id as f64).to_le_bytes()),
        }
    }

    /// Convert `bytes` (exactly `out.len() * size()` long) into ids. On a value that is not a
    /// token id (negative, fractional, > u32::MAX) returns its position and value.
    pub(crate) fn decode(self, bytes: &[u8], out: &mut [u32]) -> std::result::Result<(), (usize, f64)> {
        fn each<const N: usize>(
            bytes: &[u8],
            out: &mut [u32],
            f: impl Fn([u8; N]) -> Option<u32>,
            raw: impl Fn([u8; N]) -> f64,
        ) -> std::result::Result<(), (usize, f64)> {
            for (k, (o, c)) in out.iter_mut().zip(bytes.chunks_exact(N)).enumerate() {
                let a: [u8; N] = c.try_into().unwrap();
                *o = f(a).ok_or((k, raw(a)))?;
            }
            Ok(())
        }
        fn float_id(v: f64) -> Option<u32> {
            (v >= 0.0 && v <= u32::MAX as f64 && v.fract() == 0.0).then_some(v as u32)
        }
        match self {
            TokenDtype::U8 => each(bytes, out, |a: [u8; 1]| Some(a[0] as u32), |a| a[0] as f64),
            TokenDtype::U16 => each(
                bytes,
                out,
                |a| Some(u16::from_le_bytes(a) as u32),
                |a| u16::from_le_bytes(a) as f64,
            ),
            TokenDtype::I8 => each(
                bytes,
                out,
                |a: [u8; 1]| u32::try_from(a[0] as i8).ok(),
                |a| a[0] as i8 as f64,
            ),
            TokenDtype::I16 => each(
                bytes,
                out,
                |a| u32::try_from(i16::from_le_bytes(a)).ok(),
                |a| i16::from_le_bytes(a) as f64,
            ),
            TokenDtype::I32 => each(
                bytes,
                out,
                |a| u32::try_from(i32::from_le_bytes(a)).ok(),
                |a| i32::from_le_bytes(a) as f64,
            ),
            TokenDtype::I64 => each(
                bytes,
                out,
                |a| u32::try_from(i64::from_le_bytes(a)).ok(),
                |a| i64::from_le_bytes(a) as f64,
            ),
            TokenDtype::F32 => each(
                bytes,
                out,
                |a| float_id(f32::from_le_bytes(a) as f64),
                |a| f32::from_le_bytes(a) as f64,
            ),
            TokenDtype::F64 => each(
                bytes,
                out,
                |a| float_id(f64::from_le_bytes(a)),
                f64::from_le_bytes,
            ),
        }
    }
}

impl fmt::Display for TokenDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
