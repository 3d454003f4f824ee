//! `shadowdiff serve`: the proxy and the admin listener, until SIGINT or SIGTERM.

use std::process::ExitCode;

use crate::app::{AppSettings, Application};
use crate::cli::Outcome;

pub async fn run(settings: AppSettings) -> Outcome {
    // Listen for signals before anything else: a SIGTERM during start-up then still means a clean stop.
    let shutdown = shutdown_signal();
    let response_mode = settings.proxy.response_mode;
    let app = Application::build(settings).await?;
    tracing::info!(
        proxy = %app.proxy_addr(),
        admin = %app.admin_addr(),
        ?response_mode,
        "shadowdiff serving"
    );
    let admin = app.admin_addr();
    match (app.admin_protected(), admin.ip().is_loopback()) {
        (true, _) => tracing::info!(%admin, "admin listener requires --admin-token"),
        (false, true) => tracing::info!(
            %admin,
            "admin listener on loopback only and without a token; set --admin-token before listening elsewhere"
        ),
        (false, false) => tracing::warn!(
            %admin,
            "admin listener reachable from other hosts WITHOUT a token: anyone there can read the report and change rules; set --admin-token"
        ),
    }
    app.run_until(shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut terminate = unix_signal(tokio::signal::unix::SignalKind::terminate(), "SIGTERM");
    #[cfg(unix)]
    let mut interrupt = unix_signal(tokio::signal::unix::SignalKind::interrupt(), "SIGINT");
    async move {
        #[cfg(unix)]
        {
            let terminated = delivered(terminate.as_mut());
            let interrupted = delivered(interrupt.as_mut());
            tokio::select! {
                _ = terminated => tracing::info!("SIGTERM received; shutting down"),
                _ = interrupted => tracing::info!("SIGINT received; shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received; shutting down");
        }
    }
}

/// A stream of this signal's deliveries, or none (with a warning) when it cannot be listened for.
#[cfg(unix)]
fn unix_signal(
    kind: tokio::signal::unix::SignalKind,
    name: &str,
) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for {name}");
            None
        }
    }
}

/// Resolves on the signal's next delivery; never when it is not listened for.
#[cfg(unix)]
async fn delivered(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
