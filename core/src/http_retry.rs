//! When the outbound HTTP queue tries a request again, and after how long.
//! Connection failures, timeouts, 429 and 5xx answers are retried with
//! exponential backoff and "equal jitter" (half the delay fixed, half
//! random, so a burst of failures does not come back as one burst); a
//! `Retry-After` from the server is honoured when it asks for longer.

use std::time::{Duration, SystemTime};

/// The longest a single wait may be, whatever the backoff or the server asks.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// What one attempt produced, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered with this status.
    Status(u16),
    /// No answer for a reason that may pass: refused or reset connection,
    /// timeout, a dropped connection mid-response.
    Transient,
    /// No answer for a reason that will not pass by waiting: the policy
    /// refused the address, TLS verification failed, the request or the
    /// response broke a limit.
    Permanent,
}

impl Attempt {
    /// True when trying again may give a different outcome.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        match self {
            Attempt::Status(status) => status == 429 || (500..=599).contains(&status),
            Attempt::Transient => true,
            Attempt::Permanent => false,
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110
/// §10.2.3). A date in the past means "now"; anything else is ignored.
#[must_use]
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Anything that overflows u64 is longer than MAX_DELAY anyway.
        return Some(value.parse().map_or(MAX_DELAY, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before attempt `failed + 1`, after attempt number `failed`
/// (1-based) failed: `base · 2^(failed-1)` capped at [`MAX_DELAY`], of which
/// the upper half is random (`unit` in [0, 1) supplies the randomness), but
/// never shorter than what the server asked for in `Retry-After`.
#[must_use]
pub fn delay(base: Duration, failed: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    let exponent = failed.saturating_sub(1).min(31);
    let full = base
        .checked_mul(1u32 << exponent)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY);
    let jittered = full / 2 + full.mul_f64(unit.clamp(0.0, 1.0) / 2.0);
    jittered.max(retry_after.unwrap_or(Duration::ZERO).min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_what_may_pass() {
        for status in [429, 500, 502, 503, 504, 599] {
            assert!(Attempt::Status(status).is_retryable(), "{status}");
        }
        for status in [200, 201, 301, 400, 401, 403, 404, 409, 422, 600] {
            assert!(!Attempt::Status(status).is_retryable(), "{status}");
        }
        assert!(Attempt::Transient.is_retryable());
        assert!(!Attempt::Permanent.is_retryable());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // RFC 9110's own example date is 784111777 seconds after the epoch.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                now - Duration::from_secs(30)
            ),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_DELAY)
        );
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half() {
        let base = Duration::from_secs(1);
        assert_eq!(delay(base, 1, None, 0.0), Duration::from_millis(500));
        let top = delay(base, 1, None, 0.999_999);
        assert!(top > Duration::from_millis(999) && top < base, "{top:?}");
        assert_eq!(delay(base, 2, None, 0.0), Duration::from_secs(1));
        assert_eq!(delay(base, 3, None, 0.5), Duration::from_secs(3));
        assert_eq!(delay(base, 4, None, 0.0), Duration::from_secs(4));
    }

    #[test]
    fn backoff_is_capped_and_honours_retry_after() {
        let base = Duration::from_secs(1);
        assert_eq!(delay(base, 40, None, 1.0), MAX_DELAY);
        assert_eq!(delay(base, 1000, None, 0.0), MAX_DELAY / 2);
        assert_eq!(
            delay(base, 1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        assert_eq!(
            delay(base, 5, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(8)
        );
        assert_eq!(
            delay(base, 1, Some(Duration::from_secs(1 << 40)), 0.0),
            MAX_DELAY
        );
        assert_eq!(delay(Duration::ZERO, 3, None, 0.7), Duration::ZERO);
    }
}
