//! What the node's integration tests share.
// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lydlr_bus::messages::{JsonMessage, RawFrames};
use lydlr_bus::{BusClient, Topic};
use lydlr_codec::neural::package::{
    MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ModelEntry, TrainingRecord,
};
use lydlr_codec::neural::untrained_model;
use lydlr_codec::synthetic::imu_schema;
use lydlr_codec::{Frame, SampleType, SensorKind, StreamSchema, sha256_hex};

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

/// A node that takes model deployments into `work`, with a short health window for tests on
/// the synthetic IMU (the shipped models were trained on the simulator, hence the size
/// tolerance).
pub fn model_node_config(
    node: &str,
    url: &lydlr_bus::BrokerUrl,
    work: &Path,
) -> lydlr_edge::EdgeConfig {
    lydlr_edge::EdgeConfig {
        node_id: node.into(),
        broker: url.to_string(),
        models_dir: work.join("models").display().to_string(),
        spool_dir: work.join("spool").display().to_string(),
        health_blocks: 12,
        // Measured in CPU time: the shipped IMU model 205-324 us per block (a debug build,
        // also with three busy loops on two cores), the 700-unit untrained one 2.1-2.6 ms.
        latency_budget_us: 800.0,
        health_max_size_ratio: 1.25,
        ..lydlr_edge::EdgeConfig::default()
    }
}

/// Announces one of `node`'s streams (retained), as its driver would.
pub async fn publish_schema(client: &BusClient, node: &str, schema: &StreamSchema) {
    let topic = Topic::Schema {
        node: node.into(),
        stream: schema.name.clone(),
    };
    client
        .publish(topic.to_string(), schema.to_json(), true)
        .await
        .unwrap();
}

/// Announces `node`'s IMU under the channel names the shipped models know.
pub async fn publish_imu_schema(client: &BusClient, node: &str) {
    publish_schema(client, node, &imu_model_schema()).await;
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

/// The synthetic IMU under the channel names the shipped models were trained with.
pub fn imu_model_schema() -> StreamSchema {
    let mut schema = imu_schema();
    schema.channels = [
        "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z",
    ]
    .map(String::from)
    .to_vec();
    schema
}

pub fn shipped_files() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// A valid package with an untrained model of `hidden` units for `schema`'s stream.
pub fn untrained_package(
    version: &str,
    schema: &StreamSchema,
    hidden: usize,
) -> Vec<(String, Vec<u8>)> {
    let model = untrained_model(schema, 8, hidden, 11);
    let weights = model.to_burnpack();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        version: version.into(),
        training: TrainingRecord {
            command: "untrained".into(),
            data_sha256: String::new(),
            seeds: Vec::new(),
            frames: 0,
        },
        models: vec![ModelEntry {
            stream: schema.name.clone(),
            kind: "imu".into(),
            schema_hash: format!("{:016x}", schema.hash()),
            channels: schema.channels.clone(),
            conditions: model.shape.conditions.clone(),
            quality_sigmas: vec![0.0],
            weights: "imu.bpk".into(),
            sha256: sha256_hex(&weights),
            fingerprint: format!("{:016x}", model.fingerprint),
            metrics: BTreeMap::new(),
        }],
    };
    vec![
        (
            MANIFEST_FILE.into(),
            toml::to_string(&manifest).unwrap().into_bytes(),
        ),
        ("imu.bpk".into(), weights),
    ]
}
