//! `lydlr`: run scenarios and look at what they measured.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lydlr_experiments::bench::{bench_alloc, bench_codec, bench_script, bench_sim, sim_grid};
use lydlr_experiments::eval::{Bound, read_tables, run_eval};
use lydlr_experiments::export::{ExportFormat, export};
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
        /// Fleet broker: `embedded` (default), `mosquitto` (started and, for broker faults,
        /// restarted by the run), or an external one (mqtt://host:port).
        #[arg(long)]
        broker: Option<String>,
        /// Override the scenario's duration, in simulated seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Simulate a scenario's swarm and write its streams: CSV or parquet (a directory with
    /// <robot>/<stream>.csv|parquet, first column t in seconds) or MCAP (one file).
    Sim {
        scenario: PathBuf,
        /// Output directory (csv, parquet) or file (mcap).
        #[arg(long)]
        out: PathBuf,
        /// csv, parquet or mcap; default: mcap for a .mcap path, else csv.
        #[arg(long)]
        format: Option<String>,
        /// Override the scenario's duration, in simulated seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Also write a Rerun recording (poses, trails, lidar points, sensor scalars).
        #[arg(long)]
        rrd: Option<PathBuf>,
        #[arg(long)]
        quiet: bool,
    },
    /// Compress a recording with every codec and print one JSON line per codec.
    Eval {
        /// CSV (first column t, seconds), parquet or MCAP.
        #[arg(long)]
        input: PathBuf,
        /// A codec name, or all (default).
        #[arg(long)]
        codec: Option<String>,
        /// Absolute error bound: runs the lossy codecs.
        #[arg(long, conflicts_with = "error_bound_sigma")]
        error_bound: Option<f64>,
        /// Error bound in units of each channel's noise sigma (estimated from the data).
        #[arg(long)]
        error_bound_sigma: Option<f64>,
        /// Frames per lydlr packet.
        #[arg(long, default_value_t = 1000)]
        block_frames: usize,
        /// Model package directory for the `neural` codec (e.g. models/default).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Seconds of repeated runs behind each speed figure; the fastest run counts.
        #[arg(long, default_value_t = lydlr_experiments::timing::DEFAULT_WINDOW.as_secs_f64())]
        timing_window_s: f64,
    },
    /// Train the neural codec's models (simulated data, Burn on the CPU) and write a package.
    Train {
        /// Training configuration (e.g. learn/configs/default.toml).
        config: PathBuf,
        /// Where the loss curves (SVG) and training.rrd go.
        #[arg(long, default_value = "results/train")]
        plots: PathBuf,
        /// Write the package here instead of the config's `output`.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Measure with packets of this many seconds instead of the config's `data.block_s`.
        #[arg(long)]
        block_s: Option<f64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Compare a run with a stored baseline (exit 1 on a regression), or refresh a baseline.
    Report {
        /// The run directory (holds summary.csv).
        run: PathBuf,
        /// Baseline CSV to compare against.
        #[arg(long, conflicts_with = "update_baseline")]
        compare: Option<PathBuf>,
        /// Write the run as the new baseline at this path (default tolerances).
        #[arg(long)]
        update_baseline: Option<PathBuf>,
    },
    /// Print speed figures as JSON lines (build with --release).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Make an operator key pair: PREFIX.key (secret) and PREFIX.pub (for nodes' model_keys).
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, default_value = "operator")]
        out: PathBuf,
    },
    /// Sign a model package folder (writes manifest.sig) or a script (writes SCRIPT.sig).
    Sign {
        /// The secret key `lydlr keygen` wrote.
        #[arg(long)]
        key: PathBuf,
        /// Package folders and script files.
        #[arg(required = true)]
        targets: Vec<PathBuf>,
    },
    /// Roll a model package out to a live fleet through its coordinator: canaries first,
    /// then waves; halted and rolled back everywhere when a node fails its health window.
    Rollout {
        /// The fleet's broker.
        #[arg(long, env = "LYDLR_BROKER", default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[command(subcommand)]
        what: RolloutAction,
    },
}

#[derive(Subcommand)]
enum RolloutAction {
    /// Start a rollout and follow it to its end (exit 1 unless it completes).
    Start {
        /// The package folder (as `lydlr train` writes it).
        package: PathBuf,
        /// Rollout id (default: the version and the time).
        #[arg(long)]
        id: Option<String>,
        /// Canary node (repeatable; default: the first target node by name).
        #[arg(long)]
        canary: Vec<String>,
        /// Cumulative fractions of the other nodes per wave, ending at 1.
        #[arg(long, value_delimiter = ',', default_value = "0.25,1")]
        waves: Vec<f64>,
        /// Target node (repeatable; default: every node online).
        #[arg(long)]
        node: Vec<String>,
        /// A wave not healthy this long after its deploy fails.
        #[arg(long, default_value_t = 120.0)]
        health_timeout_s: f64,
        /// Send it and return without following it.
        #[arg(long)]
        no_follow: bool,
    },
    /// Stop the running rollout; every node it reached is rolled back.
    Abort {
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print the coordinator's rollout state (JSON).
    Status,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Codec ratios, throughput, 10-frame block latency and entropy, per simulated stream.
    Codec,
    /// The neural codec of a model package: load time, bits, speed, 10-frame block latency.
    Neural {
        #[arg(long, default_value = "models/default")]
        model: PathBuf,
    },
    /// Allocator time and gap to the exact optimum, 10 to 10,000 streams.
    Alloc,
    /// Per-frame cost of the shipped user scripts on a 6-channel IMU frame.
    Script,
    /// Simulator speed for 10, 100 and 1000 robots, with and without lidar, on one core.
    Sim {
        /// Scale every configuration's simulated duration.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
}

fn rollout(url: &lydlr_bus::BrokerUrl, action: RolloutAction) -> anyhow::Result<ExitCode> {
    use lydlr_bus::messages::RolloutPhase;
    use lydlr_experiments::operator;
    let runtime = tokio::runtime::Runtime::new()?;
    match action {
        RolloutAction::Start {
            package,
            id,
            canary,
            waves,
            node,
            health_timeout_s,
            no_follow,
        } => {
            let request = lydlr_bus::messages::RolloutRequest {
                canary,
                waves,
                nodes: node,
                health_timeout_s,
                ..operator::rollout_request(&package, id)?
            };
            // Long enough for every wave to use its whole timeout.
            let timeout = std::time::Duration::from_secs_f64(
                health_timeout_s * (request.waves.len() + 2) as f64,
            );
            let state =
                runtime.block_on(operator::start_rollout(url, request, !no_follow, timeout))?;
            if no_follow {
                println!("{}", operator::summary(&state));
            }
            let ok = no_follow || state.phase == RolloutPhase::Completed;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        RolloutAction::Abort { reason } => {
            runtime.block_on(operator::abort_rollout(url, reason))?;
            Ok(ExitCode::SUCCESS)
        }
        RolloutAction::Status => match runtime.block_on(operator::rollout_status(url))? {
            Some(state) => print_json_lines([state]),
            None => {
                eprintln!("no rollout state on {url}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// Prints one JSON line per item (the output of `eval` and `bench`).
fn print_json_lines<T: serde::Serialize>(
    lines: impl IntoIterator<Item = T>,
) -> anyhow::Result<ExitCode> {
    for line in lines {
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(ExitCode::SUCCESS)
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
        Command::Rollout { broker, what } => rollout(&broker.parse()?, what),
        Command::Keygen { out } => {
            let (secret, public) = lydlr_experiments::operator::keygen(&out)?;
            println!(
                "secret key {} (keep it off the robots), public key {}: {}",
                secret.display(),
                public.display(),
                std::fs::read_to_string(&public)?.trim()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sign { key, targets } => {
            for target in targets {
                let written = lydlr_experiments::operator::sign(&key, &target)?;
                println!("signed {} -> {}", target.display(), written.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train {
            config,
            plots,
            output,
            block_s,
            quiet,
        } => {
            let overrides = lydlr_experiments::train::Overrides { output, block_s };
            for r in lydlr_experiments::train::run_training(&config, &overrides, !quiet, &plots)? {
                let mut line = serde_json::Map::new();
                line.insert("stream".into(), r.stream.into());
                for (k, v) in r.metrics {
                    line.insert(k, serde_json::json!((v * 1e4).round() / 1e4));
                }
                println!("{}", serde_json::Value::Object(line));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim {
            scenario,
            out,
            format,
            duration,
            rrd,
            quiet,
        } => {
            let mut loaded = Scenario::load(&scenario)?;
            if let Some(d) = duration {
                loaded.sim.duration_s = d;
                loaded.sim.validate()?;
            }
            let format = ExportFormat::infer(&out, format.as_deref())?;
            let files = export(&loaded.sim, &out, format, rrd.as_deref(), !quiet)?;
            println!("wrote {} file(s) under {}", files.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            run,
            compare: Some(baseline),
            ..
        } => {
            let (lines, regressed) = lydlr_experiments::report::compare(&baseline, &run)?;
            for line in lines {
                println!("{line}");
            }
            Ok(if regressed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Report {
            run,
            update_baseline: Some(out),
            ..
        } => {
            let rows = lydlr_experiments::report::write_baseline(&run, &out)?;
            println!(
                "baseline {} written from {} ({rows} rows)",
                out.display(),
                run.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { .. } => {
            anyhow::bail!("give --compare BASELINE or --update-baseline PATH")
        }
        Command::Eval {
            input,
            codec,
            error_bound,
            error_bound_sigma,
            block_frames,
            model,
            timing_window_s,
        } => {
            let package = model
                .map(|dir| lydlr_learn::package::read_package(&dir).map(std::sync::Arc::new))
                .transpose()?;
            let bound = match (error_bound, error_bound_sigma) {
                (Some(eb), _) if eb.is_finite() && eb > 0.0 => Some(Bound::Absolute(eb)),
                (_, Some(k)) if k.is_finite() && k > 0.0 => Some(Bound::Sigma(k)),
                (None, None) => None,
                _ => anyhow::bail!("error bounds must be positive numbers"),
            };
            let timing_window = std::time::Duration::try_from_secs_f64(timing_window_s)
                .map_err(|e| anyhow::anyhow!("--timing-window-s {timing_window_s}: {e}"))?;
            let tables = read_tables(&input)?;
            print_json_lines(run_eval(
                &tables,
                codec.as_deref(),
                bound,
                block_frames,
                package,
                timing_window,
            )?)
        }
        Command::Bench {
            what: BenchCommand::Script,
        } => print_json_lines(bench_script()?),
        Command::Bench {
            what: BenchCommand::Neural { model },
        } => print_json_lines(lydlr_experiments::bench::bench_neural(&model)?),
        Command::Bench {
            what: BenchCommand::Alloc,
        } => print_json_lines(bench_alloc()),
        Command::Bench {
            what: BenchCommand::Codec,
        } => print_json_lines(bench_codec()?),
        Command::Bench {
            what: BenchCommand::Sim { scale },
        } => {
            if !(scale.is_finite() && scale > 0.0) {
                anyhow::bail!("--scale must be positive");
            }
            for config in sim_grid(scale) {
                let result = bench_sim(&config)?;
                println!("{}", serde_json::to_string(&result)?);
            }
            Ok(ExitCode::SUCCESS)
        }
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
                broker: broker.map(|b| b.parse()).transpose()?.unwrap_or_default(),
                duration_s: duration,
                progress: !quiet,
                ..RunOptions::default()
            };
            let report = run_scenario(&loaded, &options)?;
            print!("{}", format_table(&report.rows));
            println!(
                "\n{}: {:.1} s simulated in {:.1} s ({:.1}x real time; {:.1} s with start-up and drain) on {}",
                loaded.name,
                report.sim_s,
                report.sim_wall_s,
                report.sim_s / report.sim_wall_s,
                report.wall_s,
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
                } else if report.all_delivered_within_bounds() {
                    "all within their error bounds (some sent at lossy rungs)"
                } else if report.mismatched == 0 && kills(&loaded) {
                    "the lost frames were sent to killed nodes; nothing arrived wrong"
                } else {
                    "CONTRACT BROKEN"
                }
            );
            println!("results in {}", report.dir.display());
            // A scenario that kills nodes loses their frames by design; the contract is then
            // that nothing arrives wrong.
            let ok =
                report.all_delivered_within_bounds() || (kills(&loaded) && report.mismatched == 0);
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Whether the scenario kills nodes (whose frames are then lost by design).
fn kills(scenario: &Scenario) -> bool {
    scenario
        .events
        .iter()
        .any(|e| matches!(e.event, lydlr_experiments::scenario::Event::KillNode { .. }))
}
