//! `lydlr-edge`: the node runtime that runs on every robot (or beside every simulated one).
//!
//! Owns the per-node pipeline: subscribe the node's raw streams and their schemas, cut them into
//! blocks, compress each block, publish packets, metrics (also the node's heartbeat) and a
//! retained status with an `offline` last will, and obey the coordinator's allocation.
//! [`Compressor`] is the synchronous core (testable without a broker); [`run_node`] wires it
//! to the bus. [`models`] deploys, health-checks and rolls back learned models; [`spool`]
//! keeps packets on disk while the broker is out of reach.
//!
//! Must not: pull bevy, polars or rerun (a robot builds this crate), or stop compressing
//! because of anything it receives: bad messages are counted and dropped.

mod compressor;
mod config;
mod latency;
pub mod models;
mod node;
mod rate;
pub mod scripts;
pub mod signing;
pub mod spool;

pub use compressor::{Compressor, EncodedPacket};
pub use config::{EdgeConfig, EdgeConfigError};
pub use latency::LatencyHistogram;
pub use node::{NodeHandle, run_node};
