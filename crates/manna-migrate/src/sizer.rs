//! Adaptive batch size.

use std::time::Duration;

use crate::options::Options;

/// Adaptive batch size: aims each batch at the target time, changing by at
/// most ×2 per batch, within the bounds.
pub(crate) struct Sizer {
    size: usize,
    min: usize,
    max: usize,
    target: Duration,
    adaptive: bool,
}

impl Sizer {
    /// The batch size to use next.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn new(o: &Options) -> Self {
        Sizer {
            size: o.batch_size.clamp(o.min_batch_size, o.max_batch_size),
            min: o.min_batch_size,
            max: o.max_batch_size,
            target: o.target_batch_time,
            adaptive: o.adaptive,
        }
    }

    pub(crate) fn adapt(&mut self, rows: u64, elapsed: Duration) {
        if !self.adaptive || rows == 0 {
            return;
        }
        let current = self.size as f64;
        let per_row = elapsed.as_secs_f64() / rows as f64;
        let ideal = if per_row > 0.0 {
            self.target.as_secs_f64() / per_row
        } else {
            current * 2.0
        };
        // A short final batch says little about a full one: only grow from
        // batches that were (nearly) full.
        let ideal = if (rows as f64) < current / 2.0 {
            ideal.min(current)
        } else {
            ideal
        };
        let next = ideal
            .clamp(current / 2.0, current * 2.0)
            .clamp(self.min as f64, self.max as f64);
        self.size = next.round() as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizer(adaptive: bool) -> Sizer {
        Sizer::new(&Options {
            batch_size: 100,
            min_batch_size: 10,
            max_batch_size: 1000,
            target_batch_time: Duration::from_millis(100),
            adaptive,
            ..Options::default()
        })
    }

    #[test]
    fn sizer_moves_toward_target_within_bounds() {
        let mut s = sizer(true);
        // 100 rows in 10 ms: 10x too fast, grows by at most 2x per batch.
        s.adapt(100, Duration::from_millis(10));
        assert_eq!(s.size, 200);
        for _ in 0..10 {
            s.adapt(s.size as u64, Duration::from_micros(100 * s.size as u64));
        }
        assert_eq!(s.size, 1000, "capped at max");
        // Now 1 s per batch: shrinks by at most half per batch, down to min.
        for _ in 0..20 {
            s.adapt(s.size as u64, Duration::from_secs(1));
        }
        assert_eq!(s.size, 10);
        // On target: stays.
        let mut s = sizer(true);
        s.adapt(100, Duration::from_millis(100));
        assert_eq!(s.size, 100);
        // A short last batch does not make it grow.
        s.adapt(3, Duration::from_micros(1));
        assert_eq!(s.size, 100);
    }

    #[test]
    fn sizer_fixed_when_not_adaptive() {
        let mut s = sizer(false);
        s.adapt(100, Duration::from_millis(1));
        assert_eq!(s.size, 100);
    }
}
