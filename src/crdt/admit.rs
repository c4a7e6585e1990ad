//! Membership of a permissioned run: owner-signed admissions and revocations.
//!
//! A run whose manifest names an `owner` (an ed25519 public key, part of the
//! run id) takes updates only from origins the owner admitted. Both records
//! are small, self-contained and checkable by anyone holding the run id:
//!
//! ```text
//! admission  = 0x10 ‖ origin (32) ‖ until: u64 LE ‖ sig (64)
//! revocation = 0x11 ‖ origin (32) ‖ from:  u64 LE ‖ sig (64)
//! sig = ed25519 by the owner over
//!       BLAKE3("seedswarm/admission/1" | "seedswarm/revocation/1"
//!              ‖ run_id ‖ origin ‖ seq: u64 LE)
//! ```
//!
//! An admission lets `origin` contribute its seqs `< until` (`u64::MAX`: no
//! limit). A revocation excludes `origin`'s seqs `≥ from` for good: it is an
//! exclusion like a proof of equivocation, so nodes that applied some of
//! those updates subtract them exactly. What every replica counts is a
//! function of the set of records it holds, never of their order:
//!
//! - an origin counts its seqs below `min(max until over its admissions,
//!   min from over its revocations)`;
//! - the admitted limit only grows and the revocation point only shrinks, so
//!   a node keeps one record of each per origin (the widest admission, the
//!   earliest revocation).
//!
//! Limits are seqs, not times: a wall-clock expiry would be judged
//! differently by nodes whose clocks or receive times differ, and replicas
//! would no longer agree on what counts.

use crate::zo::seed::{Origin, RunId};
use libp2p::identity::ed25519;

/// First byte of an encoded admission.
pub const ADMISSION: u8 = 0x10;
/// First byte of an encoded revocation.
pub const REVOCATION: u8 = 0x11;
/// Bytes of an encoded record.
pub const RECORD_LEN: usize = 1 + 32 + 8 + 64;
/// `until` of an admission without a limit.
pub const UNLIMITED: u64 = u64::MAX;

/// The owner's public key (raw ed25519).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(pub [u8; 32]);

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Owner({})", crate::zo::seed::hex(&self.0[..8]))
    }
}

impl Owner {
    /// Parses the 64-hex-digit form the manifest uses.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{s:?} is not 64 hex digits (an ed25519 public key; `seedswarm keygen --owner FILE` prints one)"
            ));
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        ed25519::PublicKey::try_from_bytes(&k)
            .map_err(|_| format!("{s:?} is not an ed25519 public key"))?;
        Ok(Self(k))
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        crate::zo::seed::hex(&self.0)
    }
}

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `origin` may contribute its seqs `< until`.
    Admission,
    /// `origin`'s seqs `≥ from` count nowhere.
    Revocation,
}

/// An owner-signed admission or revocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Record {
    /// Admission or revocation.
    pub kind: Kind,
    /// Whom it is about.
    pub origin: Origin,
    /// `until` (admission: first seq not admitted) or `from` (revocation:
    /// first seq excluded).
    pub seq: u64,
    /// The owner's signature over [`digest`].
    pub sig: [u8; 64],
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind, self.seq) {
            (Kind::Admission, UNLIMITED) => write!(f, "admit {}", self.origin.short()),
            (Kind::Admission, n) => write!(f, "admit {} until seq {n}", self.origin.short()),
            (Kind::Revocation, n) => write!(f, "revoke {} from seq {n}", self.origin.short()),
        }
    }
}

/// Why a record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not a record of this version (first byte).
    #[error("not a membership record (kind byte {0:#04x})")]
    Kind(u8),
    /// Wrong length.
    #[error("a membership record has {RECORD_LEN} bytes, got {0}")]
    Length(usize),
    /// The signature is not the owner's over this run.
    #[error("not signed by this run's owner")]
    Signature,
}

/// What the owner signs.
pub fn digest(run: &RunId, kind: Kind, origin: &Origin, seq: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(match kind {
        Kind::Admission => b"seedswarm/admission/1",
        Kind::Revocation => b"seedswarm/revocation/1",
    });
    h.update(&run.0);
    h.update(&origin.0);
    h.update(&seq.to_le_bytes());
    *h.finalize().as_bytes()
}

impl Record {
    /// Signs a record with the owner's key.
    pub fn sign(key: &ed25519::Keypair, run: &RunId, kind: Kind, origin: Origin, seq: u64) -> Self {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&key.sign(&digest(run, kind, &origin, seq)));
        Self {
            kind,
            origin,
            seq,
            sig,
        }
    }

    /// True when `owner` signed this record for `run`.
    pub fn verify(&self, run: &RunId, owner: &Owner) -> bool {
        let Ok(pk) = ed25519::PublicKey::try_from_bytes(&owner.0) else {
            return false;
        };
        pk.verify(&digest(run, self.kind, &self.origin, self.seq), &self.sig)
    }

    /// Decodes and checks the owner's signature.
    pub fn open(data: &[u8], run: &RunId, owner: &Owner) -> Result<Self, Error> {
        let r = Self::decode(data)?;
        if !r.verify(run, owner) {
            return Err(Error::Signature);
        }
        Ok(r)
    }

    /// The wire and file form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_LEN);
        out.push(match self.kind {
            Kind::Admission => ADMISSION,
            Kind::Revocation => REVOCATION,
        });
        out.extend_from_slice(&self.origin.0);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.sig);
        out
    }

    /// Decodes (never panics); the signature is not checked.
    pub fn decode(data: &[u8]) -> Result<Self, Error> {
        let kind = match data.first() {
            Some(&ADMISSION) => Kind::Admission,
            Some(&REVOCATION) => Kind::Revocation,
            Some(&b) => return Err(Error::Kind(b)),
            None => return Err(Error::Length(0)),
        };
        if data.len() != RECORD_LEN {
            return Err(Error::Length(data.len()));
        }
        let mut origin = [0u8; 32];
        origin.copy_from_slice(&data[1..33]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&data[33..41]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&data[41..]);
        Ok(Self {
            kind,
            origin: Origin(origin),
            seq: u64::from_le_bytes(seq),
            sig,
        })
    }

    /// The text form of a record file: one line of hex.
    pub fn to_text(&self) -> String {
        let kind = match self.kind {
            Kind::Admission => "admission",
            Kind::Revocation => "revocation",
        };
        format!(
            "seedswarm-{kind} {}\n",
            crate::zo::seed::hex(&self.encode())
        )
    }

    /// Parses a record file (its text form, or the raw bytes).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, String> {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let text = text.trim();
            if let Some((head, hex)) = text.split_once(' ') {
                if head == "seedswarm-admission" || head == "seedswarm-revocation" {
                    let raw =
                        crate::zo::seed::unhex(hex.trim()).ok_or("the record is not valid hex")?;
                    let r = Self::decode(&raw).map_err(|e| e.to_string())?;
                    let said = if head == "seedswarm-admission" {
                        Kind::Admission
                    } else {
                        Kind::Revocation
                    };
                    if r.kind != said {
                        return Err(format!("labelled {head} but holds another kind"));
                    }
                    return Ok(r);
                }
            }
        }
        Self::decode(bytes).map_err(|e| e.to_string())
    }
}

/// Does `current` already say everything `new` says (same kind, same origin)?
/// An admission is covered by one with a later or equal `until`, a
/// revocation by one with an earlier or equal `from`.
pub fn covers(current: &Record, new: &Record) -> bool {
    current.kind == new.kind
        && current.origin == new.origin
        && match new.kind {
            Kind::Admission => current.seq >= new.seq,
            Kind::Revocation => current.seq <= new.seq,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_key() -> ed25519::Keypair {
        let mut seed = [7u8; 32];
        ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(&mut seed).unwrap())
    }

    fn owner() -> Owner {
        Owner(owner_key().public().to_bytes())
    }

    #[test]
    fn golden_record() {
        // Pinned: every node must accept exactly these bytes. ed25519 is
        // deterministic (RFC 8032), so the signature is fixed too. Cross-checked
        // with Python's blake3 and PyNaCl (seed [7; 32]).
        let run = RunId([1; 32]);
        let r = Record::sign(&owner_key(), &run, Kind::Admission, Origin([2; 32]), 100);
        let d = digest(&run, Kind::Admission, &Origin([2; 32]), 100);
        assert_eq!(
            crate::zo::seed::hex(&d),
            "d046886c40d1af56a0a15178eceae7cc15cdc1e4f802ea52ca1e4d800b524d08",
        );
        assert_eq!(crate::zo::seed::hex(&r.encode()), "1002020202020202020202020202020202020202020202020202020202020202026400000000000000770b868c381450231841c085abe13b57bfd79409aab526ec86a78cff363d640e0be1a580e5fdcedcdea6d2807f460527b7a8b6387041b4f77a4a5c844de7e101");
        assert!(r.verify(&run, &owner()));
    }

    #[test]
    fn records_roundtrip_and_forgeries_are_refused() {
        let run = RunId([1; 32]);
        let key = owner_key();
        for kind in [Kind::Admission, Kind::Revocation] {
            let r = Record::sign(&key, &run, kind, Origin([3; 32]), 42);
            let bytes = r.encode();
            assert_eq!(bytes.len(), RECORD_LEN);
            assert_eq!(Record::open(&bytes, &run, &owner()), Ok(r));
            assert_eq!(Record::from_file_bytes(r.to_text().as_bytes()), Ok(r));
            assert_eq!(Record::from_file_bytes(&bytes), Ok(r));
            // Another run, another seq, another origin, another kind, another owner.
            assert_eq!(
                Record::open(&bytes, &RunId([9; 32]), &owner()),
                Err(Error::Signature)
            );
            for at in [1, 33, 41, 100] {
                let mut b = bytes.clone();
                b[at] ^= 1;
                assert_eq!(Record::open(&b, &run, &owner()), Err(Error::Signature));
            }
            let mut b = bytes.clone();
            b[0] = if kind == Kind::Admission {
                REVOCATION
            } else {
                ADMISSION
            };
            assert_eq!(Record::open(&b, &run, &owner()), Err(Error::Signature));
            let other = Owner(Origin([3; 32]).0);
            assert!(Record::open(&bytes, &run, &other).is_err());
            assert_eq!(Record::decode(&bytes[..50]), Err(Error::Length(50)));
        }
        assert_eq!(Record::decode(&[1, 2, 3]), Err(Error::Kind(1)));
        assert_eq!(Record::decode(&[]), Err(Error::Length(0)));
        assert!(Record::from_file_bytes(b"seedswarm-admission zz").is_err());
    }

    #[test]
    fn widest_admission_and_earliest_revocation_cover() {
        let run = RunId([1; 32]);
        let key = owner_key();
        let o = Origin([3; 32]);
        let a = |n| Record::sign(&key, &run, Kind::Admission, o, n);
        let r = |n| Record::sign(&key, &run, Kind::Revocation, o, n);
        assert!(covers(&a(10), &a(5)));
        assert!(!covers(&a(5), &a(10)));
        assert!(covers(&a(UNLIMITED), &a(10)));
        assert!(covers(&r(5), &r(10)));
        assert!(!covers(&r(10), &r(5)));
        assert!(!covers(&a(10), &r(10)));
    }

    #[test]
    fn owner_hex_is_checked() {
        let o = owner();
        assert_eq!(Owner::from_hex(&o.to_hex()), Ok(o));
        assert!(Owner::from_hex("abc").unwrap_err().contains("64 hex"));
        assert!(Owner::from_hex(&"zz".repeat(32)).is_err());
    }
}
