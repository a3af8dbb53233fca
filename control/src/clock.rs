//! Time, injectable so tests (and the dev mode) move it instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds, plus an offset that only tests and `--dev-clock` change.
#[derive(Clone, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset.load(Ordering::SeqCst)
    }

    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }
}

impl Clock {
    /// Unix milliseconds on the same clock as [`Clock::now`].
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.offset.load(Ordering::SeqCst) * 1000
    }

    /// How long until this clock reads `at_ms` (zero if it already does).
    pub fn until_ms(&self, at_ms: i64) -> std::time::Duration {
        std::time::Duration::from_millis(at_ms.saturating_sub(self.now_ms()).max(0) as u64)
    }
}
