//! Shutdown signalling: cancellation tokens owned by the caller of `app::start`.
//!
//! `begin` starts the shutdown (first SIGTERM/SIGINT), `hurry` cuts the drain short (second
//! signal), `stopped` is cancelled by the app when shutdown is complete. Tests cancel them
//! directly. The order in which the app reacts is written down in `app.rs`.

pub use tokio_util::sync::CancellationToken as Shutdown;

#[derive(Clone, Default)]
pub struct Signals {
    pub begin: Shutdown,
    pub hurry: Shutdown,
    pub stopped: Shutdown,
}

impl Signals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns the first SIGTERM/SIGINT into `begin`, the second into `hurry`.
    pub fn watch_process_signals(&self) {
        let signals = self.clone();
        tokio::spawn(async move {
            signal().await;
            signals.begin.cancel();
            signal().await;
            signals.hurry.cancel();
        });
    }
}

/// Resolves at the next SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
