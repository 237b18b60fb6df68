//! Codec speed: throughput of 1000-frame IMU blocks and latency of 10-frame blocks.
//! `cargo bench -p lydlr-codec`; `lydlr bench codec` prints the same figures as JSON.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lydlr_codec::{
    BoundedCodec, Codec, ErrorBound, Frame, LosslessCodec, SampleType, SensorKind, StreamSchema,
    quantize_to_lsb,
};

fn imu_schema() -> StreamSchema {
    let acc = 16.0 * 9.80665 / 32768.0;
    let gyro = 2000f64.to_radians() / 32768.0;
    StreamSchema {
        name: "imu".into(),
        kind: SensorKind::Imu,
        sample_type: SampleType::F32,
        channels: ["ax", "ay", "az", "gx", "gy", "gz"]
            .map(String::from)
            .to_vec(),
        units: vec![String::new(); 6],
        rate_hz: 200.0,
        noise_sigma: vec![0.022, 0.022, 0.022, 0.0035, 0.0035, 0.0035],
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

fn imu_frames(n: usize) -> Vec<Frame> {
    let schema = imu_schema();
    let mut state = 3u64;
    (0..n)
        .map(|i| {
            let values = (0..6)
                .map(|c| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                    let x = (i as f64 * 0.02 + c as f64).sin() + 3.0 * u * schema.noise_sigma[c];
                    quantize_to_lsb(x, schema.lsb[c].unwrap_or(1.0), SampleType::F32)
                })
                .collect();
            Frame::new(i as i64 * 5_000_000, values)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let schema = imu_schema();
    let block = imu_frames(1000);
    let raw_bytes = (block.len() * 6 * 4) as u64;
    let codecs: [(&str, Box<dyn Codec>); 2] = [
        ("lossless", Box::new(LosslessCodec)),
        (
            "bounded-1sigma",
            Box::new(BoundedCodec::new(ErrorBound::Sigma(1.0))),
        ),
    ];
    let mut group = c.benchmark_group("imu-1000-frames");
    group.throughput(Throughput::Bytes(raw_bytes));
    for (name, codec) in &codecs {
        let packet = codec.encode(&schema, &block).expect("encodes");
        group.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| codec.encode(&schema, black_box(&block)))
        });
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| codec.decode(&schema, black_box(&packet)))
        });
    }
    group.finish();

    let small = imu_frames(10);
    c.bench_function("imu-10-frames/lossless/encode", |b| {
        b.iter(|| LosslessCodec.encode(&schema, black_box(&small)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
