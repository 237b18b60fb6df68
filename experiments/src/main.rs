//! `lydlr`: run scenarios and look at what they measured.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lydlr_experiments::outputs::format_table;
use lydlr_experiments::{RunOptions, Scenario, run_scenario};

#[derive(Parser)]
#[command(
    version,
    about = "lydlr: learned compression of robot sensor-motor streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario end to end: simulator, broker, edge nodes, coordinator, sink.
    Run {
        scenario: PathBuf,
        /// Output directory (default results/<scenario>/<run-id>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Use this MQTT broker (mqtt://host:port) instead of the embedded one.
        #[arg(long)]
        broker: Option<String>,
        /// Override the scenario's duration, in simulated seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // rumqttd logs every client disconnect as an error; RUST_LOG brings it back.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            scenario,
            out,
            broker,
            duration,
            quiet,
        } => {
            let loaded = Scenario::load(&scenario)?;
            let options = RunOptions {
                out_dir: out,
                broker: broker.map(|b| b.parse()).transpose()?,
                duration_s: duration,
                progress: !quiet,
                ..RunOptions::default()
            };
            let report = run_scenario(&loaded, &options)?;
            print!("{}", format_table(&report.rows));
            println!(
                "\n{}: {:.1} s simulated in {:.1} s wall ({:.1}x real time) on {}",
                loaded.name,
                report.sim_s,
                report.wall_s,
                report.sim_s / report.wall_s,
                report.broker
            );
            println!(
                "frames: {} produced, {} delivered, {} lost, {} mismatched -> {}",
                report.produced,
                report.delivered,
                report.lost,
                report.mismatched,
                if report.all_bit_exact() {
                    "all bit-exact"
                } else {
                    "NOT bit-exact"
                }
            );
            println!("results in {}", report.dir.display());
            Ok(if report.all_bit_exact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
