//! An external Mosquitto broker on a free loopback port, for tests and fault scenarios that
//! need a real broker process: one that can be killed and started again on the same port.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{BrokerUrl, BusError};

/// A running `mosquitto` process with a generated configuration; killed when dropped.
pub struct Mosquitto {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    /// Where the `mosquitto` binary is installed, if it is.
    pub fn binary() -> Option<PathBuf> {
        [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    }

    /// For tests: a broker, or `None` (with a note) when Mosquitto is not installed. Panics
    /// when it is missing but `LYDLR_REQUIRE_MOSQUITTO` is set, as CI sets it.
    pub fn for_tests() -> Option<Mosquitto> {
        if Self::binary().is_none() {
            assert!(
                std::env::var_os("LYDLR_REQUIRE_MOSQUITTO").is_none(),
                "LYDLR_REQUIRE_MOSQUITTO is set but mosquitto is not installed"
            );
            eprintln!("mosquitto not installed: skipping (install the `mosquitto` package)");
            return None;
        }
        Some(Self::start().expect("mosquitto starts"))
    }

    /// Starts Mosquitto on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Result<Mosquitto, BusError> {
        Self::start_with(|_| "allow_anonymous true\n".to_owned())
    }

    /// Starts Mosquitto with the listener's settings `settings(dir)` returns (TLS files,
    /// authentication, ACLs), `dir` being the broker's own folder for such files.
    pub fn start_with(
        settings: impl FnOnce(&std::path::Path) -> String,
    ) -> Result<Mosquitto, BusError> {
        let binary =
            Self::binary().ok_or_else(|| BusError::Broker("mosquitto is not installed".into()))?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| BusError::Broker(format!("no free loopback port: {e}")))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("lydlr-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| BusError::Broker(format!("{}: {e}", dir.display())))?;
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\npersistence false\n\
                 max_queued_messages 1000000\nmax_inflight_messages 0\n\
                 message_size_limit {}\nlog_dest none\n{}",
                crate::broker::MAX_PAYLOAD,
                settings(&dir),
            ),
        )
        .map_err(|e| BusError::Broker(format!("{}: {e}", dir.display())))?;
        let mut broker = Mosquitto {
            binary,
            child: None,
            port,
            dir,
        };
        broker.restart()?;
        Ok(broker)
    }

    pub fn url(&self) -> BrokerUrl {
        BrokerUrl::loopback(self.port)
    }

    /// A folder that lives as long as the broker, for the caller's files.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Kills the broker, as a crash would: connections drop, retained messages are lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again (killing it first if it runs) on the same port.
    pub fn restart(&mut self) -> Result<(), BusError> {
        self.kill();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BusError::Broker(format!("cannot start mosquitto: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(BusError::Broker(format!(
                    "mosquitto did not listen on {}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
