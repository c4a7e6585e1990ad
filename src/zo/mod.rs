//! Zeroth-order primitives every node must compute identically: update
//! seeds from `(run, origin, seq)`, the perturbation `z` regenerated from a
//! seed, and the one-byte codec of projected gradients.

pub mod codec;
pub mod perturb;
pub mod seed;
