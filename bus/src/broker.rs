//! The embedded MQTT broker: rumqttd on a free loopback port, in its own threads.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::client::{BrokerUrl, BusError};

/// Largest MQTT payload the embedded broker accepts (a 360-beam lidar block fits easily).
pub const MAX_PAYLOAD: usize = 4 << 20;

/// A running rumqttd broker. rumqttd has no shutdown; the broker lives until the process ends,
/// which is what both the CLI and the tests want.
pub struct EmbeddedBroker {
    port: u16,
}

impl EmbeddedBroker {
    /// Starts a broker on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Result<EmbeddedBroker, BusError> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| BusError::Broker(format!("no free loopback port: {e}")))?
            .port();
        Self::start_on(port)
    }

    /// Starts a broker on the given loopback port.
    pub fn start_on(port: u16) -> Result<EmbeddedBroker, BusError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config = serde_json::json!({
            "id": 0,
            "router": {
                "max_connections": 10010,
                "max_outgoing_packet_count": 1000,
                "max_segment_size": 16 << 20,
                "max_segment_count": 4,
            },
            "v4": { "1": {
                "name": "lydlr-embedded",
                "listen": addr.to_string(),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 10000,
                    "max_payload_size": MAX_PAYLOAD,
                    "max_inflight_count": 1000,
                    "dynamic_filters": true,
                },
            }},
        });
        let config: rumqttd::Config = serde_json::from_value(config)
            .map_err(|e| BusError::Broker(format!("broker config: {e}")))?;
        std::thread::Builder::new()
            .name("lydlr-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!("embedded broker stopped: {e}");
                }
            })
            .map_err(|e| BusError::Broker(format!("cannot spawn broker thread: {e}")))?;

        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(BusError::Broker(format!("broker did not listen on {addr}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(EmbeddedBroker { port })
    }

    pub fn url(&self) -> BrokerUrl {
        BrokerUrl::loopback(self.port)
    }
}
