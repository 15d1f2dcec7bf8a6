//! Single-flight: concurrent requests for the same key share one execution and its result.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::{Mutex, OnceCell};

/// Work in progress per key; an entry lives only while some caller is waiting on it.
pub struct SingleFlight<K, V> {
    in_flight: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// No work in progress.
    pub fn new() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` for `key`, unless a run for `key` is already in progress: then waits for
    /// that run and returns its result. A finished run is not cached for later callers.
    pub async fn run<F, Fut>(&self, key: &K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = self
            .in_flight
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();

        let value = cell.get_or_init(work).await.clone();

        // Whoever finishes first retires the entry, so the next request runs afresh.
        let mut in_flight = self.in_flight.lock().await;
        if in_flight
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            in_flight.remove(key);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_later_callers_run_again() {
        let flights = SingleFlight::<&str, u32>::new();
        let runs = AtomicU32::new(0);
        let release = Notify::new();
        let work = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            7
        };

        let first = flights.run(&"a", work);
        let second = flights.run(&"a", || async { 0 });
        let other = flights.run(&"b", || async { 9 });
        let releaser = async {
            // Both callers are registered once the first run has started and yielded.
            while runs.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            release.notify_one();
        };
        let (first, second, other, ()) = tokio::join!(first, second, other, releaser);

        assert_eq!((first, second, other), (7, 7, 9));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.run(&"a", || async { 8 }).await, 8);
    }
}
