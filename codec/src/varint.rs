//! LEB128 unsigned varints and a bounds-checked byte reader.

use crate::CodecError;

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A cursor over untrusted bytes: every read is checked, none panics.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated {
                needed: self.pos.saturating_add(n),
                available: self.bytes.len(),
            });
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift == 63 && byte > 1 {
                    break;
                }
                return Ok(value);
            }
        }
        Err(CodecError::Corrupt("varint longer than 64 bits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`neural_decode`): a length read from a corrupt packet can be
    /// anything; asking for more than there is is `Truncated`, however much it is.
    #[test]
    fn taking_an_absurd_length_is_truncated_not_an_overflow() {
        let mut reader = Reader::new(&[1, 2, 3]);
        reader.u8().unwrap();
        assert_eq!(
            reader.take(usize::MAX),
            Err(CodecError::Truncated {
                needed: usize::MAX,
                available: 3
            })
        );
        assert_eq!(reader.take(2), Ok(&[2u8, 3][..]));
    }

    #[test]
    fn uvarint_round_trips_edges() {
        for value in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, value);
            assert_eq!(Reader::new(&buf).uvarint().unwrap(), value);
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let buf = [0xffu8; 11];
        assert!(Reader::new(&buf).uvarint().is_err());
        assert!(Reader::new(&[0x80]).uvarint().is_err());
    }
}
