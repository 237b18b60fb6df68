//! Model packages from untrusted bytes: a manifest and a weights file either load (verified)
//! or are refused with a reason; nothing panics or allocates without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lydlr_codec::{ModelPackage, NeuralModel};

fuzz_target!(|data: &[u8]| {
    let _ = NeuralModel::from_burnpack(data);
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (manifest, weights) = data.split_at(split);
    if let Ok(text) = std::str::from_utf8(manifest) {
        let _ = ModelPackage::load(text, |_| Ok(weights.get(1..).unwrap_or(&[]).to_vec()));
    }
});
