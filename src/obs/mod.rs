//! Observability: Prometheus series, the per-node HTTP server (`/metrics`,
//! `/status`, the dashboard) and `seedswarm status` over many nodes.

pub mod http;
pub mod metrics;
pub mod progress;
pub mod status;
