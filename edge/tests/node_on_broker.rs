//! An edge node and the coordinator on a real broker (the embedded rumqttd).

use std::time::{Duration, Instant};

use lydlr_bus::messages::{FleetState, JsonMessage, NodeMetrics, RawFrames};
use lydlr_bus::{BusClient, BusMessage, ClientOptions, EmbeddedBroker, Topic};
use lydlr_codec::{Frame, StreamSchema, decode_packet};
use lydlr_coordinator::{CoordinatorConfig, run_coordinator};
use lydlr_edge::{EdgeConfig, run_node};
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

fn schema() -> StreamSchema {
    common::wheels_schema(50.0)
}

fn config(node: &str, url: &lydlr_bus::BrokerUrl) -> EdgeConfig {
    EdgeConfig {
        node_id: node.into(),
        broker: url.to_string(),
        metrics_period_ms: 100,
        ..EdgeConfig::default()
    }
}

async fn next_matching<T>(
    rx: &mut UnboundedReceiver<BusMessage>,
    within: Duration,
    mut pick: impl FnMut(&BusMessage) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
        if let Some(found) = pick(&message) {
            return Some(found);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_and_compression_goes_on() {
    let broker = EmbeddedBroker::start().unwrap();
    let url = broker.url();
    let (client, mut rx) = BusClient::connect(&url, ClientOptions::new("test-client"));
    client
        .subscribe(Topic::all_nodes("compressed/+"))
        .await
        .unwrap();
    client.subscribe(Topic::all_nodes("metrics")).await.unwrap();
    let node = run_node(config("r1", &url), &url).await.unwrap();

    let raw = |s: &str| {
        Topic::Raw {
            node: "r1".into(),
            stream: s.into(),
        }
        .to_string()
    };
    let schema_topic = Topic::Schema {
        node: "r1".into(),
        stream: "wheels".into(),
    }
    .to_string();
    let garbage: [(String, Vec<u8>); 5] = [
        (schema_topic.clone(), b"{\"v\":1,\"name\":".to_vec()),
        (raw("wheels"), vec![0xff; 3]),
        (
            raw("wheels"),
            RawFrames::encode(&[Frame::new(0, vec![1.0])], false),
        ),
        (
            Topic::Control { node: "r1".into() }.to_string(),
            b"reboot".to_vec(),
        ),
        (
            Topic::Alloc { node: "r1".into() }.to_string(),
            b"{\"v\":1}".to_vec(),
        ),
    ];
    client
        .publish(schema_topic, schema().to_json(), true)
        .await
        .unwrap();
    // A script that never returns: the node must stop it, disable it and go on.
    let looping = lydlr_bus::messages::ScriptLoad {
        name: "spin".into(),
        order: 0,
        source: Some("fn on_frame(frame) { loop { } }".into()),
        signature: None,
    };
    client
        .publish(
            Topic::ScriptLoad { node: "r1".into() }.to_string(),
            looping.to_json(),
            false,
        )
        .await
        .unwrap();
    let frames: Vec<Frame> = (0..100)
        .map(|i| Frame::new(i * 20_000_000, vec![(i * 13) as f64, (i * 17) as f64]))
        .collect();
    for (i, chunk) in frames.chunks(10).enumerate() {
        let (topic, payload) = &garbage[i % garbage.len()];
        client
            .publish(topic.clone(), payload.clone(), false)
            .await
            .unwrap();
        let last = i == 9;
        client
            .publish(raw("wheels"), RawFrames::encode(chunk, last), false)
            .await
            .unwrap();
    }

    let mut decoded = Vec::new();
    let mut rejected = 0;
    let got_all = next_matching(&mut rx, Duration::from_secs(10), |m| {
        match Topic::parse(&m.topic) {
            Ok(Topic::Compressed { .. }) => {
                decoded.extend(decode_packet(&schema(), &m.payload).unwrap())
            }
            Ok(Topic::Metrics { .. }) => {
                rejected = NodeMetrics::from_json(&m.payload).unwrap().rejected
            }
            _ => {}
        }
        (decoded.len() == frames.len() && rejected >= 10).then_some(())
    })
    .await;
    assert!(
        got_all.is_some(),
        "decoded {} frames, {rejected} rejects seen",
        decoded.len()
    );
    assert!(decoded.iter().zip(&frames).all(|(a, b)| a.bit_eq(b)));
    let last = node.stop().await.unwrap();
    assert_eq!(last.frames_out, 100);
    assert_eq!(last.rejected, 10);
    let spin = last
        .scripts
        .iter()
        .find(|s| s.name == "spin")
        .unwrap_or_else(|| panic!("script not reported: {:?}", last.scripts));
    // Whichever limit comes first stops it: 200,000 operations take about the 5 ms budget
    // in an optimised build.
    assert!(
        !spin.enabled
            && spin
                .error
                .as_deref()
                .is_some_and(|e| e.contains("time budget") || e.contains("Too many operations")),
        "{spin:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_declared_offline_and_a_stopped_one_too() {
    let broker = EmbeddedBroker::start().unwrap();
    let url = broker.url();
    let period_ms = 100;
    let coordinator = run_coordinator(
        CoordinatorConfig {
            period_ms,
            fleet_budget_bps: 1e6,
            offline_after_periods: 3,
            ..CoordinatorConfig::default()
        },
        &url,
    )
    .await
    .unwrap();
    let (client, mut rx) = BusClient::connect(&url, ClientOptions::new("observer"));
    client
        .subscribe(Topic::FleetState.to_string())
        .await
        .unwrap();
    let a = run_node(config("alive", &url), &url).await.unwrap();
    let b = run_node(config("doomed", &url), &url).await.unwrap();
    let c = run_node(config("retired", &url), &url).await.unwrap();

    let state = |m: &BusMessage| FleetState::from_json(&m.payload).ok();
    let all_up = next_matching(&mut rx, Duration::from_secs(5), |m| {
        state(m).filter(|s| s.online.len() == 3)
    })
    .await;
    assert!(all_up.is_some(), "three nodes never online together");

    let killed = Instant::now();
    b.abort();
    c.stop().await.unwrap();
    let down = next_matching(&mut rx, Duration::from_secs(5), |m| {
        state(m).filter(|s| {
            s.offline.contains(&"doomed".to_string()) && s.offline.contains(&"retired".to_string())
        })
    })
    .await
    .expect("killed and stopped nodes never reported offline");
    let detected = killed.elapsed();
    assert!(
        detected <= Duration::from_millis(4 * u64::from(period_ms)),
        "detected after {detected:?}, more than 3 periods and one tick"
    );
    assert_eq!(down.online, vec!["alive".to_string()]);
    a.stop().await.unwrap();
    coordinator.stop().await.unwrap();
}
