//! `lydlr keygen` and `lydlr sign`: what they write verifies with the public key, and only
//! for the bytes that were signed; a key is never overwritten.

use std::path::Path;

use lydlr_codec::neural::package::{MANIFEST_FILE, SIGNATURE_FILE};
use lydlr_edge::signing::{parse_public_key, verify};
use lydlr_experiments::operator::{keygen, script_load, sign};

#[test]
fn keygen_and_sign_make_signatures_nodes_accept() {
    let dir = std::env::temp_dir().join(format!("lydlr-signing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (secret, public) = keygen(&dir.join("operator")).unwrap();
    assert!(
        keygen(&dir.join("operator")).is_err(),
        "an existing key is kept"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the secret key is its owner's only");
    }
    let key = parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();

    // A package: manifest.sig over manifest.toml.
    let package = dir.join("package");
    std::fs::create_dir_all(&package).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, package.join(path.file_name().unwrap())).unwrap();
    }
    assert_eq!(
        sign(&secret, &package).unwrap(),
        package.join(SIGNATURE_FILE)
    );
    let manifest = std::fs::read(package.join(MANIFEST_FILE)).unwrap();
    let signature = std::fs::read(package.join(SIGNATURE_FILE)).unwrap();
    assert!(verify(&manifest, &signature, &[key]).is_ok());
    let mut altered = manifest.clone();
    altered[10] ^= 1;
    assert!(verify(&altered, &signature, &[key]).is_err());

    // A script: script.rhai.sig, carried by the load message.
    let script = dir.join("pass.rhai");
    std::fs::write(&script, "fn on_frame(frame) { frame }").unwrap();
    sign(&secret, &script).unwrap();
    let load = script_load(&script).unwrap();
    let signature = lydlr_edge::signing::hex_bytes::<64>(&load.signature.unwrap()).unwrap();
    assert!(verify(load.source.unwrap().as_bytes(), &signature, &[key]).is_ok());

    // A broken package is not signed.
    std::fs::write(package.join("imu.bpk"), b"not weights").unwrap();
    assert!(sign(&secret, &package).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
