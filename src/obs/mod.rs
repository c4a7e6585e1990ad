//! Observability: Prometheus series, the per-node HTTP server (`/metrics`,
//! `/status`, `/history`, the dashboard), the bounded history of a node's
//! series and `seedswarm status` over many nodes.

pub mod history;
pub mod http;
pub mod metrics;
pub mod progress;
pub mod status;
