//! Any byte string given to the packet decoder (lossless and bounded codecs, with the IMU
//! schema) returns frames or a `CodecError`; it never panics, and a packet that decodes
//! re-encodes losslessly to frames that decode to the same bits, and decoding into columns
//! gives the same values or the same error. The input is tried as it is and with its CRC made
//! valid, so that the fuzzer reaches the payload decoders too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lydlr_codec::{
    Codec, LosslessCodec, decode_packet, decode_packet_columns, synthetic::imu_schema,
};

fuzz_target!(|data: &[u8]| {
    let schema = imu_schema();
    let mut fixed = data.to_vec();
    if fixed.len() >= 28 {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&fixed[..24]), &fixed[28..]);
        fixed[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    for bytes in [data, fixed.as_slice()] {
        let decoded = decode_packet(&schema, bytes);
        match (&decoded, decode_packet_columns(&schema, bytes)) {
            (Ok(frames), Ok((times, columns))) => {
                for (i, frame) in frames.iter().enumerate() {
                    assert_eq!(frame.timestamp_ns, times[i]);
                    for (value, column) in frame.values.iter().zip(&columns) {
                        assert_eq!(value.to_bits(), column[i].to_bits());
                    }
                }
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("frames {:?} but columns {:?}", a.is_ok(), b.is_ok()),
        }
        if let Ok(frames) = decoded
            && let Ok(packet) = LosslessCodec.encode(&schema, &frames)
        {
            let back = LosslessCodec
                .decode(&schema, &packet)
                .expect("own packet decodes");
            assert!(frames.iter().zip(&back).all(|(a, b)| a.bit_eq(b)));
        }
    }
});
