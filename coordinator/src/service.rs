//! The coordinator on the bus.

use std::time::Instant;

use lydlr_bus::messages::FleetState;
use lydlr_bus::{BrokerUrl, BusClient, BusError, ClientOptions, Topic};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fleet::StateError;
use crate::{Coordinator, CoordinatorConfig};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("coordinator task failed: {0}")]
    Task(String),
}

pub struct CoordinatorHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<FleetState, CoordinatorError>>,
}

impl CoordinatorHandle {
    /// Stops the loop and returns the last fleet state.
    pub async fn stop(self) -> Result<FleetState, CoordinatorError> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| CoordinatorError::Task(e.to_string()))?
    }
}

/// Carries on the rollout in `config.state_dir`, subscribes to every node's status, metrics,
/// operating points and model reports and to the fleet's orders, and runs the period loop.
pub async fn run_coordinator(
    config: CoordinatorConfig,
    url: &BrokerUrl,
) -> Result<CoordinatorHandle, CoordinatorError> {
    url.check()?;
    let mut coordinator = Coordinator::restore(config.clone())?;
    let (client, mut rx) = BusClient::connect(url, ClientOptions::new("lydlr-coordinator"));
    for kind in ["status", "metrics", "rd", "model/status"] {
        client.subscribe(Topic::all_nodes(kind)).await?;
    }
    for topic in [Topic::FleetBudget, Topic::RolloutCommand] {
        client.subscribe(topic.to_string()).await?;
    }
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut period = tokio::time::interval(config.period());
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(m) => coordinator.handle(&m, Instant::now()),
                    None => break,
                },
                _ = period.tick() => {
                    for out in coordinator.tick(Instant::now()) {
                        client.publish(out.topic, out.payload, out.retain).await?;
                    }
                }
                _ = stop_rx.changed() => break,
            }
        }
        client.disconnect().await?;
        Ok(coordinator.fleet_state())
    });
    Ok(CoordinatorHandle { stop, task })
}
