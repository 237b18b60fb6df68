//! `lydlr-learn`: datasets and training for lydlr's neural codecs.
//!
//! Owns turning recorded or simulated streams into training examples, training the neural
//! codec's predictors in Burn (autodiff over the flex CPU backend, [`train`]), and writing
//! model packages ([`package`]: `manifest.toml` plus burnpack weights).
//!
//! Must not: run on the robot (inference lives in `codec`, which reads the same weights
//! without Burn), generate its own data (callers hand it frames from the simulator or from
//! files), or train on the real recordings in `shared/data` (they are for evaluation only).

pub mod package;
pub mod train;

use lydlr_codec::{Frame, StreamSchema};

/// What can go wrong while training or packaging.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("training data: {0}")]
    Data(String),
    #[error("model: {0}")]
    Model(String),
    #[error("package {path}: {message}")]
    Package { path: String, message: String },
}

/// Causal training examples: `context` past frames predict the next one, values scaled by
/// each channel's noise sigma so that channels of different units weigh alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    pub context: usize,
    pub channels: usize,
    /// `inputs[i]` holds `context * channels` values, oldest first.
    pub inputs: Vec<Vec<f32>>,
    pub targets: Vec<Vec<f32>>,
}

/// Slices a stream into overlapping windows; frames with a channel count other than the
/// schema's end the stream (they cannot be scaled).
pub fn windows(schema: &StreamSchema, frames: &[Frame], context: usize) -> Windows {
    let channels = schema.channels.len();
    let scale: Vec<f64> = (0..channels)
        .map(|c| {
            let sigma = schema.noise_sigma.get(c).copied().unwrap_or(0.0);
            if sigma > 0.0 { 1.0 / sigma } else { 1.0 }
        })
        .collect();
    let valid = frames
        .iter()
        .position(|f| f.values.len() != channels)
        .unwrap_or(frames.len());
    let scaled: Vec<Vec<f32>> = frames[..valid]
        .iter()
        .map(|f| {
            f.values
                .iter()
                .zip(&scale)
                .map(|(v, s)| (v * s) as f32)
                .collect()
        })
        .collect();
    let mut out = Windows {
        context,
        channels,
        inputs: Vec::new(),
        targets: Vec::new(),
    };
    if context == 0 {
        return out;
    }
    for end in context..scaled.len() {
        out.inputs.push(scaled[end - context..end].concat());
        out.targets.push(scaled[end].clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lydlr_codec::{SampleType, SensorKind};

    #[test]
    fn windows_are_causal_and_scaled() {
        let schema = StreamSchema {
            name: "s".into(),
            kind: SensorKind::Other,
            sample_type: SampleType::F64,
            channels: vec!["a".into(), "b".into()],
            units: vec!["".into(), "".into()],
            rate_hz: 10.0,
            noise_sigma: vec![0.5, 0.0],
            lsb: vec![None, None],
        };
        let frames: Vec<Frame> = (0..5)
            .map(|i| Frame::new(i, vec![i as f64, 10.0 * i as f64]))
            .collect();
        let w = windows(&schema, &frames, 2);
        assert_eq!(w.inputs.len(), 3);
        assert_eq!(w.inputs[0], vec![0.0, 0.0, 2.0, 10.0]);
        assert_eq!(w.targets[0], vec![4.0, 20.0]);
        assert_eq!(windows(&schema, &frames, 9).inputs.len(), 0);
    }
}
