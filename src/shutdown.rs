//! Shutdown signalling: one `CancellationToken` tree owned by the caller of `app::run`.
//!
//! `main` turns SIGTERM/SIGINT into a cancel of the root token; tests cancel it directly.
//! The order in which the app reacts is written down in `app.rs`.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
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
