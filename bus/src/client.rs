//! The MQTT client: rumqttc with its event loop polled in a task of its own (publishing from
//! the polling task can deadlock), incoming publishes forwarded on a channel, and the
//! subscriptions restored after every reconnect.
//!
//! Nothing handed to [`BusClient::publish`] is lost to a broker restart: rumqttc drops the
//! unacknowledged publishes of a clean session when it reconnects, so the polling task takes
//! them out first and sends them again, in their order, once the new session is up.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, Request};
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid broker URL {0:?}: expected mqtt://host:port")]
    Url(String),
    #[error("broker: {0}")]
    Broker(String),
    #[error("MQTT client: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// `mqtt://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
}

impl FromStr for BrokerUrl {
    type Err = BusError;
    fn from_str(s: &str) -> Result<Self, BusError> {
        let err = || BusError::Url(s.to_owned());
        let rest = s.strip_prefix("mqtt://").ok_or_else(err)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(err)?;
        if host.is_empty() || host.contains('/') {
            return Err(err());
        }
        Ok(BrokerUrl {
            host: host.to_owned(),
            port: port.parse().map_err(|_| err())?,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// One incoming publish.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retained: bool,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub client_id: String,
    pub keep_alive: Duration,
    /// Topic and payload published (retained) by the broker if this client vanishes.
    pub last_will: Option<(String, Vec<u8>)>,
    /// Capacity of the outgoing request queue; publishing waits when it is full.
    pub queue: usize,
}

impl ClientOptions {
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(5),
            last_will: None,
            queue: 1024,
        }
    }
}

/// A connected MQTT client. Cloning shares the connection; when the last clone is dropped
/// without [`BusClient::disconnect`], the connection closes abruptly and the broker publishes
/// the last will, as it would for a crashed robot.
#[derive(Clone)]
pub struct BusClient {
    client: AsyncClient,
    subscriptions: Arc<Mutex<Vec<String>>>,
    connected: watch::Receiver<bool>,
    _alive: Arc<watch::Sender<()>>,
}

impl BusClient {
    /// Connects (lazily: the event loop connects and reconnects in the background) and
    /// returns the client and the channel of incoming messages. Must run inside a tokio
    /// runtime.
    pub fn connect(
        url: &BrokerUrl,
        options: ClientOptions,
    ) -> (BusClient, mpsc::UnboundedReceiver<BusMessage>) {
        let mut mqtt = MqttOptions::new(options.client_id.clone(), url.host.clone(), url.port);
        // rumqttd drops connections whose keepalive is 0.
        mqtt.set_keep_alive(options.keep_alive.max(Duration::from_secs(1)));
        mqtt.set_max_packet_size(
            crate::broker::MAX_PAYLOAD + 1024,
            crate::broker::MAX_PAYLOAD + 1024,
        );
        mqtt.set_inflight(200);
        mqtt.set_clean_session(true);
        if let Some((topic, payload)) = options.last_will {
            mqtt.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
        }
        let (client, mut eventloop) = AsyncClient::new(mqtt, options.queue);
        let subscriptions: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();

        let resubscribe = (client.clone(), subscriptions.clone());
        let id = options.client_id;
        let (alive, mut alive_rx) = watch::channel(());
        let (connected_tx, connected) = watch::channel(false);
        tokio::spawn(async move {
            // Publishes of a session that broke, to send again in the next one.
            let mut unacknowledged: VecDeque<Request> = VecDeque::new();
            loop {
                let event = tokio::select! {
                    event = eventloop.poll() => event,
                    // Every handle is gone: drop the connection without a goodbye.
                    _ = alive_rx.changed() => break,
                };
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let message = BusMessage {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retained: p.retain,
                        };
                        if tx.send(message).is_err() {
                            // Nobody listens any more, but publishes still need the loop.
                            continue;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let filters = resubscribe.1.lock().map(|s| s.clone()).unwrap_or_default();
                        for filter in filters {
                            eventloop.pending.push_back(Request::Subscribe(
                                rumqttc::Subscribe::new(filter, QoS::AtLeastOnce),
                            ));
                        }
                        // Ahead of everything still in the request channel: order is kept.
                        eventloop.pending.extend(unacknowledged.drain(..));
                        connected_tx.send_replace(true);
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(e) => {
                        connected_tx.send_replace(false);
                        // rumqttc moved the session's unacknowledged publishes (and the requests
                        // not yet read) to `pending`, which a clean session clears on connect.
                        for request in eventloop.pending.drain(..) {
                            if let Request::Publish(mut publish) = request {
                                publish.pkid = 0;
                                unacknowledged.push_back(Request::Publish(publish));
                            }
                        }
                        tracing::debug!(client = %id, "MQTT connection error: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        (
            BusClient {
                client,
                subscriptions,
                connected,
                _alive: Arc::new(alive),
            },
            rx,
        )
    }

    /// Whether the broker has acknowledged the current connection.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Follows the connection: `true` once the broker acknowledges it, `false` when it breaks.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Subscribes now and after every reconnect.
    pub async fn subscribe(&self, filter: impl Into<String>) -> Result<(), BusError> {
        let filter = filter.into();
        if let Ok(mut subs) = self.subscriptions.lock() {
            subs.push(filter.clone());
        }
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        Ok(())
    }

    /// Publishes with at-least-once delivery; waits while the outgoing queue is full.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), BusError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await?;
        Ok(())
    }

    /// Disconnects cleanly (the broker does not publish the last will).
    pub async fn disconnect(&self) -> Result<(), BusError> {
        self.client.disconnect().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_and_reject() {
        let url: BrokerUrl = "mqtt://127.0.0.1:1883".parse().unwrap();
        assert_eq!(url.port, 1883);
        assert_eq!(url.to_string(), "mqtt://127.0.0.1:1883");
        for bad in [
            "127.0.0.1:1883",
            "mqtt://:1883",
            "mqtt://host",
            "mqtt://h:99999",
            "tcp://h:1",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad}");
        }
    }
}
