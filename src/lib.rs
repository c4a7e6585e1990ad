//! seedswarm: peer-to-peer zeroth-order fine-tuning with one-byte updates.
//!
//! Every node perturbs the weights by `±εz` with `z` regenerated from a seed
//! of `(run, origin, seq)`, measures two losses, and publishes the projected
//! gradient as one byte. Replicas are a CRDT over integer accumulators, so the
//! same set of updates gives the same bits in any order.
//!
//! The modules follow the pipeline of an update:
//!
//! | stage | module |
//! |---|---|
//! | randomness and the one-byte codec | [`zo`] (`seed`, `perturb`, `codec`), [`varint`] |
//! | CRDT replica, update log, snapshots | [`crdt`] (`replica`, `log`, `snapshot`) |
//! | a run as one small file | [`seedlog`] (export; `train::materialize` rebuilds) |
//! | compressed sparse deltas | [`delta`] (`fedzip`, safetensors `files`) |
//! | model | [`model`] (built-in classifier, llama) |
//! | data | [`task`] |
//! | training | [`train`] (`Trainer`, the one loop `Session`, single-node commands) |
//! | protocol core (no IO) | [`proto`] |
//! | network shell | [`net`] (behaviour, transports, wire formats), [`node`] (shell, compute thread) |
//! | observability | [`obs`] (`metrics`, `http`, `status`) |
//! | configuration, CLI | [`config`], `main.rs` |

pub mod config;
pub mod crdt;
pub mod delta;
pub mod model;
pub mod net;
pub mod node;
pub mod obs;
pub mod owner;
pub mod proto;
pub mod seedlog;
pub mod task;
pub mod train;
pub mod varint;
pub mod zo;
