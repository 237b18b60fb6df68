//! The shipped model package (models/default) on freshly simulated streams: it loads, every
//! stream round-trips within its bound (bit-exact when lossless), and the trained models beat
//! the classical bounded codec where the package says they do.

use std::path::Path;

use lydlr_codec::{BoundedCodec, Codec, ErrorBound, Frame, NeuralCodec};
use lydlr_experiments::eval::{Bound, read_tables, run_eval};
use lydlr_experiments::export::{ExportFormat, export};
use lydlr_learn::package::read_package;
use lydlr_sim::{LidarConfig, SimConfig, Swarm};
use std::sync::Arc;
use std::time::Duration;

fn package_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default")
}

fn sim_config() -> SimConfig {
    let mut config = SimConfig {
        seed: 4242,
        duration_s: 8.0,
        ..SimConfig::default()
    };
    config.robots.count = 1;
    config.sensors.lidar = Some(LidarConfig::default());
    config
}

#[test]
fn the_default_package_codes_every_stream_within_its_bound_and_beats_the_classical_codec() {
    let package = read_package(&package_dir()).unwrap();
    let mut swarm = Swarm::new(&sim_config()).unwrap();
    let schemas = swarm.schemas();
    let streams = swarm.streams();
    let mut frames: Vec<Vec<Frame>> = vec![Vec::new(); streams.len()];
    for _ in 0..swarm.total_steps() {
        swarm.step();
        for sf in swarm.drain_frames() {
            let slot = streams.iter().position(|s| *s == sf.stream).unwrap();
            frames[slot].push(sf.frame);
        }
    }
    let mut covered = Vec::new();
    let all = &frames;
    for (schema, frames) in schemas.iter().zip(all) {
        let Some(model) = package.model_for(schema) else {
            continue;
        };
        covered.push(schema.name.clone());
        let merged =
            lydlr_experiments::bench::conditions_for(&model.shape.conditions, &schemas, all);
        assert_eq!(merged.is_some(), !model.shape.conditions.is_empty());
        let condition = merged.as_deref();
        for k in [0.0, 1.0, 4.0] {
            let bound = ErrorBound::Sigma(k);
            let codec = NeuralCodec::new(model.clone(), bound, 1);
            let eb = bound.per_channel(schema, frames);
            let block = (schema.rate_hz as usize).max(1);
            let (mut neural, mut classical) = (0usize, 0usize);
            for chunk in frames.chunks(block) {
                let cond = condition;
                let packet = codec.encode_conditioned(schema, chunk, cond).unwrap();
                let bytes = packet.to_bytes();
                let back = codec
                    .decode_conditioned(
                        schema,
                        &lydlr_codec::Packet::from_bytes(&bytes).unwrap(),
                        cond,
                    )
                    .unwrap();
                for (a, b) in chunk.iter().zip(&back) {
                    assert_eq!(a.timestamp_ns, b.timestamp_ns);
                    for (c, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
                        if k == 0.0 {
                            assert_eq!(x.to_bits(), y.to_bits(), "{} lossless", schema.name);
                        } else {
                            assert!((x - y).abs() <= eb[c], "{}: {x} vs {y}", schema.name);
                        }
                    }
                }
                neural += bytes.len();
                classical += BoundedCodec::new(bound)
                    .encode(schema, chunk)
                    .unwrap()
                    .len();
            }
            if k == 1.0 && matches!(schema.name.as_str(), "imu" | "lidar") {
                assert!(
                    (neural as f64) < 0.9 * classical as f64,
                    "{}: neural {neural} bytes, classical {classical}",
                    schema.name
                );
            }
        }
    }
    assert_eq!(covered, ["imu", "wheels", "motors", "battery", "lidar"]);
}

#[test]
fn eval_runs_the_neural_codec_from_a_package() {
    let dir = std::env::temp_dir().join(format!("lydlr-neural-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    export(&sim_config(), &dir, ExportFormat::Csv, None, false).unwrap();
    let tables = read_tables(&dir.join("robot-00/imu.csv")).unwrap();
    let package = Arc::new(read_package(&package_dir()).unwrap());
    let lines = run_eval(
        &tables,
        Some("neural"),
        Some(Bound::Sigma(1.0)),
        1000,
        Some(package),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].codec, "neural");
    assert!(lines[0].ratio > 1.0);
    // Without a package the codec is named but cannot run.
    assert!(
        run_eval(
            &tables,
            Some("neural"),
            Some(Bound::Sigma(1.0)),
            1000,
            None,
            Duration::ZERO
        )
        .is_err()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The quickstart with the shipped package on every node: the IMU is coded by its model
/// (smaller than classically) and every frame still arrives bit-exact.
#[test]
fn the_live_pipeline_codes_the_imu_with_the_shipped_model() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let imu_bytes = |scenario: &str| {
        let scenario = lydlr_experiments::Scenario::load(&root.join("scenarios").join(scenario))
            .expect("scenario parses");
        let dir = std::env::temp_dir().join(format!(
            "lydlr-test-{}-{}",
            scenario.name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // The package path in the scenario is relative to the repository root.
        let mut scenario = scenario;
        if let Some(model) = &scenario.edge.model {
            scenario.edge.model = Some(root.join(model).display().to_string());
        }
        let options = lydlr_experiments::RunOptions {
            out_dir: Some(dir.clone()),
            duration_s: Some(4.0),
            progress: false,
            ..lydlr_experiments::RunOptions::default()
        };
        let report = lydlr_experiments::run_scenario(&scenario, &options).expect("run succeeds");
        assert!(report.all_bit_exact(), "{report:#?}");
        let _ = std::fs::remove_dir_all(&dir);
        report
            .rows
            .iter()
            .filter(|r| r.stream == "imu")
            .map(|r| r.compressed_bytes)
            .sum::<u64>()
    };
    let classical = imu_bytes("quickstart.toml");
    let learned = imu_bytes("quickstart_neural.toml");
    assert!(
        (learned as f64) < classical as f64 * 0.97,
        "IMU: {learned} bytes with the model, {classical} without"
    );
}
