//! A TCP link between a client and its broker that can be cut, restored, pointed at another
//! broker, and given a radio's latency and losses, to emulate a robot's uplink without touching
//! the broker.
//!
//! Loss on a TCP link does not drop bytes: the segment is sent again after a retransmission
//! timeout and everything behind it waits (head-of-line blocking). That is what this proxy
//! emulates: each chunk it forwards is held for the link's latency (plus uniform jitter) and,
//! with the loss probability, for one retransmission timeout more, in order.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::{BrokerUrl, BusError};

/// How the link behaves; the default is a perfect wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkQuality {
    /// One-way delay added to every chunk, each direction.
    pub latency: Duration,
    /// Extra delay, uniform in `[0, jitter)`, per chunk (order is kept).
    pub jitter: Duration,
    /// Probability that a chunk is lost once and arrives a retransmission timeout late.
    pub loss: f64,
    /// TCP's retransmission timeout (200 ms is Linux's minimum).
    pub retransmission_timeout: Duration,
    /// Seeds the jitter and loss draws, so a run repeats.
    pub seed: u64,
}

impl Default for LinkQuality {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            retransmission_timeout: Duration::from_millis(200),
            seed: 0,
        }
    }
}

impl LinkQuality {
    fn is_perfect(&self) -> bool {
        self.latency.is_zero() && self.jitter.is_zero() && self.loss <= 0.0
    }
}

/// Forwards every connection on its own loopback port to the broker while the link is up.
/// Cutting it closes the live connections and refuses new ones until it is restored.
pub struct LinkProxy {
    port: u16,
    up: Arc<watch::Sender<bool>>,
    target: Arc<Mutex<String>>,
    upstream: BrokerUrl,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `upstream` over a perfect link.
    pub async fn start(upstream: &BrokerUrl) -> Result<LinkProxy, BusError> {
        Self::with_quality(upstream, LinkQuality::default()).await
    }

    /// Listens on a free port of 127.0.0.1, forwarding to `upstream` over a link of `quality`.
    pub async fn with_quality(
        upstream: &BrokerUrl,
        quality: LinkQuality,
    ) -> Result<LinkProxy, BusError> {
        if !(0.0..=1.0).contains(&quality.loss) {
            return Err(BusError::Broker(format!(
                "proxy: loss {} is not a probability",
                quality.loss
            )));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| BusError::Broker(format!("proxy: no free loopback port: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| BusError::Broker(format!("proxy: {e}")))?
            .port();
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let target = Arc::new(Mutex::new(address(upstream)));
        let (link, to) = (up.clone(), target.clone());
        let task = tokio::spawn(async move {
            let mut connection = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                if !*link.borrow() {
                    continue;
                }
                connection += 1;
                let target = to.lock().map(|t| t.clone()).unwrap_or_default();
                let mut quality = quality;
                quality.seed = quality.seed.wrapping_add(connection.wrapping_mul(0x9E37));
                tokio::spawn(forward(client, target, link.subscribe(), quality));
            }
        });
        Ok(LinkProxy {
            port,
            up,
            target,
            upstream: upstream.clone(),
            task,
        })
    }

    /// The proxy's address, with the upstream broker's credentials and TLS settings (TLS
    /// runs end to end through it).
    pub fn url(&self) -> BrokerUrl {
        self.upstream
            .at(&Ipv4Addr::LOCALHOST.to_string(), self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Drops every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// New connections go to `upstream` (a broker that replaced the old one).
    pub fn retarget(&self, upstream: &BrokerUrl) {
        if let Ok(mut target) = self.target.lock() {
            *target = address(upstream);
        }
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

fn address(url: &BrokerUrl) -> String {
    format!("{}:{}", url.host, url.port)
}

async fn forward(
    mut client: TcpStream,
    target: String,
    mut up: watch::Receiver<bool>,
    quality: LinkQuality,
) {
    let Ok(mut broker) = TcpStream::connect(&target).await else {
        return;
    };
    if quality.is_perfect() {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
            _ = up.wait_for(|up| !*up) => {}
        }
        return;
    }
    let (client_read, client_write) = client.into_split();
    let (broker_read, broker_write) = broker.into_split();
    let uplink = pump(client_read, broker_write, quality, 1);
    let downlink = pump(broker_read, client_write, quality, 2);
    tokio::select! {
        _ = uplink => {}
        _ = downlink => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}

/// One direction of an impaired link: chunks are read as they come and written when due.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    quality: LinkQuality,
    direction: u64,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut rng = SplitMix(quality.seed ^ direction.wrapping_mul(0xA24B_AED4_963E_E407));
        let mut last_due = Instant::now();
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut delay = quality.latency + quality.jitter.mul_f64(rng.uniform());
            if rng.uniform() < quality.loss {
                delay += quality.retransmission_timeout;
            }
            // A stream keeps its order: nothing overtakes a chunk held for a retransmission.
            last_due = last_due.max(Instant::now() + delay);
            if tx.send((last_due, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    // The writer finishes what the reader queued before the connection closed.
    let (_, ()) = tokio::join!(reader, writer);
}

/// A small deterministic generator: the proxy needs repeatable draws, not a crypto RNG.
struct SplitMix(u64);

impl SplitMix {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind an impaired proxy: every byte comes back, in order, no sooner
    /// than twice the latency.
    #[tokio::test]
    async fn an_impaired_link_delays_but_keeps_every_byte_in_order() {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = server.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let upstream = BrokerUrl::loopback(port);
        let quality = LinkQuality {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            loss: 0.2,
            retransmission_timeout: Duration::from_millis(30),
            seed: 7,
        };
        let proxy = LinkProxy::with_quality(&upstream, quality).await.unwrap();
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        let sent: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let started = std::time::Instant::now();
        let (mut r, mut w) = socket.split();
        let write = async {
            for chunk in sent.chunks(500) {
                w.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let mut received = vec![0u8; sent.len()];
        let read = r.read_exact(&mut received);
        let (_, read) = tokio::join!(write, read);
        read.unwrap();
        assert_eq!(received, sent);
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert!(
            LinkProxy::with_quality(
                &upstream,
                LinkQuality {
                    loss: 1.5,
                    ..quality
                }
            )
            .await
            .is_err()
        );
    }
}
