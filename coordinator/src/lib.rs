//! `lydlr-coordinator`: fleet-wide control.
//!
//! Owns the node registry and liveness (retained status, last wills, metrics as heartbeats),
//! the bandwidth allocation published to every node each period, and the fleet summary.
//! [`Coordinator`] is the synchronous state machine, driven by messages and explicit clock
//! readings so tests control time; [`run_coordinator`] wires it to the bus.
//!
//! Must not: touch frames or codecs' payloads, or crash on anything a node sends.

pub mod allocator;
mod fleet;
pub mod rollout;
mod service;

pub use fleet::{
    AllocatorKind, Coordinator, CoordinatorConfig, Outgoing, ROLLOUT_FILE, StateError,
};
pub use service::{CoordinatorError, CoordinatorHandle, run_coordinator};
