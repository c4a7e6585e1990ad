//! Zeroth-order primitives every node must compute identically: update
//! seeds from `(run, origin, seq)`, the perturbation `z` regenerated from a
//! seed, the one-byte codec of projected gradients, and the rules that
//! recheck a code against a recomputed gradient.

pub mod check;
pub mod codec;
pub mod perturb;
pub mod seed;
pub mod structure;
