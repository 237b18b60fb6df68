//! A node flooded over the fleet's broker with malformed and oversized messages on every
//! topic it listens to there keeps compressing its own stream on time: every frame arrives
//! bit-exact, packets keep coming during the flood, and the rejects are counted in its
//! metrics. (Its sensors publish on the robot's own broker, as on a real robot: a flood on
//! the shared connection would queue the frames behind it, which no node can prevent.)

use std::time::{Duration, Instant};

use lydlr_bus::messages::{JsonMessage, NodeMetrics, RawFrames};
use lydlr_bus::{BusClient, ClientOptions, EmbeddedBroker, Topic};
use lydlr_codec::{Frame, decode_packet};
use lydlr_edge::{EdgeConfig, run_node};

mod common;

const NODE: &str = "r1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_messages_neither_stops_nor_delays_compression() {
    let broker = EmbeddedBroker::start().unwrap();
    let robot_broker = EmbeddedBroker::start().unwrap();
    let url = broker.url();
    let config = EdgeConfig {
        node_id: NODE.into(),
        broker: url.to_string(),
        local_broker: Some(robot_broker.url().to_string()),
        metrics_period_ms: 100,
        spool_dir: std::env::temp_dir()
            .join(format!("lydlr-flood-{}", std::process::id()))
            .display()
            .to_string(),
        ..EdgeConfig::default()
    };
    let (observer, mut seen) = BusClient::connect(&url, ClientOptions::new("observer"));
    observer
        .subscribe(Topic::all_nodes("compressed/+"))
        .await
        .unwrap();
    observer
        .subscribe(Topic::all_nodes("metrics"))
        .await
        .unwrap();
    let node = run_node(config, &url).await.unwrap();
    let schema = common::wheels_schema(50.0);
    let (driver, _) = BusClient::connect(&robot_broker.url(), ClientOptions::new("driver"));
    common::publish_schema(&driver, NODE, &schema).await;

    // The flood: every topic the node listens to, malformed or oversized, as fast as the
    // broker takes it, on its own connection.
    let flood_url = url.clone();
    let flood = tokio::spawn(async move {
        let (flooder, _) = BusClient::connect(&flood_url, ClientOptions::new("flooder"));
        let topics = [
            Topic::Alloc { node: NODE.into() },
            Topic::Control { node: NODE.into() },
            Topic::ModelDeploy { node: NODE.into() },
            Topic::ScriptLoad { node: NODE.into() },
        ]
        .map(|t| t.to_string());
        let oversized = vec![0xA5u8; 3 << 20];
        let wrong_shape = RawFrames::encode(&[Frame::new(0, vec![1.0, 2.0, 3.0])], false);
        let mut sent = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            for (i, topic) in topics.iter().enumerate() {
                let payload = match (sent + i as u64) % 5 {
                    0 => br#"{"v":1,"#.to_vec(),
                    1 => vec![0xff; 64],
                    2 => wrong_shape.clone(),
                    3 if sent.is_multiple_of(50) => oversized.clone(),
                    _ => br#"{"v":1,"action":"explode","command":"reboot"}"#.to_vec(),
                };
                flooder
                    .publish(topic.clone(), payload, false)
                    .await
                    .unwrap();
                sent += 1;
            }
        }
        sent
    });

    // Meanwhile the robot's encoders run at 50 Hz, in real time, for 3 s.
    let frames: Vec<Frame> = (0..150)
        .map(|i| Frame::new(i * 20_000_000, vec![(i * 3) as f64, (i * 5) as f64]))
        .collect();
    let started = Instant::now();
    // Packets are timed as they arrive, while the flood runs.
    // The data takes 3 s; a second more brings the last packet and the metrics counting
    // every reject.
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        let until = tokio::time::Instant::from_std(started + Duration::from_secs(4));
        while let Ok(Some(message)) = tokio::time::timeout_at(until, seen.recv()).await {
            got.push((started.elapsed(), message));
        }
        got
    });
    for (k, batch) in frames.chunks(5).enumerate() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            started + Duration::from_millis(100 * k as u64),
        ))
        .await;
        driver
            .publish(
                Topic::Raw {
                    node: NODE.into(),
                    stream: "wheels".into(),
                }
                .to_string(),
                RawFrames::encode(batch, k == frames.len() / 5 - 1),
                false,
            )
            .await
            .unwrap();
    }
    let flooded = flood.await.unwrap();

    let mut decoded: Vec<Frame> = Vec::new();
    let mut arrivals: Vec<Duration> = Vec::new();
    let mut metrics: Option<NodeMetrics> = None;
    for (at, message) in collector.await.unwrap() {
        match Topic::parse(&message.topic).unwrap() {
            Topic::Compressed { .. } => {
                arrivals.push(at);
                decoded.extend(decode_packet(&schema, &message.payload).unwrap());
            }
            Topic::Metrics { .. } => {
                metrics = Some(NodeMetrics::from_json(&message.payload).unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(decoded.len(), frames.len(), "frames lost under the flood");
    assert!(decoded.iter().zip(&frames).all(|(a, b)| a.bit_eq(b)));
    // On time: packets kept coming while the flood ran (blocks close every second of data).
    let gaps = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        gaps < Duration::from_millis(1_500),
        "a {gaps:?} gap between packets"
    );
    let metrics = metrics.expect("no metrics");
    assert!(flooded > 1_000, "the flood sent only {flooded} messages");
    assert!(
        // The broker bounds each client's queue and drops the excess of a flood this size,
        // so not every message reaches the node (how many depends on the machine's load:
        // 20-60 % measured); of those that do, none is accepted. A tenth proves the flood
        // reached it.
        metrics.rejected >= flooded / 10,
        "{} of {flooded} bad messages counted",
        metrics.rejected
    );
    println!(
        "{flooded} bad messages in 2 s; {} rejects counted; largest gap between packets {gaps:?}",
        metrics.rejected
    );
    node.stop().await.unwrap();
}
