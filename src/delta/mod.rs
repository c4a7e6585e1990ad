//! Compressed sparse deltas: the FedZip codec (the second update kind) and
//! `seedswarm delta` over safetensors files.

pub mod fedzip;
pub mod files;
