//! `lydlr-bus`: how lydlr's parts talk.
//!
//! Owns the MQTT topic tree ([`topics`]), the versioned message schema ([`messages`]), the
//! client wrapper around rumqttc ([`BusClient`], event loop in its own task, resubscribes after
//! reconnects) and the embedded rumqttd broker ([`EmbeddedBroker`]) that runs by default so that
//! nothing external is needed.
//!
//! Must not: know about codecs' internals, the simulator or experiments. Every decoder here
//! takes untrusted bytes and returns an error, never panics.

mod broker;
mod client;
pub mod messages;
pub mod topics;

pub use broker::EmbeddedBroker;
pub use client::{BrokerUrl, BusClient, BusError, BusMessage, ClientOptions};
pub use messages::MessageError;
pub use topics::Topic;
