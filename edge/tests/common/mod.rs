//! What the node's integration tests share.
// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::time::Duration;

use lydlr_bus::messages::RawFrames;
use lydlr_bus::{BusClient, Topic};
use lydlr_codec::{Frame, SampleType, SensorKind, StreamSchema};

/// Publishes a batch of raw frames of `node`'s `stream`, then gives the node a moment.
pub async fn publish_raw(client: &BusClient, node: &str, stream: &str, frames: &[Frame]) {
    let topic = Topic::Raw {
        node: node.into(),
        stream: stream.into(),
    };
    client
        .publish(topic.to_string(), RawFrames::encode(frames, false), false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// Two wheel encoders counting ticks at `rate_hz`.
pub fn wheels_schema(rate_hz: f64) -> StreamSchema {
    StreamSchema {
        name: "wheels".into(),
        kind: SensorKind::WheelEncoder,
        sample_type: SampleType::I64,
        channels: vec!["left".into(), "right".into()],
        units: vec!["tick".into(), "tick".into()],
        rate_hz,
        noise_sigma: vec![0.5, 0.5],
        lsb: vec![Some(1.0), Some(1.0)],
    }
}
