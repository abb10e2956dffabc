//! [`Changes`]: the values of a `tokio::sync::watch` channel one change at a time, behind the
//! `next()` of [`StatusWatch`](super::StatusWatch) and [`LiveUpdates`](super::LiveUpdates) and
//! their `Stream` implementations.
//!
//! A wait in progress is kept across dropped `next()` calls (and between `poll_next` calls), so
//! dropping a `next()` never loses a change: the next call picks the same wait up.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::sync::watch;

/// A wait for the next change on a clone of the receiver; it hands the receiver back with the
/// value it marked seen (`None` once the sender is gone and every value was seen).
type Pending<T> = Pin<Box<dyn Future<Output = (watch::Receiver<T>, Option<T>)> + Send + Sync>>;

/// One change at a time from a watch channel.
pub(super) struct Changes<T> {
    /// The receiver as of the last value delivered (its seen version).
    rx: watch::Receiver<T>,
    /// The wait in progress, if any.
    pending: Option<Pending<T>>,
}

impl<T> fmt::Debug for Changes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("waiting", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Clone for Changes<T> {
    /// A follower that has seen what this one has seen (a wait in progress is not shared).
    fn clone(&self) -> Self {
        Changes {
            rx: self.rx.clone(),
            pending: None,
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Changes<T> {
    /// Follows `rx` from its current seen version on.
    pub(super) fn new(rx: watch::Receiver<T>) -> Self {
        Changes { rx, pending: None }
    }

    /// The latest value sent (seen or not).
    pub(super) fn latest(&self) -> T {
        self.rx.borrow().clone()
    }

    /// The next value sent after the last one delivered; `None` once the sender is gone and
    /// every value was delivered. Polling again after `None` returns `None` again.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let rx = &self.rx;
        let pending = self.pending.get_or_insert_with(|| {
            let mut rx = rx.clone();
            Box::pin(async move {
                let next = match rx.changed().await {
                    Ok(()) => Some(rx.borrow_and_update().clone()),
                    Err(_) => None,
                };
                (rx, next)
            })
        });
        let (rx, next) = ready!(pending.as_mut().poll(cx));
        self.pending = None;
        self.rx = rx;
        Poll::Ready(next)
    }

    /// [`poll_next`](Self::poll_next) as a future. Cancel-safe: a dropped call leaves its wait
    /// for the next call.
    pub(super) async fn next(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The receiver as of the last value delivered, for `wait_for`. A wait in progress is
    /// abandoned (it had delivered nothing, so nothing is lost).
    pub(super) fn receiver(&mut self) -> &mut watch::Receiver<T> {
        self.pending = None;
        &mut self.rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_change_once_and_none_after_the_sender() {
        let (tx, rx) = watch::channel(0);
        let mut changes = Changes::new(rx);
        tx.send_replace(1);
        assert_eq!(changes.next().await, Some(1));
        tx.send_replace(2);
        tx.send_replace(3);
        assert_eq!(
            changes.next().await,
            Some(3),
            "changes coalesce to the latest"
        );
        drop(tx);
        assert_eq!(changes.next().await, None);
        assert_eq!(changes.next().await, None);
    }

    #[tokio::test]
    async fn a_dropped_next_loses_nothing() {
        let (tx, rx) = watch::channel(0);
        let mut changes = Changes::new(rx);
        // Start a wait and drop it before anything is sent.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), changes.next());
        assert!(waited.await.is_err());
        tx.send_replace(7);
        assert_eq!(changes.next().await, Some(7));
        // A wait abandoned for `receiver()` does not mark anything seen either.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), changes.next());
        assert!(waited.await.is_err());
        tx.send_replace(8);
        assert!(changes.receiver().has_changed().unwrap());
        assert_eq!(changes.next().await, Some(8));
        assert_eq!(changes.latest(), 8);
    }
}
