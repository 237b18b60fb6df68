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

/// Where a broker is and how to reach it:
/// `mqtt[s]://[user[:password]@]host:port[?ca=/path/to/ca.pem]`.
///
/// `mqtts` is TLS (rustls): the broker's certificate is verified against the CA file, or the
/// system's roots without one. A user name without a password in the URL takes the password
/// from `LYDLR_MQTT_PASSWORD`, so that it need not appear in a command line. The password is
/// never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
}

impl BrokerUrl {
    /// Checks what can be checked before connecting: the CA file of a TLS URL.
    pub fn check(&self) -> Result<(), BusError> {
        if self.tls {
            tls_config(self)?;
        }
        Ok(())
    }

    /// A plain broker on this machine's loopback interface.
    pub fn loopback(port: u16) -> BrokerUrl {
        BrokerUrl {
            host: std::net::Ipv4Addr::LOCALHOST.to_string(),
            port,
            ..BrokerUrl::default()
        }
    }

    /// The same credentials and TLS settings, at another address (a proxy in front of it).
    pub fn at(&self, host: &str, port: u16) -> BrokerUrl {
        BrokerUrl {
            host: host.to_owned(),
            port,
            ..self.clone()
        }
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

impl FromStr for BrokerUrl {
    type Err = BusError;
    fn from_str(s: &str) -> Result<Self, BusError> {
        let err = || BusError::Url(redact(s));
        let (tls, rest) = match (s.strip_prefix("mqtt://"), s.strip_prefix("mqtts://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(err()),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (user, address) = match rest.rsplit_once('@') {
            Some((user, address)) => (Some(user), address),
            None => (None, rest),
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(err)?;
        if host.is_empty() || host.contains('/') {
            return Err(err());
        }
        let (username, password) = match user {
            Some(user) => {
                let (name, password) = match user.split_once(':') {
                    Some((name, password)) => (name, Some(password.to_owned())),
                    None => (user, std::env::var("LYDLR_MQTT_PASSWORD").ok()),
                };
                if name.is_empty() {
                    return Err(err());
                }
                (Some(name.to_owned()), password)
            }
            None => (None, None),
        };
        let mut ca_file = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("ca", path)) if !path.is_empty() => ca_file = Some(path.into()),
                _ => return Err(err()),
            }
        }
        Ok(BrokerUrl {
            host: host.to_owned(),
            port: port.parse().map_err(|_| err())?,
            tls,
            username,
            password,
            ca_file,
        })
    }
}

/// The URL with any password left out, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (user, address) = rest.rsplit_once('@')?;
        let name = user.split_once(':').map_or(user, |(name, _)| name);
        Some(format!("{scheme}://{name}@{address}"))
    }) {
        Some(redacted) => redacted,
        None => url.to_owned(),
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if let Some(ca) = &self.ca_file {
            write!(f, "?ca={}", ca.display())?;
        }
        Ok(())
    }
}

/// A rustls client configuration that trusts `ca_file`'s certificates, or the system's roots.
fn tls_config(url: &BrokerUrl) -> Result<Arc<rustls::ClientConfig>, BusError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let fail = |m: String| BusError::Broker(format!("TLS for {url}: {m}"));
    let mut roots = rustls::RootCertStore::empty();
    match &url.ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(fail(format!("{} holds no certificate", path.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
    /// Ask the broker to keep this client's subscriptions and queue its messages while it
    /// is away (MQTT `clean session` off), so that a restarted client gets what it missed,
    /// up to the broker's queue bound.
    pub persistent_session: bool,
}

impl ClientOptions {
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(5),
            last_will: None,
            queue: 1024,
            persistent_session: false,
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
        mqtt.set_clean_session(!options.persistent_session);
        if let Some(user) = &url.username {
            mqtt.set_credentials(user.clone(), url.password.clone().unwrap_or_default());
        }
        if url.tls {
            let config = tls_config(url).unwrap_or_else(|e| {
                // Fail closed: a configuration that trusts nothing never connects.
                tracing::error!("{e}");
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
            });
            mqtt.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(config),
            ));
        }
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
            "mqtt://@h:1",
            "mqtts://h:1?cert=x",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_and_tls_parse_and_the_password_is_never_printed() {
        let url: BrokerUrl = "mqtts://robot-07:s3cret@fleet.example:8883?ca=/etc/lydlr/ca.pem"
            .parse()
            .unwrap();
        assert!(url.tls);
        assert_eq!(
            (url.username.as_deref(), url.password.as_deref()),
            (Some("robot-07"), Some("s3cret"))
        );
        assert_eq!(
            url.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/lydlr/ca.pem"))
        );
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            url.to_string().parse::<BrokerUrl>().unwrap().ca_file,
            url.ca_file
        );
        let err = "mqtt://robot-07:s3cret@host"
            .parse::<BrokerUrl>()
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        // A CA file that is not there is an error before any connection.
        let missing: BrokerUrl = "mqtts://h:8883?ca=/nonexistent/ca.pem".parse().unwrap();
        assert!(missing.check().is_err());
    }
}
