//! Timing of repeated runs, for `lydlr eval` and `lydlr bench`: the fastest run of enough to
//! fill a window of time.

use std::time::{Duration, Instant};

/// What `lydlr eval` and `lydlr bench codec` time each figure over.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(300);

/// `f`'s last result and the seconds of its fastest run, of at least three runs that
/// together fill `window`.
///
/// The window is filled however quick the runs: a CPU coming out of idle runs slower for its
/// first few milliseconds, and the runs of a small input (a 1000-row CSV, a 160 KB stream)
/// would all fall inside them. A cap of 50 runs had made `lydlr eval`'s figures for such
/// inputs bimodal.
pub fn time_it<T, E: Into<anyhow::Error>>(
    window: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> anyhow::Result<(T, f64)> {
    let mut best = f64::INFINITY;
    let mut spent = Duration::ZERO;
    let mut result = None;
    let mut runs = 0;
    while runs < 3 || spent < window {
        let started = Instant::now();
        let r = f().map_err(Into::into)?;
        let took = started.elapsed();
        best = best.min(took.as_secs_f64());
        spent += took;
        runs += 1;
        result = Some(r);
    }
    let result = result.ok_or_else(|| anyhow::anyhow!("no run"))?;
    Ok((result, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_fills_its_window_however_quick_the_runs() {
        let window = Duration::from_millis(20);
        let mut runs = 0u64;
        let started = Instant::now();
        let (last, fastest) = time_it(window, || {
            runs += 1;
            Ok::<_, anyhow::Error>(runs)
        })
        .unwrap();
        // Quick runs are not cut off at a count: they go on until they fill the window.
        assert!(started.elapsed() >= window);
        assert!(runs > 50, "only {runs} runs");
        assert_eq!(last, runs, "the last run's result comes back");
        assert!(fastest < window.as_secs_f64());

        let mut runs = 0;
        time_it(Duration::ZERO, || {
            runs += 1;
            Ok::<_, anyhow::Error>(())
        })
        .unwrap();
        assert_eq!(runs, 3, "at least three runs");
    }
}
