//! A TCP link between a client and its broker that can be cut and restored, to emulate a
//! robot losing its uplink without touching the broker.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::client::{BrokerUrl, BusError};

/// Forwards every connection on its own loopback port to the broker while the link is up.
/// Cutting it closes the live connections and refuses new ones until it is restored.
pub struct LinkProxy {
    port: u16,
    up: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `upstream`.
    pub async fn start(upstream: &BrokerUrl) -> Result<LinkProxy, BusError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| BusError::Broker(format!("proxy: no free loopback port: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| BusError::Broker(format!("proxy: {e}")))?
            .port();
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let target = format!("{}:{}", upstream.host, upstream.port);
        let link = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*link.borrow() {
                    continue;
                }
                tokio::spawn(forward(client, target.clone(), link.subscribe()));
            }
        });
        Ok(LinkProxy { port, up, task })
    }

    pub fn url(&self) -> BrokerUrl {
        BrokerUrl {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: self.port,
        }
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
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, target: String, mut up: watch::Receiver<bool>) {
    let Ok(mut broker) = TcpStream::connect(&target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}
