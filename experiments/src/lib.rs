//! `lydlr-experiments`: the `lydlr` CLI and everything an experiment needs around the nodes.
//!
//! Owns scenario files ([`scenario`]), the run orchestration that wires the simulator, the
//! broker, one edge node per robot, the coordinator and the sink together ([`runner`]), the
//! sink that decodes and verifies every packet ([`sink`]), and the outputs: Polars tables,
//! the Rerun recording and the printed summary ([`outputs`]).
//!
//! Must not: contain codec, node or allocation logic (those live in their crates and run here
//! exactly as they run on a robot). Heavy dependencies (polars, rerun) stop here.

pub mod bench;
pub mod eval;
pub mod export;
pub mod links;
pub mod operator;
pub mod outputs;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sink;
pub mod source;
pub mod timing;
pub mod train;

pub use runner::{RunOptions, RunReport, run_scenario};
pub use scenario::{Scenario, ScenarioError};
