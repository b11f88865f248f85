//! One shutdown signal (SIGTERM or ctrl-c) that every server and task can wait on.

use tokio::sync::watch;

/// A cloneable "stop now" signal.
#[derive(Clone, Debug)]
pub struct Signal {
    rx: watch::Receiver<bool>,
}

/// The sending side; dropping it also signals.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A new signal pair.
pub fn channel() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Signal { rx })
}

impl Trigger {
    /// Tells every waiter to stop.
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Signal {
    /// Resolves once shutdown was requested (or the trigger was dropped).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// True once shutdown was requested.
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Fires `trigger` on SIGTERM or ctrl-c.
pub async fn on_os_signal(trigger: Trigger) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
    trigger.fire();
}
