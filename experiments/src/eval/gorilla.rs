//! Gorilla (Pelkonen et al., VLDB 2015): delta-of-delta timestamps and XOR-compressed floats,
//! as time-series databases use it; a baseline for `lydlr eval`.

struct BitWriter {
    bytes: Vec<u8>,
    bits: u64,
    filled: u32,
}

impl BitWriter {
    fn new() -> Self {
        Self {
            bytes: Vec::new(),
            bits: 0,
            filled: 0,
        }
    }

    fn put(&mut self, value: u64, count: u32) {
        for i in (0..count).rev() {
            self.bits = (self.bits << 1) | ((value >> i) & 1);
            self.filled += 1;
            if self.filled == 8 {
                self.bytes.push(self.bits as u8);
                self.bits = 0;
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.bytes.push((self.bits << (8 - self.filled)) as u8);
        }
        self.bytes
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn get(&mut self, count: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..count {
            let byte = *self.bytes.get(self.pos / 8)?;
            v = (v << 1) | u64::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }
}

/// Encodes timestamps then each column; `width` is 32 for f32 values, 64 for f64.
pub fn encode(t_ns: &[i64], columns: &[Vec<f64>], width: u32) -> Vec<u8> {
    let mut w = BitWriter::new();
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for (i, &t) in t_ns.iter().enumerate() {
        if i == 0 {
            w.put(t as u64, 64);
        } else {
            let delta = t.wrapping_sub(prev);
            let dod = delta.wrapping_sub(prev_delta);
            match dod {
                0 => w.put(0, 1),
                -63..=64 => {
                    w.put(0b10, 2);
                    w.put(dod as u64 & 0x7f, 7);
                }
                -255..=256 => {
                    w.put(0b110, 3);
                    w.put(dod as u64 & 0x1ff, 9);
                }
                -2047..=2048 => {
                    w.put(0b1110, 4);
                    w.put(dod as u64 & 0xfff, 12);
                }
                _ => {
                    w.put(0b1111, 4);
                    w.put(dod as u64, 64);
                }
            }
            prev_delta = delta;
        }
        prev = t;
    }
    let (lead_bits, len_bits) = if width == 32 { (5, 6) } else { (6, 7) };
    for column in columns {
        let bits = |v: f64| {
            if width == 32 {
                u64::from((v as f32).to_bits())
            } else {
                v.to_bits()
            }
        };
        let mut previous = 0u64;
        let (mut lead, mut trail) = (u32::MAX, 0u32);
        for (i, &v) in column.iter().enumerate() {
            let b = bits(v);
            if i == 0 {
                w.put(b, width);
                previous = b;
                continue;
            }
            let xor = b ^ previous;
            previous = b;
            if xor == 0 {
                w.put(0, 1);
                continue;
            }
            let l = (xor.leading_zeros() - (64 - width)).min((1 << lead_bits) - 1);
            let t = xor.trailing_zeros();
            if lead != u32::MAX && l >= lead && t >= trail {
                w.put(0b10, 2);
                w.put(xor >> trail, width - lead - trail);
            } else {
                let meaningful = width - l - t;
                w.put(0b11, 2);
                w.put(u64::from(l), lead_bits);
                // `meaningful` is 1..=width; store width as 0.
                w.put(u64::from(meaningful % width), len_bits);
                w.put(xor >> t, meaningful);
                lead = l;
                trail = t;
            }
        }
    }
    w.finish()
}

/// Decodes what [`encode`] wrote, given the row and column counts.
pub fn decode(
    bytes: &[u8],
    rows: usize,
    columns: usize,
    width: u32,
) -> Option<(Vec<i64>, Vec<Vec<f64>>)> {
    let mut r = BitReader { bytes, pos: 0 };
    let mut t_ns = Vec::with_capacity(rows);
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    let sign_extend = |v: u64, bits: u32| ((v << (64 - bits)) as i64) >> (64 - bits);
    for i in 0..rows {
        let t = if i == 0 {
            r.get(64)? as i64
        } else {
            let dod = if r.get(1)? == 0 {
                0
            } else if r.get(1)? == 0 {
                sign_extend(r.get(7)?, 7)
            } else if r.get(1)? == 0 {
                sign_extend(r.get(9)?, 9)
            } else if r.get(1)? == 0 {
                sign_extend(r.get(12)?, 12)
            } else {
                r.get(64)? as i64
            };
            let delta = prev_delta.wrapping_add(dod);
            prev_delta = delta;
            prev.wrapping_add(delta)
        };
        t_ns.push(t);
        prev = t;
    }
    let (lead_bits, len_bits) = if width == 32 { (5, 6) } else { (6, 7) };
    let value = |b: u64| {
        if width == 32 {
            f64::from(f32::from_bits(b as u32))
        } else {
            f64::from_bits(b)
        }
    };
    let mut out = Vec::with_capacity(columns);
    for _ in 0..columns {
        let mut column = Vec::with_capacity(rows);
        let mut previous = 0u64;
        let (mut lead, mut trail) = (0u32, 0u32);
        for i in 0..rows {
            let b = if i == 0 {
                r.get(width)?
            } else if r.get(1)? == 0 {
                previous
            } else if r.get(1)? == 0 {
                previous ^ (r.get(width - lead - trail)? << trail)
            } else {
                lead = r.get(lead_bits)? as u32;
                let meaningful = match r.get(len_bits)? as u32 {
                    0 => width,
                    m => m,
                };
                trail = width.checked_sub(lead + meaningful)?;
                previous ^ (r.get(meaningful)? << trail)
            };
            column.push(value(b));
            previous = b;
        }
        out.push(column);
    }
    Some((t_ns, out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_f32_and_f64() {
        let t: Vec<i64> = (0..300).map(|i| i * 5_000_000 + (i % 7) * 1000).collect();
        let columns = vec![
            (0..300)
                .map(|i| (i as f64 * 0.1).sin())
                .collect::<Vec<f64>>(),
            (0..300)
                .map(|i| if i % 50 == 0 { f64::NAN } else { -1.5 })
                .collect(),
        ];
        for width in [32, 64] {
            let expect: Vec<Vec<f64>> = columns
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|&v| if width == 32 { f64::from(v as f32) } else { v })
                        .collect()
                })
                .collect();
            let bytes = super::encode(&t, &columns, width);
            let (t2, c2) = super::decode(&bytes, 300, 2, width).unwrap();
            assert_eq!(t2, t);
            for (a, b) in expect.iter().zip(&c2) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
    }
}
