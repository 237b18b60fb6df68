//! `lydlr eval` on simulated streams: every codec round-trips, and lydlr's codecs hold their
//! targets against pcodec and the reference lossy pipeline.

use std::path::Path;
use std::time::Duration;

use lydlr_experiments::Scenario;
use lydlr_experiments::eval::{Bound, EvalLine, read_tables, run_eval};
use lydlr_experiments::export::{ExportFormat, export};

fn ratio(lines: &[EvalLine], codec: &str) -> f64 {
    lines
        .iter()
        .find(|l| l.codec == codec)
        .map(|l| l.ratio)
        .unwrap_or(0.0)
}

#[test]
fn lydlr_codecs_hold_their_targets_on_simulated_streams() {
    let scenario =
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quickstart.toml"))
            .unwrap();
    let mut sim = scenario.sim;
    sim.duration_s = 20.0;
    sim.robots.count = 1;
    let dir = std::env::temp_dir().join(format!("lydlr-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    export(&sim, &dir, ExportFormat::Csv, None, false).unwrap();
    for stream in ["imu", "wheels", "motors", "battery"] {
        let tables = read_tables(&dir.join(format!("robot-00/{stream}.csv"))).unwrap();
        let lossless = run_eval(&tables, None, None, 1000, None, Duration::ZERO).unwrap();
        assert_eq!(lossless.len(), 6, "six lossless codecs");
        assert!(lossless.iter().all(|l| l.max_abs_error == 0.0));
        let (ours, pco) = (ratio(&lossless, "lydlr-lossless"), ratio(&lossless, "pco"));
        assert!(
            ours >= 0.97 * pco,
            "{stream}: lossless {ours:.3} vs pco {pco:.3}"
        );

        let lossy = run_eval(
            &tables,
            None,
            Some(Bound::Sigma(1.0)),
            1000,
            None,
            Duration::ZERO,
        )
        .unwrap();
        let (ours, reference) = (
            ratio(&lossy, "lydlr-bounded"),
            ratio(&lossy, "quant-delta-pco"),
        );
        assert!(
            ours >= reference,
            "{stream}: bounded {ours:.3} vs reference {reference:.3}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
