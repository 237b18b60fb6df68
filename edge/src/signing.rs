//! The operator's ed25519 signatures over what a node is sent to run: a model package's
//! manifest (which pins every weights file by sha256) and a script's source. Keys and
//! signatures travel as hex; a `.sig` file holds the 64 raw signature bytes.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Parses a hex ed25519 public key (64 hex digits).
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, String> {
    let bytes = hex_bytes::<32>(hex).ok_or_else(|| format!("{hex:?} is not 64 hex digits"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{hex:?} is not an ed25519 key: {e}"))
}

/// Parses a hex secret key (64 hex digits), as `lydlr keygen` writes it.
pub fn parse_secret_key(hex: &str) -> Result<SigningKey, String> {
    let bytes = hex_bytes::<32>(hex).ok_or("a secret key is 64 hex digits")?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A new key pair from the operating system's randomness: (secret hex, public hex).
pub fn generate_key_pair() -> std::io::Result<(String, String)> {
    let mut secret = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut secret)?;
    let key = SigningKey::from_bytes(&secret);
    Ok((to_hex(&secret), to_hex(key.verifying_key().as_bytes())))
}

/// The signature a holder of `secret` makes over `message`.
pub fn sign(message: &[u8], secret: &[u8; 32]) -> [u8; 64] {
    SigningKey::from_bytes(secret).sign(message).to_bytes()
}

/// Whether one of `keys` signed `message` (`verify_strict`: no malleable signatures).
pub fn verify(message: &[u8], signature: &[u8], keys: &[VerifyingKey]) -> Result<(), String> {
    let signature = Signature::from_slice(signature)
        .map_err(|_| "the signature is not 64 bytes of ed25519".to_owned())?;
    if keys
        .iter()
        .any(|key| key.verify_strict(message, &signature).is_ok())
    {
        Ok(())
    } else {
        Err("the signature does not verify with any configured key".into())
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2 N` hex digits.
pub fn hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_signs_and_verifies_and_nothing_else_does() {
        let (secret, public) = generate_key_pair().unwrap();
        let secret: [u8; 32] = hex_bytes(&secret).unwrap();
        let key = parse_public_key(&public).unwrap();
        let signature = sign(b"fn on_frame(f) { f }", &secret);
        assert!(verify(b"fn on_frame(f) { f }", &signature, &[key]).is_ok());
        assert!(verify(b"fn on_frame(f) { () }", &signature, &[key]).is_err());
        assert!(verify(b"fn on_frame(f) { f }", &signature[..63], &[key]).is_err());
        let (_, other) = generate_key_pair().unwrap();
        let other = parse_public_key(&other).unwrap();
        assert!(verify(b"fn on_frame(f) { f }", &signature, &[other]).is_err());
        assert!(parse_public_key("zz").is_err() && parse_secret_key("00").is_err());
    }
}
