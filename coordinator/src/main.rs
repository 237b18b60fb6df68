//! `lydlr-coordinator`: fleet liveness, bandwidth allocation and model rollout over MQTT.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lydlr_coordinator::{CoordinatorConfig, run_coordinator};

/// The lydlr fleet coordinator.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Broker to connect to.
    #[arg(long, env = "LYDLR_BROKER", default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Coordinator configuration (TOML: period_ms, fleet_budget_bps, offline_after_periods,
    /// allocator, weights, floors, state_dir).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the rollout in progress is kept across restarts (overrides the configuration's).
    #[arg(long, env = "LYDLR_COORDINATOR_STATE")]
    state_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config: CoordinatorConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => CoordinatorConfig::default(),
    };
    if args.state_dir.is_some() {
        config.state_dir = args.state_dir;
    }
    let url = args.broker.parse()?;
    tracing::info!(broker = %args.broker, budget_bps = config.fleet_budget_bps, "starting");
    let handle = run_coordinator(config, &url).await?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let state = handle.stop().await?;
    tracing::info!(
        online = state.online.len(),
        offline = state.offline.len(),
        "stopped"
    );
    Ok(())
}
