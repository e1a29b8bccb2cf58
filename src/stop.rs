//! Stopping in time: a read in progress is abandoned the moment a stop is asked for.
//!
//! Owns one helper. Only reads go through it: the paid call in flight is always awaited (it is
//! bounded by its own timeout) and its outcome recorded. Must not be used around a paid call.

use std::future::Future;
use tokio::sync::watch;

/// Runs `fut` to its end, unless `stop` turns true first: then `None`, at once, and `fut` is
/// dropped. Without a `stop` (one-shot commands), it always runs to its end.
pub async fn unless_stopped<T>(
    stop: Option<&watch::Receiver<bool>>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let Some(stop) = stop else {
        return Some(fut.await);
    };
    let mut stop = stop.clone();
    if *stop.borrow() {
        return None;
    }
    let asked = async move {
        if stop.wait_for(|s| *s).await.is_err() {
            // Nobody can ask any more: never.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        () = asked => None,
        v = fut => Some(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_read_is_abandoned_when_stop_turns_true_and_runs_otherwise() {
        let (tx, rx) = watch::channel(false);
        let slow = tokio::spawn({
            let rx = rx.clone();
            async move { unless_stopped(Some(&rx), tokio::time::sleep(Duration::from_secs(60))).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(true).expect("receivers");
        let abandoned = tokio::time::timeout(Duration::from_secs(2), slow)
            .await
            .expect("at once")
            .expect("task");

        assert_eq!(abandoned, None);
        assert_eq!(unless_stopped(None, async { 7 }).await, Some(7));
        let (_tx, idle) = watch::channel(false);
        assert_eq!(unless_stopped(Some(&idle), async { 8 }).await, Some(8));
        drop(_tx);
        assert_eq!(unless_stopped(Some(&idle), async { 9 }).await, Some(9));
    }
}
