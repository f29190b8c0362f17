//! When a batched webhook is tried again, as a pure decision. The schedule
//! is Svix's (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 28 hours in
//! all, so a receiver may be down a whole day); a 429's `Retry-After` is
//! honoured when it asks for longer.

/// Delays after the first attempt, in milliseconds.
pub const SCHEDULE_MS: [u64; 7] = [
    5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

/// After `failed` attempts have failed (1 for the first), how long to wait
/// before the next; `None` when the schedule is spent.
pub fn next_delay(failed: u32, retry_after_ms: Option<u64>) -> Option<u64> {
    let index = usize::try_from(failed.checked_sub(1)?).ok()?;
    let planned = *SCHEDULE_MS.get(index)?;
    // A Retry-After beyond a day is not a plan we can keep.
    let asked = retry_after_ms.unwrap_or(0).min(86_400_000);
    Some(planned.max(asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_covers_a_day_and_honours_retry_after() {
        let cases = [
            (0, None, None),
            (1, None, Some(5_000)),
            (2, None, Some(300_000)),
            (7, None, Some(36_000_000)),
            (8, None, None),
            (1, Some(60_000), Some(60_000)),
            (2, Some(1_000), Some(300_000)),
            (1, Some(u64::MAX), Some(86_400_000)),
        ];
        for (failed, retry_after, expected) in cases {
            assert_eq!(
                next_delay(failed, retry_after),
                expected,
                "{failed} {retry_after:?}"
            );
        }
        let total: u64 = SCHEDULE_MS.iter().sum();
        assert!(total >= 24 * 3_600_000, "{total}");
    }
}
