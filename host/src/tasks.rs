//! The host's background tasks (dispatchers, the scheduler, the inbox
//! worker, retention) and the one signal that stops them all.

use std::sync::Mutex;

use tokio::{sync::watch, task::JoinHandle};

/// Background tasks that run until [`Tasks::shutdown`].
pub struct Tasks {
    shutdown: watch::Sender<bool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            shutdown: watch::channel(false).0,
            handles: Mutex::default(),
        }
    }
}

impl Tasks {
    /// A receiver that changes when the host is stopping.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Signals every task to stop and waits for them (runs in flight finish
    /// their current step first).
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            let _ = handle.await;
        }
    }
}
