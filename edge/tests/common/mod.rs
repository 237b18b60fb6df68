//! What the node's integration tests share.

use lydlr_codec::{SampleType, SensorKind, StreamSchema};

/// Two wheel encoders counting ticks at `rate_hz`.
pub fn wheels_schema(rate_hz: f64) -> StreamSchema {
    StreamSchema {
        name: "wheels".into(),
        kind: SensorKind::WheelEncoder,
        sample_type: SampleType::I64,
        channels: vec!["left".into(), "right".into()],
        units: vec!["tick".into(), "tick".into()],
        rate_hz,
        noise_sigma: vec![0.5, 0.5],
        lsb: vec![Some(1.0), Some(1.0)],
    }
}
