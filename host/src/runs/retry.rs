//! When something that failed is tried again: a failed step (a pure
//! function of the policy, the attempt number, the time of the first failure
//! and the error, so the schedule can be persisted and tested without a
//! clock), a webhook delivery the plugin could not process yet, and a poll
//! that failed. All three back off the same way: [`Backoff`].
//!
//! A step's default spans a day and a bit (Svix retries for ~28 h, n8n gives
//! up after ~20 s): exponential from 2 s, doubling, capped at one hour
//! between attempts, with ±20% jitter so a recovering third party is not hit
//! by every waiting run at the same instant.

use serde::{Deserialize, Serialize};

use crate::{
    engine::{CallError, ConnectorError},
    flows::RetrySpec,
};

/// Exponential back-off: `initial_ms` after the first failure, doubling
/// with each further one, never more than `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// A webhook delivery the plugin could not process now (a trap, a
    /// timeout): 2 s, 4 s, ... up to 5 minutes, until it is a day old.
    pub const INBOX: Backoff = Backoff {
        initial_ms: 2_000,
        max_ms: 300_000,
    };

    /// A poll that failed: twice the trigger's interval, doubling, up to 64
    /// intervals and never more than an hour.
    pub fn poll(interval_ms: u64) -> Backoff {
        Backoff {
            initial_ms: interval_ms.saturating_mul(2),
            max_ms: interval_ms.saturating_mul(64).min(3600 * 1000),
        }
    }

    /// The delay after `failures` failures in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> u64 {
        let exp = failures.saturating_sub(1).min(40);
        self.initial_ms.saturating_mul(1u64 << exp).min(self.max_ms)
    }
}

/// How a step is retried. Every field has a default; a flow may override
/// any of them per step (`retry:` in the flow definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// No attempt starts later than this after the first failure.
    pub max_elapsed_ms: u64,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 40,
            max_elapsed_ms: 26 * 3600 * 1000,
            initial_delay_ms: 2_000,
            max_delay_ms: 3600 * 1000,
        }
    }
}

/// What the executor does after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again at this time (ms since the epoch).
    RetryAt(u64),
    /// The credentials are bad: pause the connection, park the run.
    PauseConnection,
    /// Retrying cannot help, or the schedule is used up.
    Fail { exhausted: bool },
}

/// Whether an error is worth retrying, and how.
pub fn classify(error: &CallError) -> ErrorClass {
    match error {
        CallError::Connector { error } => match error {
            ConnectorError::Transient { .. } => ErrorClass::Transient,
            ConnectorError::RateLimited { retry_after_ms, .. } => {
                ErrorClass::RateLimited(*retry_after_ms)
            }
            ConnectorError::Auth { .. } => ErrorClass::Auth,
            ConnectorError::InvalidInput { .. } | ConnectorError::Permanent { .. } => {
                ErrorClass::Permanent
            }
        },
        // A deadline can be a slow third party; an exhausted instance pool is
        // load. Both pass.
        CallError::Timeout { .. } | CallError::Instantiate { .. } => ErrorClass::Transient,
        // A trap or a memory bomb is a bug in that plugin version: the same
        // input will do the same again.
        CallError::Trap { .. } | CallError::MemoryLimit { .. } => ErrorClass::Permanent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Transient,
    RateLimited(u64),
    Auth,
    Permanent,
}

impl RetryPolicy {
    /// The policy of a step: its `retry:` overrides over the defaults.
    pub fn for_step(spec: Option<&RetrySpec>) -> RetryPolicy {
        let base = RetryPolicy::default();
        let Some(spec) = spec else { return base };
        RetryPolicy {
            max_attempts: spec.max_attempts.unwrap_or(base.max_attempts).max(1),
            max_elapsed_ms: spec
                .max_elapsed_secs
                .map_or(base.max_elapsed_ms, |s| s.saturating_mul(1000)),
            initial_delay_ms: spec.initial_delay_ms.unwrap_or(base.initial_delay_ms),
            max_delay_ms: spec.max_delay_ms.unwrap_or(base.max_delay_ms),
        }
    }

    /// The delay before attempt `attempt + 1`, before jitter.
    pub fn base_delay(&self, attempt: u32) -> u64 {
        Backoff {
            initial_ms: self.initial_delay_ms,
            max_ms: self.max_delay_ms,
        }
        .delay(attempt)
    }

    /// Decides after attempt number `attempt` (1 for the first) failed at
    /// `now`; `first_failure` is when the step first failed. `jitter` is in
    /// [-1, 1] (random in production, fixed in tests).
    pub fn decide(
        &self,
        class: ErrorClass,
        attempt: u32,
        first_failure: u64,
        now: u64,
        jitter: f64,
    ) -> Verdict {
        let delay = match class {
            ErrorClass::Permanent => return Verdict::Fail { exhausted: false },
            ErrorClass::Auth => return Verdict::PauseConnection,
            ErrorClass::Transient => {
                let base = self.base_delay(attempt) as f64;
                (base * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0))).max(0.0) as u64
            }
            // The third party said when: wait that long (plus a little, so
            // waiting runs do not arrive in one burst), never less.
            ErrorClass::RateLimited(after) => after + (after as f64 * 0.1 * jitter.abs()) as u64,
        };
        let at = now + delay;
        if attempt >= self.max_attempts || at > first_failure + self.max_elapsed_ms {
            return Verdict::Fail { exhausted: true };
        }
        Verdict::RetryAt(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(error: ConnectorError) -> CallError {
        CallError::Connector { error }
    }

    #[test]
    fn errors_are_classified_by_what_retrying_can_do() {
        let m = || "m".to_string();
        let table = [
            (
                connector(ConnectorError::Transient { message: m() }),
                ErrorClass::Transient,
            ),
            (
                connector(ConnectorError::RateLimited {
                    retry_after_ms: 1500,
                    message: m(),
                }),
                ErrorClass::RateLimited(1500),
            ),
            (
                connector(ConnectorError::Auth { message: m() }),
                ErrorClass::Auth,
            ),
            (
                connector(ConnectorError::InvalidInput { message: m() }),
                ErrorClass::Permanent,
            ),
            (
                connector(ConnectorError::Permanent { message: m() }),
                ErrorClass::Permanent,
            ),
            (CallError::Timeout { limit_ms: 5 }, ErrorClass::Transient),
            (
                CallError::Instantiate { message: m() },
                ErrorClass::Transient,
            ),
            (CallError::Trap { message: m() }, ErrorClass::Permanent),
            (
                CallError::MemoryLimit {
                    limit: 1,
                    desired: 2,
                },
                ErrorClass::Permanent,
            ),
        ];
        for (error, class) in table {
            assert_eq!(classify(&error), class, "{error:?}");
        }
    }

    #[test]
    fn the_default_schedule_spans_more_than_a_day() {
        let policy = RetryPolicy::default();
        let (start, mut now, mut attempt) = (1_000_000u64, 1_000_000u64, 1u32);
        loop {
            match policy.decide(ErrorClass::Transient, attempt, start, now, 0.0) {
                Verdict::RetryAt(at) => {
                    assert!(at > now);
                    now = at;
                    attempt += 1;
                }
                Verdict::Fail { exhausted } => {
                    assert!(exhausted);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let span_h = (now - start) as f64 / 3.6e6;
        assert!(span_h >= 24.0, "the schedule ends after {span_h:.1} h");
        assert!(attempt <= policy.max_attempts);
    }

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_stays_within_20_percent() {
        let policy = RetryPolicy {
            initial_delay_ms: 100,
            max_delay_ms: 1_000,
            ..RetryPolicy::default()
        };
        let delays: Vec<u64> = (1..=6).map(|a| policy.base_delay(a)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        for jitter in [-1.0, -0.3, 0.0, 0.7, 1.0] {
            let Verdict::RetryAt(at) = policy.decide(ErrorClass::Transient, 3, 0, 0, jitter) else {
                panic!()
            };
            assert!((320..=480).contains(&at), "{at}");
        }
    }

    #[test]
    fn the_inbox_and_polls_back_off_from_their_own_start_to_their_own_cap() {
        let inbox: Vec<u64> = (1..=10).map(|n| Backoff::INBOX.delay(n)).collect();
        assert_eq!(
            inbox,
            [
                2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000
            ]
        );
        // A one-minute poll: 2, 4, 8... minutes, capped at an hour.
        let minute: Vec<u64> = (1..=7)
            .map(|n| Backoff::poll(60_000).delay(n) / 60_000)
            .collect();
        assert_eq!(minute, [2, 4, 8, 16, 32, 60, 60]);
        // A one-second poll stops at 64 intervals, not an hour.
        let second: Vec<u64> = (1..=8)
            .map(|n| Backoff::poll(1_000).delay(n) / 1_000)
            .collect();
        assert_eq!(second, [2, 4, 8, 16, 32, 64, 64, 64]);
        // Failures that never stop do not overflow.
        assert_eq!(Backoff::poll(u64::MAX).delay(u32::MAX), 3600 * 1000);
    }

    #[test]
    fn a_steps_overrides_apply_over_the_defaults() {
        let base = RetryPolicy::default();
        assert_eq!(RetryPolicy::for_step(None), base);
        let spec = RetrySpec {
            max_attempts: Some(0),
            max_elapsed_secs: Some(60),
            initial_delay_ms: None,
            max_delay_ms: Some(5_000),
        };
        assert_eq!(
            RetryPolicy::for_step(Some(&spec)),
            RetryPolicy {
                max_attempts: 1,
                max_elapsed_ms: 60_000,
                max_delay_ms: 5_000,
                ..base
            }
        );
    }

    #[test]
    fn rate_limits_wait_at_least_retry_after_and_the_rest_fail_or_pause() {
        let policy = RetryPolicy::default();
        for jitter in [-1.0, 0.0, 1.0] {
            let Verdict::RetryAt(at) =
                policy.decide(ErrorClass::RateLimited(2_000), 1, 50, 50, jitter)
            else {
                panic!()
            };
            assert!((2_050..=2_250).contains(&at), "{at}");
        }
        assert_eq!(
            policy.decide(ErrorClass::Auth, 1, 0, 0, 0.0),
            Verdict::PauseConnection
        );
        assert_eq!(
            policy.decide(ErrorClass::Permanent, 1, 0, 0, 0.0),
            Verdict::Fail { exhausted: false }
        );
        let short = RetryPolicy {
            max_attempts: 3,
            ..policy
        };
        assert_eq!(
            short.decide(ErrorClass::Transient, 3, 0, 0, 0.0),
            Verdict::Fail { exhausted: true }
        );
        let brief = RetryPolicy {
            max_elapsed_ms: 1_000,
            initial_delay_ms: 600,
            ..policy
        };
        assert!(matches!(
            brief.decide(ErrorClass::Transient, 1, 0, 500, 0.0),
            Verdict::Fail { exhausted: true }
        ));
    }
}
