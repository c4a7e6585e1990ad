//! seedswarm: peer-to-peer zeroth-order fine-tuning with one-byte updates.
//!
//! Every node perturbs the weights by `±εz` with `z` regenerated from a seed
//! of `(run, origin, seq)`, measures two losses, and publishes the projected
//! gradient as one byte. Replicas are a CRDT over integer accumulators, so the
//! same set of updates gives the same bits in any order.

pub mod codec;
pub mod config;
pub mod delta;
pub mod fedzip;
pub mod http;
pub mod log;
pub mod metrics;
pub mod model;
pub mod net;
pub mod node;
pub mod perturb;
pub mod proto;
pub mod replica;
pub mod seed;
pub mod snapshot;
pub mod status;
pub mod task;
pub mod train;
pub mod varint;
