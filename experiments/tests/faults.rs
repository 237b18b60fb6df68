//! Scheduled faults in a short real-time run: a killed node is declared offline, loses only
//! its own frames, rejoins after a restart; a budget change reaches the coordinator.

use std::path::Path;

use lydlr_experiments::scenario::{Event, ScheduledEvent};
use lydlr_experiments::{RunOptions, Scenario, run_scenario};

#[test]
fn a_killed_node_is_detected_and_rejoins_and_the_budget_changes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/quickstart.toml");
    let mut scenario = Scenario::load(&path).unwrap();
    scenario.run.realtime = true;
    scenario.run.rerun = false;
    scenario.coordinator.period_ms = 200;
    scenario.events = vec![
        ScheduledEvent {
            at_s: 1.0,
            event: Event::KillNode {
                node: "robot-01".into(),
            },
        },
        ScheduledEvent {
            at_s: 1.5,
            event: Event::SetBudget { bps: 123_000.0 },
        },
        ScheduledEvent {
            at_s: 2.5,
            event: Event::RestartNode {
                node: "robot-01".into(),
            },
        },
    ];
    let dir = std::env::temp_dir().join(format!("lydlr-faults-{}", std::process::id()));
    let options = RunOptions {
        out_dir: Some(dir.clone()),
        duration_s: Some(4.0),
        progress: false,
        ..RunOptions::default()
    };
    let report = run_scenario(&scenario, &options).unwrap();

    let outcomes: Vec<&str> = report.events.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["killed", "published", "restarted"]);
    assert_eq!(report.mismatched, 0, "nothing may arrive wrong");
    for row in report.rows.iter().filter(|r| r.node != "TOTAL") {
        if row.node == "robot-01" {
            assert!(row.frames_lost > 0 && row.frames_delivered > 0, "{row:?}");
        } else {
            assert_eq!(row.frames_lost, 0, "{row:?}");
        }
    }
    let kill = report.events[0].wall_s;
    let offline = report
        .fleet
        .iter()
        .find(|(at, f)| *at >= kill && f.offline.contains(&"robot-01".to_string()))
        .map(|(at, _)| at - kill)
        .expect("robot-01 declared offline");
    // Three silent periods at most (the last will usually makes it immediate), plus a period.
    assert!(
        offline <= 0.8,
        "declared offline {offline:.2} s after the kill"
    );
    // Its share goes to the others while it is away: they alone fill the budget.
    let share = |f: &lydlr_bus::messages::FleetState| {
        let others: f64 = f
            .node_allocated_bps
            .iter()
            .filter(|(n, _)| *n != "robot-01")
            .map(|(_, bps)| bps)
            .sum();
        others / f.fleet_budget_bps
    };
    let (before, away) = report
        .fleet
        .iter()
        .fold((None, None), |(before, away), (at, f)| {
            if *at < kill && f.online.len() == 4 {
                (Some(share(f)), away)
            } else if f.offline.contains(&"robot-01".to_string()) && !f.over_budget {
                assert!(!f.node_allocated_bps.contains_key("robot-01"));
                (before, Some(share(f)))
            } else {
                (before, away)
            }
        });
    let (before, away) = (before.unwrap(), away.unwrap());
    assert!(
        before < 0.8 && (away - 1.0).abs() < 0.01,
        "the other three held {before:.2} of the budget before, {away:.2} while it was away"
    );
    let restart = report.events[2].wall_s;
    assert!(
        report
            .fleet
            .iter()
            .any(|(at, f)| *at >= restart && f.online.contains(&"robot-01".to_string()))
    );
    assert!(
        report
            .fleet
            .iter()
            .any(|(_, f)| (f.fleet_budget_bps - 123_000.0).abs() < 1e-6)
    );
    assert!(
        std::fs::read_to_string(dir.join("report.md"))
            .unwrap()
            .contains("| 1.0 s | kill robot-01 | killed |")
    );
    std::fs::remove_dir_all(dir).unwrap();
}
