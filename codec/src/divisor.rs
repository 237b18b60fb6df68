//! Division of 32-bit numerators by a divisor known in advance, by one multiplication.

/// A divisor with its reciprocal `ceil(2^64 / d)`: `n / d` is then the high half of
/// `reciprocal * n`, exactly, for every `n < 2^32` and `d >= 2` (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019; from `d = 2^32` on, both are 0). The
/// reciprocal does not wait on the numerator, so a chain of divisions by known divisors (the
/// rANS state's, the quantiser's) has a multiplication in it instead of a division.
#[derive(Clone, Copy)]
pub(crate) struct Divisor {
    /// 0 for a divisor of 1, which needs none.
    reciprocal: u64,
}

impl Divisor {
    /// `divisor` must be at least 1.
    #[inline(always)]
    pub(crate) fn new(divisor: u64) -> Self {
        debug_assert!(divisor >= 1);
        Self {
            reciprocal: match divisor {
                0 | 1 => 0,
                d => u64::MAX / d + 1,
            },
        }
    }

    #[inline(always)]
    pub(crate) fn quotient(self, n: u32) -> u32 {
        match self.reciprocal {
            0 => n,
            r => ((u128::from(r) * u128::from(n)) >> 64) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quotient_is_exact_for_every_small_divisor_and_wide_ones() {
        let mut uniform = crate::synthetic::uniform_source(8);
        let wide = [1 << 32, (1 << 32) + 1, 1 << 40, u64::MAX];
        for divisor in (1..=1u64 << 15).chain(wide) {
            let at = |k: u64| k.checked_mul(divisor).and_then(|m| u32::try_from(m).ok());
            let multiples = [1, 2, 3, u64::from(u32::MAX) / divisor].map(at);
            let random = (0..8).map(|_| (uniform() * f64::from(u32::MAX)) as u32);
            for n in multiples
                .into_iter()
                .flatten()
                .flat_map(|m| [m.saturating_sub(1), m, m.saturating_add(1)])
                .chain([0, 1 << 16, u32::MAX])
                .chain(random)
            {
                let quotient = Divisor::new(divisor).quotient(n);
                assert_eq!(
                    u64::from(quotient),
                    u64::from(n) / divisor,
                    "{n} / {divisor}"
                );
            }
        }
    }
}
