//! Synthetic IMU blocks for tests and benchmarks: slow sinusoids, gravity on the z axis, and
//! uniform noise of a chosen width, on the ADC grid of a 16-bit IMU. Not a sensor model
//! (that is the simulator's job); just reproducible data with a known shape.

use crate::{Frame, SampleType, SensorKind, StreamSchema, quantize_to_lsb};

/// A 200 Hz, 16-bit, +-16 g / +-2000 deg/s IMU.
pub fn imu_schema() -> StreamSchema {
    let acc = 16.0 * 9.80665 / 32768.0;
    let gyro = 2000f64.to_radians() / 32768.0;
    StreamSchema {
        name: "imu".into(),
        kind: SensorKind::Imu,
        sample_type: SampleType::F32,
        channels: ["ax", "ay", "az", "gx", "gy", "gz"]
            .map(String::from)
            .to_vec(),
        units: ["m/s^2", "m/s^2", "m/s^2", "rad/s", "rad/s", "rad/s"]
            .map(String::from)
            .to_vec(),
        rate_hz: 200.0,
        noise_sigma: vec![0.02, 0.02, 0.02, 0.002, 0.002, 0.002],
        lsb: vec![
            Some(acc),
            Some(acc),
            Some(acc),
            Some(gyro),
            Some(gyro),
            Some(gyro),
        ],
    }
}

/// `n` frames from `seed`; the noise is uniform over `noise` times each channel's sigma.
pub fn imu_frames(n: usize, seed: u64, noise: f64) -> Vec<Frame> {
    let schema = imu_schema();
    let mut uniform = uniform_source(seed);
    (0..n)
        .map(|i| {
            let t = i as f64 / schema.rate_hz;
            let values = (0..6)
                .map(|c| {
                    let signal = match c {
                        0 => 0.3 * (t * 3.0).sin(),
                        2 => 9.80665,
                        5 => 0.5 * (t * 2.0).cos(),
                        _ => 0.0,
                    };
                    let x = signal + noise * schema.noise_sigma[c] * (uniform() - 0.5);
                    quantize_to_lsb(x, schema.lsb[c].unwrap_or(1.0), SampleType::F32)
                })
                .collect();
            Frame::new(1_000_000_000 + i as i64 * 5_000_000, values)
        })
        .collect()
}

/// A 2D lidar (`beams` a degree apart, 1 mm steps, 10 Hz) facing a wall while the robot
/// drives to and fro, with an obstacle's edge moving across the beams: each beam's range
/// moves as the beam before did, and jumps where it jumped a scan earlier or later.
pub fn lidar_scans(beams: usize, scans: usize) -> (StreamSchema, Vec<Frame>) {
    let schema = StreamSchema {
        name: "lidar".into(),
        kind: SensorKind::Lidar,
        sample_type: SampleType::F32,
        channels: (0..beams).map(|b| format!("range_{b}")).collect(),
        units: vec!["m".into(); beams],
        rate_hz: 10.0,
        noise_sigma: vec![0.002; beams],
        lsb: vec![Some(0.001); beams],
    };
    let mut uniform = uniform_source(4);
    let (mut wall, mut speed) = (3.0, 0.0);
    let frames = (0..scans)
        .map(|t| {
            // The robot's speed towards the wall wanders, so no beam's own past
            // foretells its next range; its neighbour's present does.
            speed = (speed + (uniform() - 0.5) * 0.04).clamp(-0.2, 0.2);
            if !(1.5..6.0).contains(&(wall + speed)) {
                speed = -speed;
            }
            wall += speed;
            let edge = (t / 10) % beams;
            let ranges = (0..beams).map(|b| {
                // A degree apart, as a 360-beam scanner's.
                let angle = (b as f64 - beams as f64 / 2.0).to_radians();
                let range = if (edge..edge + 6).contains(&b) {
                    1.2 + 0.1 * (t as f64 * 0.05).cos()
                } else {
                    wall / angle.cos()
                } + (uniform() - 0.5) * 0.006;
                quantize_to_lsb(range, 0.001, SampleType::F32)
            });
            Frame::new(t as i64 * 100_000_000, ranges.collect())
        })
        .collect();
    (schema, frames)
}

/// `frames` with a lidar's no-returns, reported as a range of 0: each sample dropped with
/// probability `rate`, and the first `beams` beams seeing nothing within range for the
/// scans in `out_of_range`; and how many samples read 0.
pub fn with_no_returns(
    frames: &[Frame],
    rate: f64,
    beams: usize,
    out_of_range: std::ops::Range<usize>,
) -> (Vec<Frame>, usize) {
    let mut uniform = uniform_source(9);
    let mut no_returns = 0;
    let frames = frames
        .iter()
        .enumerate()
        .map(|(t, frame)| {
            let values = frame.values.iter().enumerate().map(|(b, &range)| {
                let dropped = uniform() < rate || (b < beams && out_of_range.contains(&t));
                no_returns += usize::from(dropped || range == 0.0);
                if dropped { 0.0 } else { range }
            });
            Frame::new(frame.timestamp_ns, values.collect())
        })
        .collect();
    (frames, no_returns)
}

/// Reproducible uniform numbers in `[0, 1)` from `seed` (a 64-bit linear congruential
/// generator: enough for test data, no statistics claimed beyond that).
pub fn uniform_source(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}
