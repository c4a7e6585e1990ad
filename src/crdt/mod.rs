//! The replicated state: the replica as a CRDT over integer accumulators
//! (same set of updates, same bits), the update log that holds every update
//! and its file, and snapshots of the replica for joining.

pub mod admit;
pub mod attest;
pub mod basis;
pub mod log;
pub mod replica;
pub mod snapshot;
