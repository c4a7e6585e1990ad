//! The one varint of every seedswarm format: unsigned LEB128 of a `u64`.
//!
//! Seven bits per byte, least significant group first, the high bit set on
//! every byte but the last. [`put`] writes the shortest encoding (at most
//! [`MAX_LEN`] bytes); [`decode`] accepts only that encoding: no trailing
//! zero group (`0x80 0x00` for 0 is refused), nothing beyond `u64`, nothing
//! longer than ten bytes, so every value has exactly one encoding and an
//! accepted input re-encodes to the same bytes.
//!
//! Signed values go through [`zigzag`] first (`0, -1, 1, -2, …` ↦
//! `0, 1, 2, 3, …`), so that small magnitudes of either sign stay short.
//!
//! Used by update batches ([`crate::net::wire`]), snapshot segments
//! ([`crate::crdt::snapshot`], zigzag `i32`) and FedZip deltas ([`crate::delta::fedzip`]).

/// Longest encoding of a `u64`, bytes.
pub const MAX_LEN: usize = 10;

/// Why a varint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended inside the varint.
    #[error("varint truncated")]
    Truncated,
    /// A longer encoding than needed (a trailing zero group).
    #[error("varint not minimally encoded")]
    NonCanonical,
    /// The value does not fit in a `u64`.
    #[error("varint overflows u64")]
    Overflow,
    /// More than [`MAX_LEN`] bytes.
    #[error("varint longer than {MAX_LEN} bytes")]
    TooLong,
}

/// Appends the shortest encoding of `v`.
#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The shortest encoding of `v`.
pub fn encode(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_LEN);
    put(&mut out, v);
    out
}

/// Decodes the varint at the start of `bytes` into `(value, bytes used)`;
/// only the shortest encoding of a `u64` is accepted.
#[inline]
pub fn decode(bytes: &[u8]) -> Result<(u64, usize), Error> {
    // Fast path: one byte.
    match bytes.first() {
        None => return Err(Error::Truncated),
        Some(&b) if b < 0x80 => return Ok((u64::from(b), 1)),
        Some(_) => {}
    }
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(MAX_LEN) {
        if i == MAX_LEN - 1 {
            // The tenth byte holds bit 63 only.
            if b & 0x7f > 1 {
                return Err(Error::Overflow);
            }
            if b & 0x80 != 0 {
                return Err(Error::TooLong);
            }
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 {
                return Err(Error::NonCanonical);
            }
            return Ok((v, i + 1));
        }
    }
    Err(Error::Truncated)
}

/// Maps a signed value to an unsigned one with small magnitudes small:
/// `0, -1, 1, -2, 2, …` ↦ `0, 1, 2, 3, 4, …`.
#[inline]
pub fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// The inverse of [`zigzag`].
#[inline]
pub fn unzigzag(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_vectors() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (u64::from(u32::MAX), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            (
                1 << 63,
                &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            ),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, bytes) in cases {
            assert_eq!(encode(v), bytes, "encode {v}");
            assert_eq!(decode(bytes), Ok((v, bytes.len())), "decode {v}");
            // Whatever follows the varint is not read.
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&[0x80, 0xff]);
            assert_eq!(decode(&longer), Ok((v, bytes.len())), "decode {v} + tail");
        }
        let zz: &[(i32, u32)] = &[
            (0, 0),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (2, 4),
            (i32::MAX, u32::MAX - 1),
            (i32::MIN, u32::MAX),
        ];
        for &(v, z) in zz {
            assert_eq!(zigzag(v), z, "zigzag {v}");
            assert_eq!(unzigzag(z), v, "unzigzag {z}");
        }
    }

    #[test]
    fn refuses_all_but_the_shortest_encoding() {
        assert_eq!(decode(&[]), Err(Error::Truncated));
        assert_eq!(decode(&[0x80]), Err(Error::Truncated));
        assert_eq!(decode(&[0xff; 9]), Err(Error::Truncated));
        assert_eq!(decode(&[0x80, 0x00]), Err(Error::NonCanonical));
        assert_eq!(decode(&[0x81, 0x80, 0x00]), Err(Error::NonCanonical));
        let mut eleven = [0x80u8; 11];
        eleven[9] = 0x81;
        eleven[10] = 0x00;
        assert_eq!(decode(&eleven), Err(Error::TooLong));
        assert_eq!(decode(&[0xff; 10]), Err(Error::Overflow));
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        assert_eq!(decode(&over), Err(Error::Overflow));
    }

    proptest! {
        #[test]
        fn roundtrip(v in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut bytes = encode(v);
            let n = bytes.len();
            prop_assert!(n <= MAX_LEN);
            prop_assert_eq!(n, (64 - v.leading_zeros() as usize).max(1).div_ceil(7));
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode(&bytes), Ok((v, n)));
        }

        #[test]
        fn accepted_input_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((v, n)) = decode(&bytes) {
                prop_assert_eq!(&encode(v)[..], &bytes[..n]);
            }
        }

        #[test]
        fn zigzag_roundtrip(v in any::<i32>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
            prop_assert_eq!(zigzag(v) as u64, (2 * i64::from(v)).unsigned_abs() - u64::from(v < 0));
        }
    }
}
