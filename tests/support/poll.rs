//! [`eventually!`]: the one way tests wait for a condition.

/// Waits up to `$limit` (a `Duration`) for `$cond` to hold, evaluating it every 10 ms; the
/// condition may `.await`. Evaluates to whether it held (it is checked once at or after the
/// deadline before giving up).
///
/// ```ignore
/// assert!(eventually!(Duration::from_secs(5), cfg.load().port == 9090));
/// assert!(eventually!(WAIT, cfg.history().await.is_ok_and(|h| h.len() == 2)));
/// ```
macro_rules! eventually {
    ($limit:expr, $cond:expr) => {{
        let deadline = std::time::Instant::now() + $limit;
        loop {
            let held: bool = $cond;
            if held || std::time::Instant::now() >= deadline {
                break held;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }};
}
