//! The replica as a CRDT: `θ = θ₀ + u·δ` with an i32 accumulator (DESIGN §3).
//!
//! Owns the base weights `θ₀` of the trainable tensors, the integer
//! accumulator `δ`, the per-tensor fixed-point unit `u_t = 2^e_t`, the version
//! vector, and the rules that turn an update record into an integer
//! contribution. A contribution depends only on the record (seed, code, and the
//! lr schedule at its own `seq`), never on local state, and is added with
//! wrapping (associative, commutative) arithmetic: the same set of updates gives
//! the same bits in any order. Working f32 weights are materialized from `θ₀`
//! and `δ` exactly; an evaluation perturbation `±εz` is applied on top of a
//! fresh materialization and undone by materializing again, never by
//! subtraction.

use crate::zo::codec::{pow2, Codec};
use crate::zo::perturb::{self, Kind, ROUNDING_STREAM};
use crate::zo::seed::{self, Origin, RunId, Seed};
use crate::zo::structure::{self, Structure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Elements processed per chunk by the fused kernels (a multiple of 32).
const CHUNK: usize = 8192;

/// One update: the `seq`-th sample of `origin`, its projected gradient coded in a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Update {
    /// Authenticated sender.
    pub origin: Origin,
    /// The sender's running sample counter.
    pub seq: u64,
    /// The one-byte code of the projected gradient.
    pub code: u8,
}

/// Learning-rate schedule, indexed by an update's own `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// `lr` for every update.
    Constant { lr: f64 },
    /// Linear from `lr` at seq 0 to `lr · final_fraction` at `steps`, constant after.
    Linear {
        lr: f64,
        steps: u64,
        final_fraction: f64,
    },
}

impl Schedule {
    /// The learning rate of an update with sequence number `seq`.
    pub fn lr(&self, seq: u64) -> f64 {
        match *self {
            Schedule::Constant { lr } => lr,
            Schedule::Linear {
                lr,
                steps,
                final_fraction,
            } => {
                let t = if steps == 0 {
                    1.0
                } else {
                    (seq.min(steps) as f64) / (steps as f64)
                };
                lr * (1.0 - t * (1.0 - final_fraction))
            }
        }
    }

    /// The largest learning rate the schedule ever gives.
    pub fn max_lr(&self) -> f64 {
        match *self {
            Schedule::Constant { lr } => lr,
            Schedule::Linear {
                lr, final_fraction, ..
            } => lr.max(lr * final_fraction),
        }
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let (lr, frac) = match *self {
            Schedule::Constant { lr } => (lr, 0.0),
            Schedule::Linear {
                lr, final_fraction, ..
            } => (lr, final_fraction),
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("{prefix}.lr must be positive and finite, got {lr}"));
        }
        if !(0.0..=1.0).contains(&frac) {
            return Err(format!(
                "{prefix}.final_fraction must be within [0, 1], got {frac}"
            ));
        }
        Ok(())
    }
}

/// Everything every node must agree on to turn records into contributions.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Run the seeds are derived in.
    pub run: RunId,
    /// Distribution of `z`.
    pub kind: Kind,
    /// Which elements an update perturbs ([`crate::zo::structure`]).
    pub structure: Structure,
    /// The one-byte codec.
    pub codec: Codec,
    /// Learning rate by seq.
    pub schedule: Schedule,
    /// The unit of tensor `t` is `2^(exponent(max|θ₀_t|) − unit_bits)`.
    pub unit_bits: u32,
    /// Delta updates are scaled down to at most this L2 norm.
    pub max_delta_norm: f64,
}

/// A trainable tensor of the replica.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Parameter name in the model.
    pub name: String,
    /// Base weights `θ₀`.
    pub base: Vec<f32>,
    /// Integer accumulator `δ`.
    pub delta: Vec<i32>,
    /// `u_t = 2^unit_exp`.
    pub unit_exp: i32,
    /// Layer group (for [`Structure::Layers`]).
    pub group: usize,
    /// The elements updates perturb, as a bitset (for [`Structure::Magnitude`]).
    pub mask: Option<Vec<u32>>,
}

/// Highest contiguous count of applied updates per origin (`seq < n` applied).
pub type VersionVector = BTreeMap<Origin, u64>;

/// Errors of replica operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An update did not extend its origin's contiguous prefix.
    #[error("update {seq} of origin {origin} is not the next one (expected {expected})")]
    Gap {
        origin: String,
        seq: u64,
        expected: u64,
    },
    /// A tensor name or length did not match.
    #[error("tensor mismatch: {0}")]
    Mismatch(String),
    /// A delta update's payload is missing or does not decode for this model.
    #[error("delta update {seq} of origin {origin}: {reason}")]
    BadDelta {
        origin: String,
        seq: u64,
        reason: String,
    },
}

/// The integer contributions of one delta update to one tensor: `δ[p] += c[id]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseContribution {
    /// Replica slot.
    pub slot: usize,
    /// Element indices, strictly increasing.
    pub positions: Vec<u32>,
    /// Cluster id of each position.
    pub ids: Vec<u8>,
    /// Integer contribution of each cluster, in units of the slot.
    pub values: Vec<i32>,
}

/// The replicated model state.
#[derive(Clone, Debug)]
pub struct Replica {
    rules: Rules,
    slots: Vec<Slot>,
    vv: VersionVector,
    applied: u64,
}

/// The exponent `e` such that `2^(e-1) <= x < 2^e` for normal positive `x`.
fn exponent_above(x: f32) -> i32 {
    if x == 0.0 || !x.is_finite() {
        return 0;
    }
    let bits = x.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32;
    if exp == 0 {
        -126
    } else {
        exp - 127 + 1
    }
}

impl Replica {
    /// A replica at `θ₀` for the given trainable tensors `(name, base)`.
    pub fn new(rules: Rules, tensors: Vec<(String, Vec<f32>)>) -> Self {
        let groups = structure::groups(tensors.iter().map(|(n, _)| n.as_str()));
        let slots = tensors
            .into_iter()
            .zip(groups)
            .map(|((name, base), group)| {
                let max = base.iter().fold(0f32, |m, v| m.max(v.abs()));
                // Tensors at zero (biases) or ones (norms) still get room to move:
                // the scale is at least 1.
                let e = exponent_above(max.max(1.0)).max(exponent_above(max));
                let mask = match rules.structure {
                    Structure::Magnitude { density } => {
                        Some(structure::magnitude_mask(&base, density))
                    }
                    _ => None,
                };
                Slot {
                    name,
                    delta: vec![0; base.len()],
                    base,
                    unit_exp: e - rules.unit_bits as i32,
                    group,
                    mask,
                }
            })
            .collect();
        Self {
            rules,
            slots,
            vv: VersionVector::new(),
            applied: 0,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The trainable tensors.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.slots.iter().map(|s| s.base.len()).sum()
    }

    /// Number of parameters an update can perturb: all trainable ones, or
    /// those in the magnitude masks (a layer-subset update perturbs a
    /// seed-chosen part of them).
    pub fn num_perturbable(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                s.mask
                    .as_ref()
                    .map_or(s.base.len(), |m| structure::count(m))
            })
            .sum()
    }

    /// Which tensors update `seed` perturbs (and so moves): all of them,
    /// except under [`Structure::Layers`], where its chosen groups' only.
    pub fn perturbed(&self, seed: &Seed) -> Vec<bool> {
        match self.rules.structure {
            Structure::Layers { layers } => {
                let n = self.slots.iter().map(|s| s.group + 1).max().unwrap_or(0);
                let chosen = structure::chosen_groups(seed, n, layers);
                self.slots.iter().map(|s| chosen[s.group]).collect()
            }
            _ => vec![true; self.slots.len()],
        }
    }

    /// Version vector of the applied set.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// Total updates applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The contributions of update `u`: per tensor, the scalar `a_t` in units.
    /// Tensors the update does not perturb get exactly 0.
    fn scalars(&self, u: &Update) -> (Seed, Vec<f64>) {
        let seed = seed::derive(&self.rules.run, &u.origin, u.seq);
        let step = -self.rules.schedule.lr(u.seq) * self.rules.codec.decode(u.code);
        let a = self
            .slots
            .iter()
            .zip(self.perturbed(&seed))
            .map(|(s, on)| if on { step * pow2(-s.unit_exp) } else { 0.0 })
            .collect();
        (seed, a)
    }

    /// The integer contribution an update adds to every element of tensor `t`
    /// (Rademacher: times the element's sign): `a_t` rounded stochastically
    /// with a uniform from the update's seed.
    pub fn rademacher_contribution(seed: &Seed, t: usize, a: f64) -> i32 {
        let u = perturb::uniform(seed, ROUNDING_STREAM, t as u64);
        let a = a.clamp(-1_073_741_824.0, 1_073_741_824.0);
        let fl = a.floor();
        let c = if u < a - fl { fl + 1.0 } else { fl };
        c as i32
    }

    /// The integer contributions of a decoded delta, norm-clipped by the
    /// rules: the L2 norm (f64, in the delta's tensor and position order) is
    /// scaled down to at most `max_delta_norm`, and each cluster value becomes
    /// `round_ties_even(value · scale / u_t)`. Only IEEE-exact operations
    /// (`*`, `/`, `sqrt`, rounding), so every node gets the same integers.
    pub fn delta_contributions(
        &self,
        d: &crate::delta::fedzip::Delta,
    ) -> Result<Vec<SparseContribution>, String> {
        let mut out = Vec::with_capacity(d.tensors.len());
        let mut sq = 0f64;
        for t in &d.tensors {
            let slot = self
                .slots
                .iter()
                .position(|s| s.name == t.name)
                .ok_or_else(|| format!("tensor {} is not trainable in this run", t.name))?;
            if self.slots[slot].base.len() as u64 != t.len {
                return Err(format!(
                    "tensor {} has {} elements here, {} in the delta",
                    t.name,
                    self.slots[slot].base.len(),
                    t.len
                ));
            }
            if out.iter().any(|c: &SparseContribution| c.slot == slot) {
                return Err(format!("tensor {} appears twice", t.name));
            }
            for &id in &t.ids {
                let v = f64::from(
                    *t.centroids
                        .get(id as usize)
                        .ok_or("cluster id out of range")?,
                );
                sq += v * v;
            }
            out.push(SparseContribution {
                slot,
                positions: t.positions.clone(),
                ids: t.ids.clone(),
                values: Vec::new(),
            });
        }
        let norm = sq.sqrt();
        let max = self.rules.max_delta_norm;
        let scale = if norm > max && norm > 0.0 {
            max / norm
        } else {
            1.0
        };
        if !scale.is_finite() {
            return Err("delta norm is not finite".into());
        }
        for (c, t) in out.iter_mut().zip(&d.tensors) {
            let inv_unit = pow2(-self.slots[c.slot].unit_exp);
            c.values = t
                .centroids
                .iter()
                .map(|&v| {
                    let x = (f64::from(v) * scale * inv_unit).round_ties_even();
                    x.clamp(-1_073_741_824.0, 1_073_741_824.0) as i32
                })
                .collect();
        }
        Ok(out)
    }

    /// Decodes a delta payload for this replica and computes its contributions.
    pub fn decode_delta(&self, payload: &[u8]) -> Result<Vec<SparseContribution>, String> {
        let d = crate::delta::fedzip::decode(payload, self.num_params() as u64)
            .map_err(|e| e.to_string())?;
        self.delta_contributions(&d)
    }

    /// Applies one-byte updates (see [`Replica::apply_with`]); a delta update
    /// among them is an error.
    pub fn apply(&mut self, updates: &[Update]) -> Result<usize, Error> {
        self.apply_with(updates, &|_, _| None)
    }

    /// Applies updates. Each must be the next `seq` of its origin (duplicates of
    /// already-applied seqs are skipped); one-byte updates are applied in one
    /// pass per tensor. A delta update (code [`crate::crdt::log::DELTA`]) adds the
    /// contributions of its payload, which `payload` returns. Nothing changes
    /// when any update fails.
    pub fn apply_with(
        &mut self,
        updates: &[Update],
        payload: &dyn Fn(&Origin, u64) -> Option<crate::crdt::log::Payload>,
    ) -> Result<usize, Error> {
        let mut fresh = Vec::with_capacity(updates.len());
        let mut sparse: Vec<SparseContribution> = Vec::new();
        let mut next = self.vv.clone();
        for u in updates {
            let n = next.entry(u.origin).or_insert(0);
            if u.seq < *n {
                continue;
            }
            if u.seq != *n {
                return Err(Error::Gap {
                    origin: u.origin.short(),
                    seq: u.seq,
                    expected: *n,
                });
            }
            *n += 1;
            self.collect(u, payload, &mut fresh, &mut sparse)?;
        }
        let count = next.values().sum::<u64>() - self.vv.values().sum::<u64>();
        self.contribute(&fresh, &sparse, false);
        self.vv = next;
        self.applied += count;
        Ok(count as usize)
    }

    /// Takes updates out again: `updates` must be, per origin, exactly the
    /// applied tail `[s, n)` of that origin (n its version-vector entry); each
    /// contribution is subtracted (wrapping, so exactly undone) and the
    /// origin's entry becomes `s`. Used when an origin is proven to
    /// equivocate and is excluded from `s` on. Nothing changes on error.
    pub fn retract_with(
        &mut self,
        updates: &[Update],
        payload: &dyn Fn(&Origin, u64) -> Option<crate::crdt::log::Payload>,
    ) -> Result<usize, Error> {
        let mut tails: BTreeMap<Origin, (u64, u64)> = BTreeMap::new();
        let mut fresh = Vec::with_capacity(updates.len());
        let mut sparse: Vec<SparseContribution> = Vec::new();
        for u in updates {
            let e = tails.entry(u.origin).or_insert((u.seq, u.seq));
            if u.seq != e.1 {
                return Err(Error::Gap {
                    origin: u.origin.short(),
                    seq: u.seq,
                    expected: e.1,
                });
            }
            e.1 += 1;
            self.collect(u, payload, &mut fresh, &mut sparse)?;
        }
        for (o, &(from, end)) in &tails {
            let n = self.vv.get(o).copied().unwrap_or(0);
            if end != n {
                return Err(Error::Gap {
                    origin: o.short(),
                    seq: end,
                    expected: n,
                });
            }
            debug_assert!(from < end);
        }
        self.contribute(&fresh, &sparse, true);
        let mut count = 0;
        for (o, (from, end)) in tails {
            count += end - from;
            // An origin with nothing left counts as never heard of.
            if from == 0 {
                self.vv.remove(&o);
            } else {
                self.vv.insert(o, from);
            }
        }
        self.applied -= count;
        Ok(count as usize)
    }

    /// Sorts one update into what it contributes: a one-byte update with a
    /// non-zero code into `fresh`, a delta's decoded contributions into
    /// `sparse` (its payload from `payload`).
    fn collect(
        &self,
        u: &Update,
        payload: &dyn Fn(&Origin, u64) -> Option<crate::crdt::log::Payload>,
        fresh: &mut Vec<Update>,
        sparse: &mut Vec<SparseContribution>,
    ) -> Result<(), Error> {
        if u.code == crate::crdt::log::DELTA {
            let bad = |reason: String| Error::BadDelta {
                origin: u.origin.short(),
                seq: u.seq,
                reason,
            };
            let p = payload(&u.origin, u.seq).ok_or_else(|| bad("payload missing".into()))?;
            sparse.extend(self.decode_delta(&p).map_err(bad)?);
        } else if u.code & 0x7f != 0 {
            fresh.push(*u);
        }
        Ok(())
    }

    /// Adds (or, with `negate`, subtracts) the contributions of one-byte
    /// updates and decoded deltas.
    fn contribute(&mut self, fresh: &[Update], sparse: &[SparseContribution], negate: bool) {
        let prepared: Vec<(Seed, Vec<f64>)> = fresh.iter().map(|u| self.scalars(u)).collect();
        let kind = self.rules.kind;
        for (t, slot) in self.slots.iter_mut().enumerate() {
            match kind {
                Kind::Rademacher => {
                    let items: Vec<(Seed, i32)> = prepared
                        .iter()
                        .filter(|(_, a)| a[t] != 0.0)
                        .map(|(seed, a)| {
                            let c = Self::rademacher_contribution(seed, t, a[t]);
                            (*seed, if negate { c.wrapping_neg() } else { c })
                        })
                        .filter(|&(_, c)| c != 0)
                        .collect();
                    apply_rademacher(&mut slot.delta, slot.mask.as_deref(), t as u64, &items);
                }
                Kind::Gaussian => {
                    // round_ties_even(−x) = −round_ties_even(x), and the clamp
                    // is symmetric: negating `a` negates every contribution.
                    let items: Vec<(Seed, f64)> = prepared
                        .iter()
                        .filter(|(_, a)| a[t] != 0.0)
                        .map(|(seed, a)| (*seed, if negate { -a[t] } else { a[t] }))
                        .collect();
                    apply_gaussian(&mut slot.delta, slot.mask.as_deref(), t as u64, &items);
                }
            }
        }
        for c in sparse {
            let delta = &mut self.slots[c.slot].delta;
            for (&p, &id) in c.positions.iter().zip(&c.ids) {
                let d = &mut delta[p as usize];
                let v = c.values[id as usize];
                *d = d.wrapping_add(if negate { v.wrapping_neg() } else { v });
            }
        }
    }

    /// Writes the working weights of tensor `t` into `out`: `θ₀ + u·δ`, exactly.
    pub fn materialize(&self, t: usize, out: &mut [f32]) {
        let s = &self.slots[t];
        let unit = pow2(s.unit_exp);
        let run = |o: &mut [f32], base: &[f32], delta: &[i32]| {
            for ((o, &b), &d) in o.iter_mut().zip(base).zip(delta) {
                *o = (f64::from(b) + f64::from(d) * unit) as f32;
            }
        };
        if out.len() <= SEGMENT {
            return run(out, &s.base, &s.delta);
        }
        out.par_chunks_mut(SEGMENT)
            .zip(s.base.par_chunks(SEGMENT))
            .zip(s.delta.par_chunks(SEGMENT))
            .for_each(|((o, b), d)| run(o, b, d));
    }

    /// Writes `θ + scale·z` of tensor `t` into `out`, `z` regenerated from
    /// `seed` (zero outside the tensor's magnitude mask). The caller skips
    /// tensors the update does not perturb ([`Replica::perturbed`]).
    pub fn materialize_perturbed(&self, t: usize, out: &mut [f32], seed: &Seed, scale: f32) {
        let s = &self.slots[t];
        let unit = pow2(s.unit_exp);
        let kind = self.rules.kind;
        let run = |start: usize, out: &mut [f32]| {
            let mut z = vec![0f32; CHUNK.min(out.len())];
            for (c, o) in out.chunks_mut(CHUNK).enumerate() {
                let at = start + c * CHUNK;
                let z = &mut z[..o.len()];
                perturb::fill(kind, seed, t as u64, at, z);
                if let Some(mask) = &s.mask {
                    // `at` is a multiple of 32: mask word k covers z[32k..].
                    for (zs, &m) in z.chunks_mut(32).zip(&mask[at / 32..]) {
                        for (b, zi) in zs.iter_mut().enumerate() {
                            if m & (1 << b) == 0 {
                                *zi = 0.0;
                            }
                        }
                    }
                }
                let base = &s.base[at..at + o.len()];
                let delta = &s.delta[at..at + o.len()];
                for (((o, &b), &d), &zi) in o.iter_mut().zip(base).zip(delta).zip(z.iter()) {
                    let theta = (f64::from(b) + f64::from(d) * unit) as f32;
                    *o = theta + scale * zi;
                }
            }
        };
        if out.len() <= SEGMENT {
            return run(0, out);
        }
        out.par_chunks_mut(SEGMENT)
            .enumerate()
            .for_each(|(i, o)| run(i * SEGMENT, o));
    }

    /// BLAKE3 digest of `δ` as lower-case hex.
    pub fn digest(&self) -> String {
        seed::hex(&self.digest_bytes())
    }

    /// BLAKE3 digest of `δ` (tensor lengths and little-endian values).
    pub fn digest_bytes(&self) -> [u8; 32] {
        digest_of(self.slots.iter().map(|s| s.delta.as_slice()))
    }

    /// Replaces `δ` and the version vector (snapshot install).
    pub fn install(&mut self, deltas: Vec<Vec<i32>>, vv: VersionVector) -> Result<(), Error> {
        if deltas.len() != self.slots.len() {
            return Err(Error::Mismatch(format!(
                "{} tensors in snapshot, {} in replica",
                deltas.len(),
                self.slots.len()
            )));
        }
        for (s, d) in self.slots.iter().zip(&deltas) {
            if s.delta.len() != d.len() {
                return Err(Error::Mismatch(format!("length of {}", s.name)));
            }
        }
        for (s, d) in self.slots.iter_mut().zip(deltas) {
            s.delta = d;
        }
        self.applied = vv.values().sum();
        self.vv = vv;
        Ok(())
    }
}

/// BLAKE3 digest of accumulators, tensor by tensor (lengths and LE values).
pub fn digest_of<'a>(deltas: impl IntoIterator<Item = &'a [i32]>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"seedswarm/delta/1");
    // Large pieces hashed with BLAKE3's parallel tree mode (same digest).
    const PIECE: usize = 1 << 20;
    let mut buf = Vec::with_capacity(4 * PIECE);
    for delta in deltas {
        h.update(&(delta.len() as u64).to_le_bytes());
        for chunk in delta.chunks(PIECE) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            h.update_rayon(&buf);
        }
    }
    *h.finalize().as_bytes()
}

/// Elements per parallel segment (a multiple of [`CHUNK`]).
const SEGMENT: usize = 1 << 20;

/// This machine's replay speed, in parameter-updates per second: one
/// Rademacher update applied to a scratch of 2^22 values (the same code
/// path and threads a replay uses; best of three, ~10–40 ms in all).
pub fn measure_apply_rate() -> f64 {
    let mut scratch = vec![0i32; 1 << 22];
    let seed = crate::zo::seed::derive(
        &crate::zo::seed::RunId([0; 32]),
        &crate::zo::seed::Origin([0; 32]),
        0,
    );
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        apply_rademacher(&mut scratch, None, 0, &[(seed, 1)]);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    scratch.len() as f64 / best.max(1e-9)
}

/// Adds `±c` to every element (with a `mask`, to its set elements only) for
/// each `(seed, c)`, signs from stream `t`; memory is touched once per chunk
/// for all updates. Large tensors are split into segments applied in
/// parallel (each seeks its own stream position).
pub fn apply_rademacher(delta: &mut [i32], mask: Option<&[u32]>, t: u64, items: &[(Seed, i32)]) {
    if items.is_empty() {
        return;
    }
    if let Some(mask) = mask {
        return delta
            .par_chunks_mut(SEGMENT)
            .zip(mask.par_chunks(SEGMENT / 32))
            .enumerate()
            .for_each(|(i, (seg, m))| apply_rademacher_masked(seg, m, i * SEGMENT, t, items));
    }
    if delta.len() <= SEGMENT {
        return apply_rademacher_at(delta, 0, t, items);
    }
    delta
        .par_chunks_mut(SEGMENT)
        .enumerate()
        .for_each(|(i, seg)| apply_rademacher_at(seg, i * SEGMENT, t, items));
}

/// [`apply_rademacher_at`] on the elements set in `mask` (word `k` covers
/// elements `32k..32k + 32` of `delta`).
fn apply_rademacher_masked(
    delta: &mut [i32],
    mask: &[u32],
    start: usize,
    t: u64,
    items: &[(Seed, i32)],
) {
    let mut rngs: Vec<_> = items
        .iter()
        .map(|(seed, _)| perturb::stream(seed, t, (start / 32) as u64))
        .collect();
    let sum_c = items.iter().fold(0i32, |s, &(_, c)| s.wrapping_add(c));
    let mut words = [0u32; CHUNK / 32];
    for (chunk, m) in delta.chunks_mut(CHUNK).zip(mask.chunks(CHUNK / 32)) {
        let nw = chunk.len().div_ceil(32);
        for (rng, &(_, c)) in rngs.iter_mut().zip(items) {
            perturb::fill_words(rng, &mut words[..nw]);
            let two_c = c.wrapping_mul(2);
            for ((block, &w), &m) in chunk.chunks_mut(32).zip(&words).zip(m) {
                for (b, d) in block.iter_mut().enumerate() {
                    if w & m & (1 << b) != 0 {
                        *d = d.wrapping_add(two_c);
                    }
                }
            }
        }
        for (block, &m) in chunk.chunks_mut(32).zip(m) {
            for (b, d) in block.iter_mut().enumerate() {
                if m & (1 << b) != 0 {
                    *d = d.wrapping_sub(sum_c);
                }
            }
        }
    }
}

fn apply_rademacher_at(delta: &mut [i32], start: usize, t: u64, items: &[(Seed, i32)]) {
    let mut rngs: Vec<_> = items
        .iter()
        .map(|(seed, _)| perturb::stream(seed, t, (start / 32) as u64))
        .collect();
    // ±c = 2c·bit − c: add 2c where the bit is set, then subtract Σc once per
    // element. Wrapping arithmetic makes this bit-identical to adding ±c.
    let sum_c = items.iter().fold(0i32, |s, &(_, c)| s.wrapping_add(c));
    let mut words = [0u32; CHUNK / 32];
    for chunk in delta.chunks_mut(CHUNK) {
        let nw = chunk.len().div_ceil(32);
        for (rng, &(_, c)) in rngs.iter_mut().zip(items) {
            perturb::fill_words(rng, &mut words[..nw]);
            let two_c = c.wrapping_mul(2);
            let mut blocks = chunk.chunks_exact_mut(32);
            for (block, &w) in (&mut blocks).zip(words.iter()) {
                add_where_set(block.try_into().expect("32-element block"), w, two_c);
            }
            let rest = blocks.into_remainder();
            let w = words[nw - 1];
            for (b, d) in rest.iter_mut().enumerate() {
                if w & (1 << b) != 0 {
                    *d = d.wrapping_add(two_c);
                }
            }
        }
        for d in chunk.iter_mut() {
            *d = d.wrapping_sub(sum_c);
        }
    }
}

/// Bit `b` of a word selects element `b` of a 32-element block.
const BIT: [u32; 32] = {
    let mut t = [0u32; 32];
    let mut b = 0;
    while b < 32 {
        t[b] = 1 << b;
        b += 1;
    }
    t
};

/// Adds `v` to the elements whose bit is set in `w` (branch-free, vectorizes
/// on baseline x86-64: and, compare, and, add per four lanes).
#[inline(always)]
fn add_where_set(block: &mut [i32; 32], w: u32, v: i32) {
    for (d, &bit) in block.iter_mut().zip(BIT.iter()) {
        let mask = -(((w & bit) != 0) as i32);
        *d = d.wrapping_add(v & mask);
    }
}

/// Adds `round(a · z_i)` for each `(seed, a)` with Gaussian `z` from stream
/// `t` (with a `mask`, to its set elements only).
pub fn apply_gaussian(delta: &mut [i32], mask: Option<&[u32]>, t: u64, items: &[(Seed, f64)]) {
    if items.is_empty() {
        return;
    }
    delta
        .par_chunks_mut(SEGMENT)
        .enumerate()
        .for_each(|(i, seg)| {
            let m = mask.map(|m| &m[i * SEGMENT / 32..]);
            apply_gaussian_at(seg, m, i * SEGMENT, t, items)
        });
}

fn apply_gaussian_at(
    delta: &mut [i32],
    mask: Option<&[u32]>,
    start: usize,
    t: u64,
    items: &[(Seed, f64)],
) {
    let mut z = vec![0f32; CHUNK.min(delta.len())];
    for (c, chunk) in delta.chunks_mut(CHUNK).enumerate() {
        for (seed, a) in items {
            let z = &mut z[..chunk.len()];
            perturb::fill(Kind::Gaussian, seed, t, start + c * CHUNK, z);
            for (i, (d, &zi)) in chunk.iter_mut().zip(z.iter()).enumerate() {
                if let Some(m) = mask {
                    let k = c * CHUNK + i;
                    if m[k / 32] & (1 << (k % 32)) == 0 {
                        continue;
                    }
                }
                let v = (a * f64::from(zi)).round_ties_even();
                *d = d.wrapping_add(v.clamp(-1e9, 1e9) as i32);
            }
        }
    }
}
