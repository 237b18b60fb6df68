//! Neural packets: any payload behind a valid container header decodes or fails cleanly, with
//! and without conditioning frames.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lydlr_codec::neural::untrained_model;
use lydlr_codec::synthetic::imu_schema;
use lydlr_codec::{CodecId, ErrorBound, Frame, NeuralCodec, Packet, PacketHeader};

fuzz_target!(|data: &[u8]| {
    static CODEC: OnceLock<NeuralCodec> = OnceLock::new();
    let schema = imu_schema();
    let codec = CODEC.get_or_init(|| {
        NeuralCodec::new(
            Arc::new(untrained_model(&schema, 8, 16, 1)),
            ErrorBound::Sigma(1.0),
            1,
        )
    });
    let Some((&count, payload)) = data.split_first() else {
        return;
    };
    let packet = Packet {
        header: PacketHeader::for_block(
            CodecId::Neural,
            lydlr_codec::neural::VERSION,
            1,
            &schema,
            u16::from(count) + 1,
            0,
        ),
        payload: payload.to_vec(),
    };
    let condition: Vec<Frame> = (0..4)
        .map(|i| Frame::new(i * 5_000_000, vec![1.0, -1.0]))
        .collect();
    let _ = codec.decode_conditioned(&schema, &packet, None);
    let _ = codec.decode_conditioned(&schema, &packet, Some(&condition));
});
