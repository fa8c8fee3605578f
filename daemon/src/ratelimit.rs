//! Log lines about bad input, at most a few per kind per interval: anyone who can reach a
//! socket must not be able to fill the disk. Suppressed lines are counted, and the count is said
//! with the next line of that kind that is logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Lines of one kind logged per interval before the rest are only counted.
pub const BURST: u32 = 10;
/// Kinds remembered at most (a kind is a static string, so this is only a guard).
const MAX_KINDS: usize = 256;

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// The limiter; one per daemon part.
#[derive(Debug, Default)]
pub struct RateLimit {
    kinds: HashMap<&'static str, Window>,
}

impl RateLimit {
    /// Whether a line of `kind` may be logged now, and how many were suppressed before it.
    pub fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        if self.kinds.len() >= MAX_KINDS && !self.kinds.contains_key(kind) {
            return None;
        }
        let w = self.kinds.entry(kind).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(w.start) >= INTERVAL {
            w.start = now;
            w.logged = 0;
        }
        if w.logged >= BURST {
            w.suppressed += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

/// `warn!` through a [`RateLimit`]: `limited_warn!(limiter, "kind", "format", args…)`.
#[macro_export]
macro_rules! limited_warn {
    ($limit:expr, $kind:expr, $($arg:tt)*) => {
        if let Some(suppressed) = $limit.allow($kind, std::time::Instant::now()) {
            if suppressed > 0 {
                log::warn!("{} ({suppressed} more like it suppressed)", format_args!($($arg)*));
            } else {
                log::warn!($($arg)*);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_kind_per_interval_and_the_rest_counted() {
        let mut r = RateLimit::default();
        let t = Instant::now();
        for _ in 0..BURST {
            assert_eq!(r.allow("bad hello", t), Some(0));
        }
        assert_eq!(r.allow("bad hello", t), None);
        assert_eq!(r.allow("bad hello", t + Duration::from_secs(1)), None);
        assert_eq!(r.allow("other", t), Some(0));
        assert_eq!(r.allow("bad hello", t + INTERVAL), Some(2));
    }
}
