//! `lydlr sim`: the same scenario and seed give byte-identical files, in every format.

use std::path::{Path, PathBuf};

use lydlr_experiments::Scenario;
use lydlr_experiments::export::{ExportFormat, export};

fn config(seed: u64) -> lydlr_sim::SimConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quickstart.toml");
    let mut sim = Scenario::load(&path).unwrap().sim;
    sim.duration_s = 1.5;
    sim.seed = seed;
    sim.sensors.lidar = Some(lydlr_sim::LidarConfig::default());
    sim
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

fn export_to(tag: &str, format: ExportFormat, seed: u64) -> PathBuf {
    let root = std::env::temp_dir().join(format!("lydlr-export-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let out = if format == ExportFormat::Mcap {
        root.join("run.mcap")
    } else {
        root.clone()
    };
    export(&config(seed), &out, format, None, false).unwrap();
    root
}

#[test]
fn exports_are_byte_identical_per_seed() {
    for (name, format) in [
        ("csv", ExportFormat::Csv),
        ("parquet", ExportFormat::Parquet),
        ("mcap", ExportFormat::Mcap),
    ] {
        let a = export_to(&format!("{name}-a"), format, 3);
        let b = export_to(&format!("{name}-b"), format, 3);
        let c = export_to(&format!("{name}-c"), format, 4);
        let files = files_under(&a);
        assert_eq!(files, files_under(&b));
        // 4 robots x (imu, wheels, motors, battery, lidar, pose), or one MCAP file.
        assert_eq!(
            files.len(),
            if format == ExportFormat::Mcap { 1 } else { 24 },
            "{name}"
        );
        let mut differs = false;
        for f in &files {
            let (x, y) = (
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
            );
            assert!(
                x == y,
                "{name}: {} differs between runs of one seed",
                f.display()
            );
            differs |= std::fs::read(c.join(f)).map_or(true, |z| z != x);
        }
        assert!(differs, "{name}: another seed gave the same files");
        for dir in [a, b, c] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

#[test]
fn csv_follows_the_external_data_contract() {
    let root = export_to("contract", ExportFormat::Csv, 5);
    let text = std::fs::read_to_string(root.join("robot-01/imu.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "t,accel_x,accel_y,accel_z,gyro_x,gyro_y,gyro_z"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|r| r.len() == 7));
    assert!((rows[1][0] - rows[0][0] - 0.005).abs() < 1e-12);
    let lidar = std::fs::read_to_string(root.join("robot-01/lidar.csv")).unwrap();
    assert_eq!(lidar.lines().next().unwrap().split(',').count(), 361);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn mcap_and_csv_read_back_to_the_same_bits() {
    let csv = export_to("bits-csv", ExportFormat::Csv, 6);
    let mcap = export_to("bits-mcap", ExportFormat::Mcap, 6);
    let from_csv = lydlr_experiments::eval::read_tables(&csv.join("robot-00/imu.csv")).unwrap();
    let from_mcap = lydlr_experiments::eval::read_tables(&mcap.join("run.mcap")).unwrap();
    let imu = from_mcap
        .iter()
        .find(|t| t.source.ends_with("#/robot-00/imu"))
        .unwrap();
    assert_eq!(imu.t_ns, from_csv[0].t_ns);
    for (a, b) in imu.columns.iter().zip(&from_csv[0].columns) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    // The values are the simulator's f32 samples, exactly.
    assert!(
        imu.columns
            .iter()
            .flatten()
            .all(|v| f64::from(*v as f32).to_bits() == v.to_bits())
    );
    std::fs::remove_dir_all(csv).unwrap();
    std::fs::remove_dir_all(mcap).unwrap();
}
