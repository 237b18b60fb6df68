//! Writes the seed corpus of the codec's fuzz targets (`codec/fuzz/corpus/<target>/`): real
//! packets of every codec and a small model package, so that the fuzzer starts from valid
//! inputs and mutates inwards. `cargo run -p lydlr-codec --example fuzz_seeds -- codec/fuzz/corpus`

use std::path::PathBuf;
use std::sync::Arc;

use lydlr_codec::neural::untrained_model;
use lydlr_codec::synthetic::{imu_frames, imu_schema};
use lydlr_codec::{BoundedCodec, Codec, ErrorBound, LosslessCodec, NeuralCodec};

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or("codec/fuzz/corpus".into()),
    );
    let schema = imu_schema();
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    };
    for (i, n) in [1usize, 10, 200].into_iter().enumerate() {
        let frames = imu_frames(n, i as u64, 5.0);
        let lossless = LosslessCodec.encode(&schema, &frames).expect("encodes");
        write(
            "decode_packet",
            &format!("lossless-{n}"),
            &lossless.to_bytes(),
        )?;
        for k in [0.5, 4.0] {
            let bounded = BoundedCodec::new(ErrorBound::Sigma(k)).encode(&schema, &frames);
            write(
                "decode_packet",
                &format!("bounded-{k}-{n}"),
                &bounded.expect("encodes").to_bytes(),
            )?;
        }
        let model = Arc::new(untrained_model(&schema, 8, 16, 1));
        let neural = NeuralCodec::new(model, ErrorBound::Sigma(1.0), 1);
        let packet = neural.encode(&schema, &frames).expect("encodes");
        // The target takes the frame count (minus one) first, then the payload.
        let mut seed = vec![(packet.header.frame_count - 1) as u8];
        seed.extend_from_slice(&packet.payload);
        write("neural_decode", &format!("neural-{n}"), &seed)?;
    }
    let model = untrained_model(&schema, 4, 8, 2);
    let weights = model.to_burnpack();
    let manifest = format!(
        "format = 1\nversion = \"seed\"\n[training]\ncommand = \"seed\"\ndata_sha256 = \"\"\nseeds = []\nframes = 0\n[[models]]\nstream = \"imu\"\nkind = \"imu\"\nschema_hash = \"0\"\nchannels = {:?}\nconditions = {:?}\nquality_sigmas = [1.0]\nweights = \"imu.bpk\"\nsha256 = \"{}\"\nfingerprint = \"{:016x}\"\n",
        model.shape.channels,
        model.shape.conditions,
        lydlr_codec::sha256_hex(&weights),
        model.fingerprint
    );
    // The target splits at the first zero byte: the manifest, the zero, then the weights.
    let mut seed = manifest.into_bytes();
    seed.push(0);
    seed.extend_from_slice(&weights);
    write("model_package", "package", &seed)?;
    write("model_package", "weights-only", &weights)?;
    Ok(())
}
