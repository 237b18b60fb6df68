//! `lydlr-bus`: how lydlr's parts talk.
//!
//! Owns the MQTT topic tree ([`topics`]), the versioned message schema ([`messages`]), the
//! client wrapper around rumqttc ([`BusClient`], event loop in its own task, resubscribes after
//! reconnects, resends what a broken session left unacknowledged), the embedded rumqttd broker
//! ([`EmbeddedBroker`]) that runs by default so that nothing external is needed, and the two
//! pieces fault tests need: an external [`Mosquitto`] that can be killed and restarted, and a
//! [`LinkProxy`] that cuts a link.
//!
//! Must not: know about codecs' internals, the simulator or experiments. Every decoder here
//! takes untrusted bytes and returns an error, never panics.

mod broker;
mod client;
pub mod messages;
mod mosquitto;
mod proxy;
pub mod topics;

pub use broker::EmbeddedBroker;
pub use client::{BrokerUrl, BusClient, BusError, BusMessage, ClientOptions};
pub use messages::MessageError;
pub use mosquitto::Mosquitto;
pub use proxy::{LinkProxy, LinkQuality};
pub use topics::Topic;
