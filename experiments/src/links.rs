//! The brokers and links of a run, laid out as on a real fleet: each robot's sensors publish
//! on the robot's own broker (one embedded broker stands for all of them), its edge node
//! reads there and sends over its uplink to the fleet broker, where the coordinator and the
//! sink listen. An uplink goes through a proxy when the scenario impairs it (latency, jitter,
//! loss) or cuts it; the fleet broker sits behind a proxy too when the scenario restarts it,
//! so that its replacement answers on the same address.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use lydlr_bus::{BrokerUrl, EmbeddedBroker, LinkProxy, Mosquitto};

use crate::scenario::{Event, Scenario};

/// Which fleet broker a run uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum BrokerChoice {
    /// An embedded rumqttd on a free loopback port.
    #[default]
    Embedded,
    /// A Mosquitto the run starts (and may restart) itself.
    Mosquitto,
    /// A broker someone else runs.
    External(BrokerUrl),
}

impl std::str::FromStr for BrokerChoice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "embedded" => BrokerChoice::Embedded,
            "mosquitto" => BrokerChoice::Mosquitto,
            url => BrokerChoice::External(url.parse()?),
        })
    }
}

enum FleetBroker {
    Embedded(EmbeddedBroker),
    Mosquitto(Mosquitto),
    External(BrokerUrl),
}

impl FleetBroker {
    fn url(&self) -> BrokerUrl {
        match self {
            FleetBroker::Embedded(b) => b.url(),
            FleetBroker::Mosquitto(m) => m.url(),
            FleetBroker::External(url) => url.clone(),
        }
    }
}

pub struct Links {
    robot: EmbeddedBroker,
    fleet: FleetBroker,
    /// In front of the fleet broker for the run's own clients, when it may be restarted.
    front: Option<LinkProxy>,
    uplinks: BTreeMap<String, LinkProxy>,
    /// Uplinks a `cut_link` event took down (a broker restart does not bring them back).
    cut: BTreeSet<String>,
}

impl Links {
    pub async fn start(
        scenario: &Scenario,
        choice: &BrokerChoice,
        nodes: &[String],
    ) -> anyhow::Result<Links> {
        let robot = EmbeddedBroker::start().context("robot-side broker")?;
        let fleet = match choice {
            BrokerChoice::Embedded => FleetBroker::Embedded(EmbeddedBroker::start()?),
            BrokerChoice::Mosquitto => FleetBroker::Mosquitto(Mosquitto::start()?),
            BrokerChoice::External(url) => FleetBroker::External(url.clone()),
        };
        let restarts = scenario
            .events
            .iter()
            .any(|e| matches!(e.event, Event::RestartBroker { .. }));
        let cuts = scenario
            .events
            .iter()
            .any(|e| matches!(e.event, Event::CutLink { .. }));
        // A Mosquitto of our own comes back on its own port; others are replaced or cut
        // behind the front proxy.
        let front = if restarts && !matches!(fleet, FleetBroker::Mosquitto(_)) {
            Some(LinkProxy::start(&fleet.url()).await?)
        } else {
            None
        };
        let mut uplinks = BTreeMap::new();
        if cuts || restarts || !scenario.link.is_perfect() {
            for (i, node) in nodes.iter().enumerate() {
                let quality = scenario
                    .link
                    .quality(scenario.sim.seed.wrapping_mul(1000).wrapping_add(i as u64));
                let proxy = LinkProxy::with_quality(&fleet.url(), quality).await?;
                uplinks.insert(node.clone(), proxy);
            }
        }
        Ok(Links {
            robot,
            fleet,
            front,
            uplinks,
            cut: BTreeSet::new(),
        })
    }

    /// Where the simulated sensors publish and the nodes read them.
    pub fn robot_url(&self) -> BrokerUrl {
        self.robot.url()
    }

    /// Where the run's own clients (sink, coordinator, operator events) connect.
    pub fn fleet_url(&self) -> BrokerUrl {
        self.front
            .as_ref()
            .map_or_else(|| self.fleet.url(), LinkProxy::url)
    }

    /// Where a node's uplink connects.
    pub fn uplink_url(&self, node: &str) -> BrokerUrl {
        self.uplinks
            .get(node)
            .map_or_else(|| self.fleet.url(), LinkProxy::url)
    }

    /// The fleet broker, for the report.
    pub fn describe(&self) -> String {
        match &self.fleet {
            FleetBroker::Embedded(b) => format!("embedded broker {}", b.url()),
            FleetBroker::Mosquitto(m) => format!("mosquitto {}", m.url()),
            FleetBroker::External(url) => url.to_string(),
        }
    }

    pub fn cut(&mut self, node: &str) -> String {
        match self.uplinks.get(node) {
            Some(link) => {
                link.cut();
                self.cut.insert(node.to_owned());
                "cut".into()
            }
            None => "no such link".into(),
        }
    }

    pub fn restore(&mut self, node: &str) -> String {
        match self.uplinks.get(node) {
            Some(link) => {
                link.restore();
                self.cut.remove(node);
                "restored".into()
            }
            None => "no such link".into(),
        }
    }

    /// Takes the fleet broker away for `down` and brings it (or a replacement) back.
    pub async fn restart_broker(&mut self, down: Duration) -> String {
        let links = || self.front.iter().chain(self.uplinks.values());
        for link in links() {
            link.cut();
        }
        let outcome = match &mut self.fleet {
            FleetBroker::Mosquitto(m) => {
                m.kill();
                tokio::time::sleep(down).await;
                match m.restart() {
                    Ok(()) => "mosquitto killed and restarted".to_owned(),
                    Err(e) => format!("mosquitto did not restart: {e}"),
                }
            }
            FleetBroker::Embedded(_) => {
                tokio::time::sleep(down).await;
                // rumqttd cannot be stopped; a fresh one takes its place behind the proxies,
                // with no sessions and no retained messages, as a restarted broker has.
                match EmbeddedBroker::start() {
                    Ok(fresh) => {
                        self.fleet = FleetBroker::Embedded(fresh);
                        "replaced by a fresh embedded broker".to_owned()
                    }
                    Err(e) => format!("no fresh broker: {e}"),
                }
            }
            FleetBroker::External(_) => {
                tokio::time::sleep(down).await;
                "an external broker cannot be restarted: every link to it was cut instead"
                    .to_owned()
            }
        };
        let url = self.fleet.url();
        for (node, link) in self
            .front
            .iter()
            .map(|l| ("", l))
            .chain(self.uplinks.iter().map(|(n, l)| (n.as_str(), l)))
        {
            link.retarget(&url);
            if !self.cut.contains(node) {
                link.restore();
            }
        }
        outcome
    }
}
