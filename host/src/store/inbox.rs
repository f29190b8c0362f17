//! The webhook inbox: deliveries accepted durably and not yet turned into
//! runs, and the deliveries that were rejected, with the reason.

use serde::{Deserialize, Serialize};

use super::{BoxFuture, Result};

/// A delivery as received, kept until it became runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub tenant: String,
    /// The webhook subscription it came to (one URL, every flow in it).
    pub subscription: String,
    pub received_at: u64,
    pub method: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// Base64 of the raw body.
    pub body: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub next_attempt_at: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A delivery that will not become runs, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub received_at: u64,
    pub reason: String,
    pub method: String,
    pub bytes: usize,
    /// An excerpt of the body (the first 2 KiB), to see what was sent.
    pub excerpt: String,
}

/// Where an accepted delivery sits in the inbox. Opaque to the services.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboxKey(pub(crate) Vec<u8>);

impl InboxKey {
    /// A short text that tells deliveries apart in traces and logs.
    pub fn trace(&self) -> String {
        hex::encode(self.0.get(16..).unwrap_or(&self.0))
    }
}

pub trait Inbox: Send + Sync + 'static {
    /// Stores a delivery; the future resolves once it is durable (on disk),
    /// which is when the sender may be told it was accepted.
    fn accept(&self, delivery: &Delivery) -> BoxFuture<'_, Result<InboxKey>>;

    /// Up to `limit` entries after `after`, in the order they were received.
    /// An entry that cannot be read comes back as `Err` so it can be dropped.
    #[allow(clippy::type_complexity)]
    fn pending(
        &self,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, Result<Delivery>)>>;

    /// Takes an entry for processing on this node. A store shared by several
    /// nodes answers `false` when another live node holds it; entries of a
    /// node that stopped come back. (Within a node, one worker processes
    /// the inbox, an entry at a time.)
    fn claim(&self, _key: &InboxKey) -> Result<bool> {
        Ok(true)
    }

    /// Rewrites an entry that failed for now (its attempts and next time).
    fn defer(&self, key: &InboxKey, delivery: &Delivery) -> Result<()>;

    /// Drops an entry that is done without runs or cannot be read.
    fn discard(&self, key: &InboxKey) -> Result<()>;

    /// Records a rejected delivery of a flow; removes its inbox entry, if it
    /// had one, in the same batch.
    fn reject(
        &self,
        key: Option<&InboxKey>,
        tenant: &str,
        flow: &str,
        rejected: &Rejected,
    ) -> Result<()>;

    /// A flow's rejected deliveries, newest first.
    fn rejected(&self, tenant: &str, flow: &str) -> Result<Vec<Rejected>>;

    /// Forgets all but a flow's newest `keep` rejected deliveries.
    fn trim_rejected(&self, tenant: &str, flow: &str, keep: usize) -> Result<usize>;

    /// Forgets rejected deliveries received before `before`, and all but
    /// the newest `keep` of each flow; returns how many.
    fn prune_rejected(&self, before: u64, keep: usize) -> Result<usize>;
}
