//! Any byte string given to the packet decoder (lossless and bounded codecs, with the IMU
//! schema) returns frames or a `CodecError`; it never panics, and a packet that decodes
//! re-encodes losslessly to frames that decode to the same bits. The input is tried as it is
//! and with its CRC made valid, so that the fuzzer reaches the payload decoders too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lydlr_codec::{Codec, LosslessCodec, decode_packet, synthetic::imu_schema};

fuzz_target!(|data: &[u8]| {
    let schema = imu_schema();
    let mut fixed = data.to_vec();
    if fixed.len() >= 28 {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&fixed[..24]), &fixed[28..]);
        fixed[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    for bytes in [data, fixed.as_slice()] {
        if let Ok(frames) = decode_packet(&schema, bytes)
            && let Ok(packet) = LosslessCodec.encode(&schema, &frames)
        {
            let back = LosslessCodec
                .decode(&schema, &packet)
                .expect("own packet decodes");
            assert!(frames.iter().zip(&back).all(|(a, b)| a.bit_eq(b)));
        }
    }
});
