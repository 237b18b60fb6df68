//! The coordinator on the bus.

use std::time::Instant;

use lydlr_bus::messages::FleetState;
use lydlr_bus::{BrokerUrl, BusClient, BusError, ClientOptions, Topic};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Coordinator, CoordinatorConfig};

pub struct CoordinatorHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<FleetState, BusError>>,
}

impl CoordinatorHandle {
    /// Stops the loop and returns the last fleet state.
    pub async fn stop(self) -> Result<FleetState, BusError> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| BusError::Broker(format!("coordinator task failed: {e}")))?
    }
}

/// Subscribes to every node's status and metrics and runs the period loop.
pub async fn run_coordinator(
    config: CoordinatorConfig,
    url: &BrokerUrl,
) -> Result<CoordinatorHandle, BusError> {
    let (client, mut rx) = BusClient::connect(url, ClientOptions::new("lydlr-coordinator"));
    client.subscribe(Topic::all_nodes("status")).await?;
    client.subscribe(Topic::all_nodes("metrics")).await?;
    client.subscribe(Topic::all_nodes("rd")).await?;
    client.subscribe(Topic::FleetBudget.to_string()).await?;
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut period = tokio::time::interval(config.period());
        let mut coordinator = Coordinator::new(config);
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
