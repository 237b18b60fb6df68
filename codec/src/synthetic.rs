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
