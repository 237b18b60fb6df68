//! The quickstart scenario, shortened, run in-process on the embedded broker.

use std::path::{Path, PathBuf};

use lydlr_experiments::{RunOptions, RunReport, Scenario, run_scenario};
use polars::prelude::*;

fn scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quickstart.toml");
    Scenario::load(&path).expect("quickstart.toml parses")
}

fn run_into(dir: &Path, seconds: f64) -> RunReport {
    let options = RunOptions {
        out_dir: Some(dir.to_path_buf()),
        duration_s: Some(seconds),
        progress: false,
        ..RunOptions::default()
    };
    run_scenario(&scenario(), &options).expect("run succeeds")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lydlr-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn every_frame_arrives_bit_exact_and_the_outputs_are_written() {
    let dir = temp_dir("quickstart");
    let report = run_into(&dir, 3.0);

    // 4 robots x 3 s x (200 + 50 + 50 + 10) Hz.
    assert_eq!(report.produced, 4 * 3 * 310);
    assert!(report.all_bit_exact(), "{report:#?}");
    for row in &report.rows {
        assert_eq!(row.frames_delivered, row.frames_produced, "{row:?}");
        assert!(row.ratio > 1.5, "{row:?}");
    }

    let summary = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(dir.join("summary.csv")))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(summary.height(), 4 * 4 + 1);
    let lost = summary
        .column("frames_lost")
        .unwrap()
        .as_materialized_series()
        .sum::<u64>()
        .unwrap();
    assert_eq!(lost, 0);

    let metrics = ParquetReader::new(std::fs::File::open(dir.join("metrics.parquet")).unwrap())
        .finish()
        .unwrap();
    // At least one report per node and stream per simulated second.
    assert!(
        metrics.height() >= 4 * 3 * 3,
        "{} metric rows",
        metrics.height()
    );

    let rrd = std::fs::read(dir.join("recording.rrd")).unwrap();
    assert!(
        rrd.len() > 10_000 && rrd.starts_with(b"RRF2"),
        "rrd of {} bytes",
        rrd.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_same_seed_gives_the_same_results() {
    let (a_dir, b_dir) = (temp_dir("det-a"), temp_dir("det-b"));
    let a = run_into(&a_dir, 2.0);
    let b = run_into(&b_dir, 2.0);
    let key = |r: &RunReport| {
        r.rows
            .iter()
            .map(|row| {
                (
                    row.node.clone(),
                    row.stream.clone(),
                    row.frames_produced,
                    row.raw_bytes,
                    row.compressed_bytes,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b));
    std::fs::remove_dir_all(&a_dir).unwrap();
    std::fs::remove_dir_all(&b_dir).unwrap();
}
