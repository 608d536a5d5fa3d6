//! Retrying optimistic-lock conflicts with exponential backoff and jitter.

use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ExponentialBuilder};

use crate::metric_names;
use crate::IsConflict;

/// How to retry an operation that failed with an optimistic-lock conflict.
///
/// Only errors whose [`IsConflict::is_conflict`] is `true` are retried; any
/// other error is returned at once. Between attempts the policy sleeps with
/// exponential backoff (`base_delay`, doubling, capped at `max_delay`), with
/// full jitter by default so that writers that collided do not collide again.
/// The closure is re-run from scratch each time, so it must re-read what it
/// writes.
///
/// The defaults follow the Python application's `RetryableOptimisticLock(
/// max_retries=3)`: 3 retries, 10 ms base delay, 1 s max delay, jitter on, no
/// total-time limit.
///
/// ```
/// use manna_lock::{ConflictError, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::new()
///     .max_retries(5)
///     .base_delay(Duration::from_millis(1))
///     .max_delay(Duration::from_millis(20))
///     .max_total_time(Duration::from_secs(2));
/// let mut attempts = 0;
/// let result = policy.retry(|| {
///     attempts += 1;
///     if attempts < 3 {
///         Err(ConflictError::row_changed("transactions", "7"))
///     } else {
///         Ok("written")
///     }
/// });
/// assert_eq!(result, Ok("written"));
/// assert_eq!(attempts, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: usize,
    base_delay: Duration,
    max_delay: Duration,
    jitter: bool,
    max_total_time: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
            jitter: true,
            max_total_time: None,
        }
    }
}

impl RetryPolicy {
    /// The default policy (see the type docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times to retry after the first attempt (0 = never retry).
    pub fn max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// The first delay; each further delay doubles.
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// The largest single delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Add random jitter to each delay (on by default).
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Start no retry once this much time has passed since the first attempt,
    /// and never sleep more than this in total.
    pub fn max_total_time(mut self, d: Duration) -> Self {
        self.max_total_time = Some(d);
        self
    }

    /// The configured number of retries.
    pub fn retries(&self) -> usize {
        self.max_retries
    }

    fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay.max(self.base_delay))
            .with_max_times(self.max_retries)
            .with_total_delay(self.max_total_time);
        if self.jitter {
            b.with_jitter()
        } else {
            b
        }
    }

    fn may_retry<E: IsConflict>(&self, started: Option<Instant>, e: &E) -> bool {
        e.is_conflict()
            && match (self.max_total_time, started) {
                (Some(max), Some(started)) => started.elapsed() < max,
                _ => true,
            }
    }

    /// Runs `op`, re-running it after a backoff delay while it fails with a
    /// conflict and the budget lasts. Blocks the thread while sleeping: use
    /// [`RetryPolicy::retry_async`] in async code.
    ///
    /// The first attempt runs without any retry machinery, so the
    /// no-conflict path costs one branch.
    pub fn retry<T, E, F>(&self, mut op: F) -> Result<T, E>
    where
        E: IsConflict,
        F: FnMut() -> Result<T, E>,
    {
        let started = self.max_total_time.map(|_| Instant::now());
        let first = match op() {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_conflict() => return Err(e),
            Err(e) => e,
        };
        metrics::counter!(metric_names::CONFLICTS).increment(1);
        // Hand the first conflict to backon as its first result, so it
        // sleeps before re-running `op`.
        let mut first = Some(first);
        let attempt = || match first.take() {
            Some(e) => Err(e),
            None => {
                let r = op();
                if let Err(e) = &r {
                    count_error(e);
                }
                r
            }
        };
        let result = attempt
            .retry(self.backoff())
            .when(|e: &E| self.may_retry(started, e))
            .notify(|_, _| metrics::counter!(metric_names::CONFLICT_RETRIES).increment(1))
            .call();
        count_outcome(&result);
        result
    }

    /// The async form of [`RetryPolicy::retry`]: `op` returns a fresh future
    /// for each attempt; delays use the Tokio timer (feature `async`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use manna_lock::{ConflictError, RetryPolicy};
    /// let policy = RetryPolicy::new().base_delay(std::time::Duration::from_millis(1));
    /// let attempts = std::sync::atomic::AtomicU32::new(0);
    /// let r: Result<u32, ConflictError> = policy
    ///     .retry_async(|| async {
    ///         let n = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    ///         if n == 0 { Err(ConflictError::row_gone("t", "1")) } else { Ok(n) }
    ///     })
    ///     .await;
    /// assert_eq!(r, Ok(1));
    /// # }
    /// ```
    #[cfg(feature = "async")]
    pub async fn retry_async<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: IsConflict,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        use backon::Retryable as _;
        let started = self.max_total_time.map(|_| Instant::now());
        let first = match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_conflict() => return Err(e),
            Err(e) => e,
        };
        metrics::counter!(metric_names::CONFLICTS).increment(1);
        let mut first = Some(first);
        enum Step<E, Fut> {
            Replay(E),
            Run(Fut),
        }
        let attempt = || {
            let step = match first.take() {
                Some(e) => Step::Replay(e),
                None => Step::Run(op()),
            };
            async move {
                match step {
                    Step::Replay(e) => Err(e),
                    Step::Run(fut) => {
                        let r = fut.await;
                        if let Err(e) = &r {
                            count_error(e);
                        }
                        r
                    }
                }
            }
        };
        let result = attempt
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|e: &E| self.may_retry(started, e))
            .notify(|_, _| metrics::counter!(metric_names::CONFLICT_RETRIES).increment(1))
            .await;
        count_outcome(&result);
        result
    }
}

fn count_error<E: IsConflict>(e: &E) {
    if e.is_conflict() {
        metrics::counter!(metric_names::CONFLICTS).increment(1);
    }
}

fn count_outcome<T, E: IsConflict>(r: &Result<T, E>) {
    if let Err(e) = r {
        if e.is_conflict() {
            metrics::counter!(metric_names::CONFLICT_RETRIES_EXHAUSTED).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ConflictError;

    #[derive(Debug, PartialEq)]
    enum E {
        Conflict,
        Other,
    }
    impl IsConflict for E {
        fn is_conflict(&self) -> bool {
            matches!(self, E::Conflict)
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy::new()
            .base_delay(Duration::from_micros(100))
            .max_delay(Duration::from_millis(1))
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut n = 0;
        let r: Result<(), E> = fast().max_retries(10).retry(|| {
            n += 1;
            Err(E::Other)
        });
        assert_eq!(r, Err(E::Other));
        assert_eq!(n, 1);
    }

    #[test]
    fn conflicts_are_retried_up_to_max_retries() {
        let mut n = 0;
        let r: Result<(), E> = fast().max_retries(4).retry(|| {
            n += 1;
            Err(E::Conflict)
        });
        assert_eq!(r, Err(E::Conflict));
        assert_eq!(n, 5, "first attempt plus 4 retries");
    }

    #[test]
    fn zero_retries_runs_once() {
        let mut n = 0;
        let r: Result<(), ConflictError> = fast().max_retries(0).retry(|| {
            n += 1;
            Err(ConflictError::row_changed("t", "1"))
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
    }

    #[test]
    fn max_total_time_stops_retrying() {
        let mut n = 0;
        let policy = RetryPolicy::new()
            .max_retries(usize::MAX)
            .base_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(5))
            .jitter(false)
            .max_total_time(Duration::from_millis(30));
        let r: Result<(), E> = policy.retry(|| {
            n += 1;
            Err(E::Conflict)
        });
        assert_eq!(r, Err(E::Conflict));
        assert!(n > 1, "retried at least once, got {n}");
        assert!(n < 100, "stopped by the time budget, got {n}");
    }

    #[cfg(feature = "async")]
    #[tokio::test]
    async fn async_retries_only_conflicts() {
        let n = std::sync::atomic::AtomicUsize::new(0);
        let r: Result<usize, E> = fast()
            .retry_async(|| async {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match i {
                    0 | 1 => Err(E::Conflict),
                    2 => Err(E::Other),
                    _ => Ok(i),
                }
            })
            .await;
        assert_eq!(r, Err(E::Other));
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
