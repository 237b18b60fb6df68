//! Division by a divisor known in advance, by one multiplication: of 32-bit numerators
//! ([`Divisor`]), and of exact multiples ([`ExactDivisor`]).

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

/// Division of exact multiples of a divisor known in advance: `q d` divided by `d =
/// 2^s m` (`m` odd) is `(q d >> s)` times `m`'s inverse modulo 2^64, a shift and a
/// multiplication where a 64-bit division takes tens of cycles.
#[derive(Clone, Copy)]
pub(crate) struct ExactDivisor {
    divisor: i64,
    shift: u32,
    inverse: i64,
}

impl ExactDivisor {
    /// `divisor` must not be 0.
    pub(crate) fn new(divisor: i64) -> Self {
        debug_assert!(divisor != 0);
        let shift = divisor.trailing_zeros().min(63);
        let odd = divisor >> shift;
        // Newton's iteration doubles the correct low bits: 3 (x = m is right to 3 bits for
        // any odd m), 6, 12, 24, 48, 96.
        let mut inverse = odd;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2i64.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        Self {
            divisor,
            shift,
            inverse,
        }
    }

    /// Whether `n` is a multiple of the divisor, by a multiplication.
    #[inline(always)]
    pub(crate) fn divides(self, n: i64) -> bool {
        (n >> self.shift)
            .wrapping_mul(self.inverse)
            .checked_mul(self.divisor)
            == Some(n)
    }

    /// `n / divisor`, truncated: by multiplication where `n` is a multiple (checked), by
    /// division otherwise.
    #[inline(always)]
    pub(crate) fn quotient(self, n: i64) -> i64 {
        let q = (n >> self.shift).wrapping_mul(self.inverse);
        // Modulo 2^64 the product always comes back to `n`; without overflow only for a
        // multiple.
        if q.checked_mul(self.divisor) == Some(n) {
            q
        } else {
            n.wrapping_div(self.divisor)
        }
    }
}

pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_multiples_divide_as_the_division_does() {
        let mut uniform = crate::synthetic::uniform_source(9);
        let mut draw = |scale: f64| ((uniform() * 2.0 - 1.0) * scale) as i64;
        let mut divisors = vec![1, 2, 3, 7, 10_000_000, 1 << 40, 3 << 50, -3, i64::MIN];
        divisors.extend((0..200).map(|_| draw(1e15) | 1));
        for divisor in divisors {
            let exact = ExactDivisor::new(divisor);
            let mut numerators: Vec<i64> =
                (0..200).map(|_| draw(1e6).wrapping_mul(divisor)).collect();
            numerators.extend((0..50).map(|_| draw(9e18)));
            numerators.extend([0, i64::MAX, i64::MIN, divisor, divisor.wrapping_neg()]);
            for n in numerators {
                assert_eq!(
                    exact.divides(n),
                    n.checked_rem(divisor).is_none_or(|r| r == 0)
                );
                assert_eq!(
                    exact.quotient(n),
                    n.wrapping_div(divisor),
                    "{n} / {divisor}"
                );
            }
        }
    }

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
