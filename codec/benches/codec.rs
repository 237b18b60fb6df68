//! Codec speed: throughput of 1000-frame IMU blocks and latency of 10-frame blocks.
//! `cargo bench -p lydlr-codec`; `lydlr bench codec` prints the same figures as JSON.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lydlr_codec::synthetic::{imu_frames, imu_schema};
use lydlr_codec::{BoundedCodec, Codec, ErrorBound, LosslessCodec};

fn bench(c: &mut Criterion) {
    let schema = imu_schema();
    let block = imu_frames(1000, 3, 3.0);
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

    let small = imu_frames(10, 3, 3.0);
    c.bench_function("imu-10-frames/lossless/encode", |b| {
        b.iter(|| LosslessCodec.encode(&schema, black_box(&small)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
