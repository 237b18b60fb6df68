//! The quickstart against a real external broker: Mosquitto, started on a free loopback port
//! with a generated configuration. CI installs Mosquitto and sets `LYDLR_REQUIRE_MOSQUITTO=1`,
//! so there the test fails rather than skips when the broker is missing.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lydlr_bus::BrokerUrl;
use lydlr_experiments::{RunOptions, Scenario, run_scenario};

struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mosquitto_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn start_mosquitto() -> Option<Mosquitto> {
    let Some(binary) = mosquitto_binary() else {
        assert!(
            std::env::var_os("LYDLR_REQUIRE_MOSQUITTO").is_none(),
            "LYDLR_REQUIRE_MOSQUITTO is set but mosquitto is not installed"
        );
        eprintln!("mosquitto not installed: skipping (install the `mosquitto` package)");
        return None;
    };
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("lydlr-mosquitto-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 1000000\nmax_inflight_messages 0\nlog_dest none\n"
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let broker = Mosquitto { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(broker)
}

#[test]
fn quickstart_runs_bit_exact_on_mosquitto() {
    let Some(mosquitto) = start_mosquitto() else {
        return;
    };
    let scenario =
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quickstart.toml"))
            .unwrap();
    let out = mosquitto.dir.join("run");
    let options = RunOptions {
        out_dir: Some(out),
        broker: Some(BrokerUrl {
            host: "127.0.0.1".into(),
            port: mosquitto.port,
        }),
        duration_s: Some(2.0),
        progress: false,
        ..RunOptions::default()
    };
    let report = run_scenario(&scenario, &options).unwrap();
    assert_eq!(report.produced, 4 * 2 * 310);
    assert!(report.all_bit_exact(), "{report:#?}");
    assert!(report.broker.ends_with(&format!(":{}", mosquitto.port)));
}
