//! Whether the store can be written, as the writer last found it: for `/readyz/store`, the
//! `shadowdiff_store_up` gauge and the dashboard's banner.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Why the store is not being written, since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoreProblem {
    pub since_ms: i64,
    pub error: String,
}

/// The writer's view of the store, shared with the admin listener.
#[derive(Debug, Default)]
pub struct StoreHealth {
    down: AtomicBool,
    problem: Mutex<Option<StoreProblem>>,
}

impl StoreHealth {
    /// Whether the last write (or heartbeat) succeeded.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    pub fn set_up(&self) {
        self.down.store(false, Ordering::Relaxed);
        *self.lock() = None;
    }

    /// The store could not be written; the first failure's time is kept while the failures go on.
    pub fn set_down(&self, error: &str, now_ms: i64) {
        self.down.store(true, Ordering::Relaxed);
        let mut problem = self.lock();
        match problem.as_mut() {
            Some(problem) => problem.error = error.to_string(),
            None => {
                *problem = Some(StoreProblem {
                    since_ms: now_ms,
                    error: error.to_string(),
                })
            }
        }
    }

    pub fn problem(&self) -> Option<StoreProblem> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StoreProblem>> {
        self.problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
