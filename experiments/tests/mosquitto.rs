//! The quickstart against a real external broker: Mosquitto, started on a free loopback port
//! with a generated configuration. CI installs Mosquitto and sets `LYDLR_REQUIRE_MOSQUITTO=1`,
//! so there the test fails rather than skips when the broker is missing.

use std::path::Path;

use lydlr_bus::Mosquitto;
use lydlr_experiments::links::BrokerChoice;
use lydlr_experiments::{RunOptions, Scenario, run_scenario};

#[test]
fn quickstart_runs_bit_exact_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_tests() else {
        return;
    };
    let scenario =
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quickstart.toml"))
            .unwrap();
    let out = mosquitto.dir().join("run");
    let options = RunOptions {
        out_dir: Some(out),
        broker: BrokerChoice::External(mosquitto.url()),
        duration_s: Some(2.0),
        progress: false,
        ..RunOptions::default()
    };
    let report = run_scenario(&scenario, &options).unwrap();
    assert_eq!(report.produced, 4 * 2 * 310);
    assert!(report.all_bit_exact(), "{report:#?}");
    assert_eq!(report.broker, mosquitto.url().to_string());
}
