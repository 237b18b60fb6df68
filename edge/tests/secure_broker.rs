//! A node on Mosquitto configured as a fleet's broker should be: TLS only, a password per
//! robot, and ACLs that let a robot publish only under `lydlr/v1/<its id>/`. The node
//! compresses over TLS and the coordinator (as the operator) sees it; a wrong password, a plain connection and a robot writing under
//! another's name get nowhere; the node accepts a model package only with the operator's
//! signature. Needs `mosquitto`, `mosquitto_passwd` and `openssl` (CI installs them and sets
//! `LYDLR_REQUIRE_MOSQUITTO`, which turns a skip into a failure).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lydlr_bus::messages::{JsonMessage, ModelCommand, ModelState, ModelStatus};
use lydlr_bus::{BrokerUrl, BusClient, BusMessage, ClientOptions, Mosquitto, Topic};
use lydlr_codec::neural::package::{MANIFEST_FILE, SIGNATURE_FILE};
use lydlr_codec::synthetic::imu_frames;
use lydlr_edge::{EdgeConfig, run_node};
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

const ROBOT: &str = "robot-01";
const OTHER: &str = "robot-02";

fn run(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        status.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it, a password per user, and the ACLs.
fn broker_files(dir: &Path) -> String {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(
        dir,
        "openssl",
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=lydlr test CA",
            ],
        ]
        .concat(),
    );
    run(
        dir,
        "openssl",
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    run(
        dir,
        "mosquitto_passwd",
        &["-c", "-b", "passwords", ROBOT, "robot-01-pw"],
    );
    run(
        dir,
        "mosquitto_passwd",
        &["-b", "passwords", OTHER, "robot-02-pw"],
    );
    run(
        dir,
        "mosquitto_passwd",
        &["-b", "passwords", "operator", "operator-pw"],
    );
    // A robot reads and writes its own subtree and reads the fleet's; the operator (and the
    // coordinator, which runs as it) reaches everything.
    std::fs::write(
        dir.join("acl"),
        "user operator\ntopic readwrite lydlr/#\n\n\
         pattern readwrite lydlr/v1/%u/#\npattern read lydlr/v1/fleet/#\n",
    )
    .unwrap();
    // Mosquitto started as root drops to its own user, which must read these.
    #[cfg(unix)]
    for file in ["server.key", "passwords", "acl"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let path = |f: &str| dir.join(f).display().to_string();
    format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
        path("ca.pem"),
        path("server.pem"),
        path("server.key"),
        path("passwords"),
        path("acl")
    )
}

fn url(port: u16, user: &str, password: &str, ca: &Path) -> BrokerUrl {
    format!(
        "mqtts://{user}:{password}@127.0.0.1:{port}?ca={}",
        ca.display()
    )
    .parse()
    .unwrap()
}

async fn wait_connected(client: &BusClient, within: Duration) -> bool {
    let mut connection = client.connection();
    tokio::time::timeout(within, connection.wait_for(|up| *up))
        .await
        .is_ok()
}

/// Messages that arrive within `wait`.
async fn drain(rx: &mut UnboundedReceiver<BusMessage>, wait: Duration) -> Vec<BusMessage> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passwords_acls_and_signed_models_on_mosquitto() {
    let tools = ["openssl", "mosquitto_passwd"]
        .iter()
        .all(|t| Command::new(t).arg("-h").output().is_ok());
    if Mosquitto::binary().is_none() || !tools {
        assert!(
            std::env::var_os("LYDLR_REQUIRE_MOSQUITTO").is_none(),
            "LYDLR_REQUIRE_MOSQUITTO is set but mosquitto, mosquitto_passwd or openssl is missing"
        );
        eprintln!("mosquitto, mosquitto_passwd or openssl missing: skipping");
        return;
    }
    let mosquitto = Mosquitto::start_with(broker_files).unwrap();
    let (port, dir) = (mosquitto.url().port, mosquitto.dir().to_owned());
    let ca = dir.join("ca.pem");

    // The operator watches everything, over TLS.
    let operator_url = url(port, "operator", "operator-pw", &ca);
    let (operator, mut seen) = BusClient::connect(&operator_url, ClientOptions::new("operator"));
    for filter in [
        Topic::all_nodes("compressed/+"),
        Topic::all_nodes("model/status"),
        "lydlr/v1/+/status".to_string(),
    ] {
        operator.subscribe(filter).await.unwrap();
    }
    assert!(wait_connected(&operator, Duration::from_secs(5)).await);

    // A wrong password and a plain connection to the TLS port never get in.
    let (wrong, _) =
        BusClient::connect(&url(port, ROBOT, "guess", &ca), ClientOptions::new("wrong"));
    let (plain, _) = BusClient::connect(&BrokerUrl::loopback(port), ClientOptions::new("plain"));
    assert!(
        !wait_connected(&wrong, Duration::from_secs(2)).await,
        "a wrong password got in"
    );
    assert!(
        !wait_connected(&plain, Duration::from_secs(1)).await,
        "plain MQTT got in"
    );

    // The coordinator runs as the operator, over TLS too.
    let coordinator = lydlr_coordinator::run_coordinator(
        lydlr_coordinator::CoordinatorConfig {
            period_ms: 200,
            ..Default::default()
        },
        &operator_url,
    )
    .await
    .unwrap();
    operator
        .subscribe(Topic::FleetState.to_string())
        .await
        .unwrap();

    // The node, with the operator's key.
    let secret = [42u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
    let robot_url = url(port, ROBOT, "robot-01-pw", &ca);
    let config = EdgeConfig {
        model_keys: vec![lydlr_edge::signing::to_hex(public.as_bytes())],
        ..common::model_node_config(ROBOT, &robot_url, &dir.join("node"))
    };
    let node = run_node(config, &robot_url).await.unwrap();
    let (driver, _) = BusClient::connect(&robot_url, ClientOptions::new("robot-01-driver"));
    common::publish_imu_schema(&driver, ROBOT).await;
    let frames = imu_frames(4_000, 3, 3.0);
    for batch in frames[..400].chunks(20) {
        common::publish_raw(&driver, ROBOT, "imu", batch).await;
    }
    let packets = drain(&mut seen, Duration::from_millis(500)).await;
    assert!(
        packets
            .iter()
            .any(|m| m.topic == Topic::FleetState.to_string()
                && lydlr_bus::messages::FleetState::from_json(&m.payload)
                    .is_ok_and(|f| f.online.contains(&ROBOT.to_string()))),
        "the coordinator did not see the node over TLS"
    );
    assert!(
        packets
            .iter()
            .any(|m| m.topic.starts_with("lydlr/v1/robot-01/compressed/")),
        "no packet came through TLS: {:?}",
        packets.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );

    // robot-02 may not speak for robot-01: its publishes under robot-01's name are dropped.
    let (impostor, _) = BusClient::connect(
        &url(port, OTHER, "robot-02-pw", &ca),
        ClientOptions::new("robot-02"),
    );
    assert!(wait_connected(&impostor, Duration::from_secs(5)).await);
    impostor
        .publish(
            "lydlr/v1/robot-01/status",
            b"{\"v\":1,\"node\":\"robot-01\",\"state\":\"offline\",\"codec\":\"x\"}".to_vec(),
            true,
        )
        .await
        .unwrap();
    impostor
        .publish("lydlr/v1/robot-02/status", b"{}".to_vec(), false)
        .await
        .unwrap();
    let heard = drain(&mut seen, Duration::from_millis(700)).await;
    assert!(
        heard.iter().any(|m| m.topic == "lydlr/v1/robot-02/status"),
        "robot-02 cannot publish even under its own name"
    );
    assert!(
        !heard.iter().any(|m| m.topic == "lydlr/v1/robot-01/status"
            && m.payload.windows(7).any(|w| w == b"offline")),
        "robot-02 published under robot-01's name"
    );

    // An unsigned package is refused and says why; the signed one is taken.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    let mut files: Vec<(String, Vec<u8>)> = common::shipped_files();
    files.retain(|(name, _)| name != SIGNATURE_FILE);
    let deploy = |files: &[(String, Vec<u8>)]| {
        ModelCommand::deploy_files(
            "2026.11.26",
            files.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
        )
        .to_json()
    };
    let deploy_topic = Topic::ModelDeploy { node: ROBOT.into() }.to_string();
    operator
        .publish(&deploy_topic, deploy(&files), false)
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for batch in frames[400..1400].chunks(20) {
        common::publish_raw(&driver, ROBOT, "imu", batch).await;
        statuses.extend(
            drain(&mut seen, Duration::from_millis(1))
                .await
                .into_iter()
                .filter_map(|m| {
                    m.topic
                        .ends_with("/model/status")
                        .then(|| ModelStatus::from_json(&m.payload).ok())
                        .flatten()
                }),
        );
        if statuses.iter().any(|s| s.state != ModelState::Rejected) || statuses.len() > 1 {
            break;
        }
    }
    let refused = statuses
        .iter()
        .find(|s| s.state == ModelState::Rejected)
        .expect("the unsigned package was not refused");
    assert!(refused.reason.contains("unsigned"), "{}", refused.reason);
    let manifest = std::fs::read(shipped.join(MANIFEST_FILE)).unwrap();
    files.push((
        SIGNATURE_FILE.into(),
        lydlr_edge::signing::sign(&manifest, &secret).to_vec(),
    ));
    operator
        .publish(&deploy_topic, deploy(&files), false)
        .await
        .unwrap();
    let mut active = None;
    for batch in frames[1400..].chunks(20) {
        common::publish_raw(&driver, ROBOT, "imu", batch).await;
        active = drain(&mut seen, Duration::from_millis(1))
            .await
            .into_iter()
            .find_map(|m| {
                m.topic
                    .ends_with("/model/status")
                    .then(|| ModelStatus::from_json(&m.payload).ok())
                    .flatten()
                    .filter(|s| s.state == ModelState::Active)
            });
        if active.is_some() {
            break;
        }
    }
    assert!(active.is_some(), "the signed package was not taken");
    node.stop().await.unwrap();
    coordinator.stop().await.unwrap();
}
