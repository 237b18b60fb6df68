//! The topic tree: `lydlr/v1/<node>/<kind>[/<stream>]`.

use std::fmt;

pub const PREFIX: &str = "lydlr/v1";

/// Every topic lydlr uses, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Raw frames from a robot's driver or the simulator.
    Raw {
        node: String,
        stream: String,
    },
    /// The stream's [`lydlr_codec::StreamSchema`], retained.
    Schema {
        node: String,
        stream: String,
    },
    /// Encoded packets from the node.
    Compressed {
        node: String,
        stream: String,
    },
    Metrics {
        node: String,
    },
    /// The node's rate-distortion points.
    Rd {
        node: String,
    },
    /// Retained online/offline; the last will sets offline.
    Status {
        node: String,
    },
    /// The coordinator's allocation for the node.
    Alloc {
        node: String,
    },
    /// Control requests to the node (flush).
    Control {
        node: String,
    },
    ModelDeploy {
        node: String,
    },
    ModelStatus {
        node: String,
    },
    ScriptLoad {
        node: String,
    },
    /// The coordinator's fleet summary, every period.
    FleetState,
    /// A new fleet uplink budget for the coordinator.
    FleetBudget,
    /// The operator's rollout orders to the coordinator (start, abort).
    RolloutCommand,
    /// The coordinator's rollout progress, retained.
    RolloutState,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {topic:?}: {reason}")]
pub struct TopicError {
    pub topic: String,
    pub reason: &'static str,
}

/// Node and stream names: 1 to 64 of `[A-Za-z0-9_-]`, so they never hold MQTT wildcards or
/// separators.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Topic {
    pub fn node(&self) -> &str {
        match self {
            Topic::Raw { node, .. }
            | Topic::Schema { node, .. }
            | Topic::Compressed { node, .. }
            | Topic::Metrics { node }
            | Topic::Rd { node }
            | Topic::Status { node }
            | Topic::Alloc { node }
            | Topic::Control { node }
            | Topic::ModelDeploy { node }
            | Topic::ModelStatus { node }
            | Topic::ScriptLoad { node } => node,
            Topic::FleetState
            | Topic::FleetBudget
            | Topic::RolloutCommand
            | Topic::RolloutState => "",
        }
    }

    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let err = |reason| TopicError {
            topic: topic.to_owned(),
            reason,
        };
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| err("not under lydlr/v1/"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| !is_valid_name(p)) {
            return Err(err("empty or invalid name segment"));
        }
        if parts == ["fleet", "state"] {
            return Ok(Topic::FleetState);
        }
        if parts == ["fleet", "budget"] {
            return Ok(Topic::FleetBudget);
        }
        if parts == ["fleet", "rollout", "command"] {
            return Ok(Topic::RolloutCommand);
        }
        if parts == ["fleet", "rollout", "state"] {
            return Ok(Topic::RolloutState);
        }
        let node = parts[0].to_owned();
        let stream = || parts.get(2).map(|s| (*s).to_owned());
        Ok(match (parts.get(1).copied(), parts.len()) {
            (Some("raw"), 3) => Topic::Raw {
                node,
                stream: stream().unwrap_or_default(),
            },
            (Some("schema"), 3) => Topic::Schema {
                node,
                stream: stream().unwrap_or_default(),
            },
            (Some("compressed"), 3) => Topic::Compressed {
                node,
                stream: stream().unwrap_or_default(),
            },
            (Some("metrics"), 2) => Topic::Metrics { node },
            (Some("rd"), 2) => Topic::Rd { node },
            (Some("status"), 2) => Topic::Status { node },
            (Some("alloc"), 2) => Topic::Alloc { node },
            (Some("control"), 2) => Topic::Control { node },
            (Some("model"), 3) if parts[2] == "deploy" => Topic::ModelDeploy { node },
            (Some("model"), 3) if parts[2] == "status" => Topic::ModelStatus { node },
            (Some("script"), 3) if parts[2] == "load" => Topic::ScriptLoad { node },
            _ => return Err(err("unknown topic kind")),
        })
    }

    /// Subscription filter for one kind of topic across all nodes, e.g. `lydlr/v1/+/metrics`.
    pub fn all_nodes(kind: &str) -> String {
        format!("{PREFIX}/+/{kind}")
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Raw { node, stream } => write!(f, "{PREFIX}/{node}/raw/{stream}"),
            Topic::Schema { node, stream } => write!(f, "{PREFIX}/{node}/schema/{stream}"),
            Topic::Compressed { node, stream } => write!(f, "{PREFIX}/{node}/compressed/{stream}"),
            Topic::Metrics { node } => write!(f, "{PREFIX}/{node}/metrics"),
            Topic::Rd { node } => write!(f, "{PREFIX}/{node}/rd"),
            Topic::Status { node } => write!(f, "{PREFIX}/{node}/status"),
            Topic::Alloc { node } => write!(f, "{PREFIX}/{node}/alloc"),
            Topic::Control { node } => write!(f, "{PREFIX}/{node}/control"),
            Topic::ModelDeploy { node } => write!(f, "{PREFIX}/{node}/model/deploy"),
            Topic::ModelStatus { node } => write!(f, "{PREFIX}/{node}/model/status"),
            Topic::ScriptLoad { node } => write!(f, "{PREFIX}/{node}/script/load"),
            Topic::FleetState => write!(f, "{PREFIX}/fleet/state"),
            Topic::FleetBudget => write!(f, "{PREFIX}/fleet/budget"),
            Topic::RolloutCommand => write!(f, "{PREFIX}/fleet/rollout/command"),
            Topic::RolloutState => write!(f, "{PREFIX}/fleet/rollout/state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_round_trips_through_its_string() {
        let node = "robot-07".to_string();
        let stream = "imu".to_string();
        let topics = [
            Topic::Raw {
                node: node.clone(),
                stream: stream.clone(),
            },
            Topic::Schema {
                node: node.clone(),
                stream: stream.clone(),
            },
            Topic::Compressed {
                node: node.clone(),
                stream,
            },
            Topic::Metrics { node: node.clone() },
            Topic::Rd { node: node.clone() },
            Topic::Status { node: node.clone() },
            Topic::Alloc { node: node.clone() },
            Topic::Control { node: node.clone() },
            Topic::ModelDeploy { node: node.clone() },
            Topic::ModelStatus { node: node.clone() },
            Topic::ScriptLoad { node },
            Topic::FleetState,
            Topic::FleetBudget,
            Topic::RolloutCommand,
            Topic::RolloutState,
        ];
        for topic in topics {
            assert_eq!(Topic::parse(&topic.to_string()).unwrap(), topic);
        }
    }

    #[test]
    fn malformed_topics_are_rejected() {
        for bad in [
            "",
            "lydlr/v1",
            "lydlr/v1/",
            "lydlr/v2/r1/metrics",
            "lydlr/v1/r1/raw",
            "lydlr/v1/r1/raw/imu/extra",
            "lydlr/v1/r1/unknown",
            "lydlr/v1/r+/metrics",
            "lydlr/v1//metrics",
            "lydlr/v1/r1/model/other",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
