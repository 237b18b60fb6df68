//! `lydlr-edge`: runs one compressor node against an MQTT broker until interrupted.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lydlr_edge::{EdgeConfig, run_node};

/// One lydlr compressor node (one per robot).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Node configuration (TOML); NODE_ID and LYDLR_BROKER override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = EdgeConfig::load(args.config.as_deref(), |k| std::env::var(k).ok())?;
    let url = config.broker.parse().context("broker URL")?;
    tracing::info!(node = %config.node_id, broker = %config.broker, "starting");
    let node = run_node(config, &url).await?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let metrics = node.stop().await?;
    tracing::info!(
        frames = metrics.frames_out,
        ratio = format!("{:.2}", metrics.ratio),
        "stopped"
    );
    Ok(())
}
