//! Every message a node, the coordinator or the sink takes off the bus, from untrusted bytes:
//! the first byte picks the topic kind, the rest is the payload. Each parse returns a value or
//! an error; a value re-encodes to something that parses again to the same value; nothing
//! panics or allocates without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lydlr_bus::messages::*;
use lydlr_bus::{BrokerUrl, Topic};

fn round_trip<T: JsonMessage + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    if let Ok(message) = T::from_json(payload) {
        let again = T::from_json(&message.to_json()).expect("a parsed message re-parses");
        assert_eq!(again, message);
    }
}

/// Parses and re-encodes without `round_trip`'s equality check: neither step may panic.
fn reserialise<T: JsonMessage>(payload: &[u8]) {
    if let Ok(message) = T::from_json(payload) {
        let _ = message.to_json();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    match kind % 16 {
        0 => {
            if let Ok(raw) = RawFrames::decode(payload) {
                let again = RawFrames::decode(&RawFrames::encode(&raw.frames, raw.flush)).unwrap();
                assert!(
                    raw.frames
                        .iter()
                        .zip(&again.frames)
                        .all(|(a, b)| a.bit_eq(b))
                );
            }
        }
        1 => round_trip::<NodeStatus>(payload),
        2 => reserialise::<NodeMetrics>(payload),
        3 => {
            if let Ok(report) = RdReport::from_json(payload) {
                let _ = report.validate();
            }
        }
        4 => reserialise::<Allocation>(payload),
        5 => {
            if let Ok(ModelCommand::Deploy { files, .. }) = ModelCommand::from_json(payload) {
                let _ = ModelCommand::decoded_files(&files);
            }
        }
        6 => round_trip::<ModelStatus>(payload),
        7 => round_trip::<ScriptLoad>(payload),
        8 => round_trip::<Control>(payload),
        9 => {
            if let Ok(RolloutCommand::Start(request)) = RolloutCommand::from_json(payload) {
                let _ = request.validate();
            }
        }
        10 => round_trip::<RolloutState>(payload),
        11 => reserialise::<FleetBudget>(payload),
        12 => reserialise::<FleetState>(payload),
        13 => {
            if let Ok(schema) = lydlr_codec::StreamSchema::from_json(payload) {
                let _ = schema.hash();
            }
        }
        14 => {
            if let Ok(text) = std::str::from_utf8(payload) {
                if let Ok(topic) = Topic::parse(text) {
                    assert_eq!(Topic::parse(&topic.to_string()).unwrap(), topic);
                }
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(payload) {
                if let Ok(url) = text.parse::<BrokerUrl>() {
                    let _ = url.to_string();
                }
            }
        }
    }
});
