//! Recordings replayed as robots through the live pipeline (`[replay]`, the `sim_to_real`
//! scenario): every sample of every recording arrives, at its own irregular timestamp,
//! within its contract. Runs on written recordings everywhere, and on the real ones in
//! ../shared/data where they are present.

use std::path::{Path, PathBuf};

use lydlr_experiments::{RunOptions, RunReport, Scenario, run_scenario};

fn sim_to_real() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/sim_to_real.toml");
    let mut scenario = Scenario::load(&path).unwrap();
    scenario.run.realtime = false;
    scenario.run.rerun = false;
    scenario
}

fn replay(scenario: &Scenario, name: &str) -> RunReport {
    let dir = std::env::temp_dir().join(format!("lydlr-replay-{name}-{}", std::process::id()));
    let options = RunOptions {
        out_dir: Some(dir.clone()),
        duration_s: Some(3.0),
        progress: false,
        ..RunOptions::default()
    };
    let report = run_scenario(scenario, &options).unwrap();
    if scenario.run.rerun {
        // The replayed signals and what the sink decoded, in a Rerun file.
        let rrd = std::fs::read(dir.join("recording.rrd")).unwrap();
        assert!(
            rrd.len() > 10_000 && rrd.starts_with(b"RRF2"),
            "rrd of {} bytes",
            rrd.len()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    report
}

/// A 3-axis sensor at about `rate_hz` with timestamp jitter and, every 97 samples, a dropped
/// one; values printed with 6 decimals, as loggers write them.
fn write_recording(path: &Path, rate_hz: f64, seed: u64) -> usize {
    let mut text = String::from("t,x,y,z\n");
    let mut state = seed;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut rows = 0;
    for i in 0..(4.0 * rate_hz) as usize {
        if i % 97 == 96 {
            continue;
        }
        let t = (i as f64 + 0.2 * noise()) / rate_hz;
        let phase = t * 2.0;
        text.push_str(&format!(
            "{:.6},{:.6},{:.6},{:.6}\n",
            t.max(0.0),
            phase.sin() + 0.01 * noise(),
            phase.cos() + 0.01 * noise(),
            9.81 + 0.02 * noise()
        ));
        if t <= 3.0 {
            rows += 1;
        }
    }
    std::fs::write(path, text).unwrap();
    rows
}

#[test]
fn written_recordings_replay_as_robots_and_every_sample_arrives() {
    let dir = std::env::temp_dir().join(format!("lydlr-recordings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = vec![dir.join("arm_imu.csv"), dir.join("cart imu.csv")];
    let rows = [
        write_recording(&files[0], 250.0, 1),
        write_recording(&files[1], 90.0, 2),
    ];
    let mut scenario = sim_to_real();
    scenario.run.rerun = true;
    scenario.replay.as_mut().unwrap().files =
        files.iter().map(|f| f.display().to_string()).collect();
    let report = replay(&scenario, "written");
    assert!(report.all_delivered_within_bounds(), "{report:#?}");
    let produced: Vec<(String, String, u64)> = report
        .rows
        .iter()
        .filter(|r| r.node != "TOTAL")
        .map(|r| (r.node.clone(), r.stream.clone(), r.frames_produced))
        .collect();
    // One robot per recording, its stream named after the file (made topic-safe).
    assert_eq!(
        produced,
        [
            ("real-00".into(), "arm_imu".into(), rows[0] as u64),
            ("real-01".into(), "cart_imu".into(), rows[1] as u64),
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_real_recordings_replay_within_their_bounds() {
    let scenario = sim_to_real();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = scenario.replay.as_ref().unwrap().files.clone();
    if !files.iter().all(|f| root.join(f).exists()) {
        eprintln!("../shared/data is not here: skipping the real recordings");
        return;
    }
    let mut scenario = scenario;
    scenario.replay.as_mut().unwrap().files = files
        .iter()
        .map(|f| root.join(f).display().to_string())
        .collect();
    let report = replay(&scenario, "real");
    assert!(report.all_delivered_within_bounds(), "{report:#?}");
    assert!(report.produced > 1000);
}
