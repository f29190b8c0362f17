//! The key-value trait for low-churn records: plugin versions, tenants,
//! connections, flows and their versions and drafts, webhook routes, OAuth
//! flows in progress, users, their sessions and the audit log. Values are JSON; keys are lists of parts that the backend joins
//! (parts never contain NUL), so a prefix of parts selects a group, e.g. every
//! connection of one tenant.

use serde::{Serialize, de::DeserializeOwned};

use super::{Result, decode, encode};

/// The trees of [`Kv`]. Each has its key layout documented here, because
/// this is the only place that decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// `[name]` → host-wide settings (the operator token's hash).
    Meta,
    /// `[key, version]` → a plugin version's record.
    Plugins,
    /// `[key, version, flow]` → `{}`: the flows pinned to a plugin version.
    PluginRefs,
    /// `[tenant]` → the tenant.
    Tenants,
    /// `[sha256(token)]` → the tenant id the token belongs to.
    TenantTokens,
    /// `[tenant, connection]` → the connection.
    Connections,
    /// `[state]` → an OAuth authorization waiting for its callback.
    OAuthPending,
    /// `[tenant, flow]` → the flow's current record.
    Flows,
    /// `[tenant, flow, version (10 digits)]` → one published version.
    FlowVersions,
    /// `[token]` → the subscription a webhook URL delivers to.
    Hooks,
    /// `[tenant, subscription]` → a webhook registered with a third party
    /// and the flows it serves.
    Subscriptions,
    /// `[tenant, fingerprint]` → the subscription of one plugin version,
    /// trigger, connection and params.
    SubscriptionIndex,
    /// `[sha256]` → a declarative interpreter component's record (its bytes
    /// are the blob of that hash).
    Interpreters,
    /// `[tenant, user]` → a person who signs in to the console.
    Users,
    /// `[email (lower case)]` → `{tenant, user}`: emails are unique on a host.
    UserEmails,
    /// `[sha256(invitation token)]` → an invitation waiting to be accepted.
    Invitations,
    /// `[sha256(session id)]` → a signed-in browser session.
    Sessions,
    /// `[tenant, at (ms, 15 digits), random]` → who changed what, oldest first.
    Audit,
    /// `[tenant, draft]` → a flow being edited in the console, not published.
    FlowDrafts,
    /// `[tenant, topic]` → a topic's settings.
    Topics,
    /// `[tenant]` → the tenant's limits of the topics' API.
    TopicLimits,
    /// `[tenant, stream]` → a stream and its committed positions.
    Streams,
    /// `[tenant, subscription]` → a batched webhook subscription.
    Feeds,
    /// `[tenant, subscription, batch]` → one batch of changes and its
    /// delivery state.
    FeedBatches,
    /// `[tenant, subscription, batch]` → when the batch is next sent: the
    /// batches still to deliver.
    FeedPending,
    /// `[token]` → where a batch's fetch URL points.
    FeedTokens,
    /// `[tenant, subscription, at (16 hex digits)]` → one delivery attempt.
    FeedAttempts,
}

impl Tree {
    pub const ALL: [Tree; 27] = [
        Tree::Meta,
        Tree::Plugins,
        Tree::PluginRefs,
        Tree::Tenants,
        Tree::TenantTokens,
        Tree::Connections,
        Tree::OAuthPending,
        Tree::Flows,
        Tree::FlowVersions,
        Tree::Hooks,
        Tree::Subscriptions,
        Tree::SubscriptionIndex,
        Tree::Interpreters,
        Tree::Users,
        Tree::UserEmails,
        Tree::Invitations,
        Tree::Sessions,
        Tree::Audit,
        Tree::FlowDrafts,
        Tree::Topics,
        Tree::TopicLimits,
        Tree::Streams,
        Tree::Feeds,
        Tree::FeedBatches,
        Tree::FeedPending,
        Tree::FeedTokens,
        Tree::FeedAttempts,
    ];

    /// The tree's stable name (kept by every backend).
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Plugins => "plugins",
            Tree::PluginRefs => "plugin_refs",
            Tree::Tenants => "tenants",
            Tree::TenantTokens => "tenant_tokens",
            Tree::Connections => "connections",
            Tree::OAuthPending => "oauth_pending",
            Tree::Flows => "flows",
            Tree::FlowVersions => "flow_versions",
            Tree::Hooks => "hooks",
            Tree::Subscriptions => "subscriptions",
            Tree::SubscriptionIndex => "subscription_index",
            Tree::Interpreters => "interpreters",
            Tree::Users => "users",
            Tree::UserEmails => "user_emails",
            Tree::Invitations => "invitations",
            Tree::Sessions => "sessions",
            Tree::Audit => "audit",
            Tree::FlowDrafts => "flow_drafts",
            Tree::Topics => "topics",
            Tree::TopicLimits => "topic_limits",
            Tree::Streams => "streams",
            Tree::Feeds => "feeds",
            Tree::FeedBatches => "feed_batches",
            Tree::FeedPending => "feed_pending",
            Tree::FeedTokens => "feed_tokens",
            Tree::FeedAttempts => "feed_attempts",
        }
    }
}

/// One write of an atomic [`Kv::write`].
#[derive(Debug, Clone)]
pub enum Write {
    Put {
        tree: Tree,
        key: Vec<String>,
        value: Vec<u8>,
    },
    Delete {
        tree: Tree,
        key: Vec<String>,
    },
}

impl Write {
    pub fn put<T: Serialize>(tree: Tree, key: &[&str], value: &T) -> Write {
        Write::Put {
            tree,
            key: parts(key),
            value: encode(value),
        }
    }

    pub fn delete(tree: Tree, key: &[&str]) -> Write {
        Write::Delete {
            tree,
            key: parts(key),
        }
    }
}

fn parts(key: &[&str]) -> Vec<String> {
    key.iter().map(|p| p.to_string()).collect()
}

/// Low-churn records and the plugin binaries.
pub trait Kv: Send + Sync + 'static {
    fn get(&self, tree: Tree, key: &[&str]) -> Result<Option<Vec<u8>>>;
    /// Every entry whose key starts with the parts of `prefix`, in key
    /// order, with its key parts.
    fn scan(&self, tree: Tree, prefix: &[&str]) -> Result<Vec<(Vec<String>, Vec<u8>)>>;
    /// Applies every write or none of them, durably (flushed) when it returns.
    fn write(&self, writes: Vec<Write>) -> Result<()>;
    /// Stores a blob under its content hash (hex SHA-256), durably.
    fn put_blob(&self, hash: &str, bytes: &[u8]) -> Result<()>;
    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>>;
    fn delete_blob(&self, hash: &str) -> Result<()>;

    /// Registers what to call when another node wrote to `tree`, so that a
    /// node's caches and schedules follow the others'. Called on the store's
    /// own thread: it must only signal. (One node: never called.)
    fn watch(&self, _tree: Tree, _changed: std::sync::Arc<dyn Fn() + Send + Sync>) {}

    /// How many writes `tree` has taken, when this store sees every write
    /// of it (an embedded store, whose data one host owns): a reader that
    /// saw the same count before may keep what it read then (see
    /// [`Decoded`]). `None` when other hosts write it too: read again.
    fn writes(&self, _tree: Tree) -> Option<u64> {
        None
    }
}

/// Typed helpers over any [`Kv`].
pub trait KvExt: Kv {
    fn get_json<T: DeserializeOwned>(&self, tree: Tree, key: &[&str]) -> Result<Option<T>> {
        self.get(tree, key)?
            .map(|bytes| decode(tree.name(), &bytes))
            .transpose()
    }

    fn scan_json<T: DeserializeOwned>(&self, tree: Tree, prefix: &[&str]) -> Result<Vec<T>> {
        self.scan(tree, prefix)?
            .into_iter()
            .map(|(_, bytes)| decode(tree.name(), &bytes))
            .collect()
    }

    /// The keys under `prefix`, without their values decoded.
    fn keys(&self, tree: Tree, prefix: &[&str]) -> Result<Vec<Vec<String>>> {
        Ok(self
            .scan(tree, prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn put_json<T: Serialize>(&self, tree: Tree, key: &[&str], value: &T) -> Result<()> {
        self.write(vec![Write::put(tree, key, value)])
    }

    fn delete(&self, tree: Tree, key: &[&str]) -> Result<()> {
        self.write(vec![Write::delete(tree, key)])
    }
}

impl<S: Kv + ?Sized> KvExt for S {}

/// Records of one tree kept decoded beside the bytes they were decoded
/// from, for the few read on every delivery or run (a flow's current
/// record, a subscription, a hook). A read still goes to the store, unless
/// the store counts the tree's writes ([`Kv::writes`]) and none came since
/// the record was read; only the decoding is skipped when the stored bytes
/// are the ones decoded last time. So it is right under any writer, another
/// node's included, with no invalidation to forget.
pub struct Decoded<T> {
    tree: Tree,
    entries: std::sync::Mutex<std::collections::HashMap<Vec<String>, Entry<T>>>,
}

/// The bytes a record was decoded from, what they decoded to, and the
/// tree's write count before they were read.
type Entry<T> = (Vec<u8>, std::sync::Arc<T>, Option<u64>);

/// Entries a [`Decoded`] keeps before it starts again from empty (a host
/// with more hot records than this decodes some twice, nothing worse).
const DECODED_KEPT: usize = 4_096;

impl<T: DeserializeOwned> Decoded<T> {
    pub fn new(tree: Tree) -> Self {
        Decoded {
            tree,
            entries: std::sync::Mutex::default(),
        }
    }

    /// The record under `key`, decoded once per version of its bytes.
    pub fn get(&self, kv: &dyn Kv, key: &[&str]) -> Result<Option<std::sync::Arc<T>>> {
        // Counted before the read: a write after it makes the next get read.
        let writes = kv.writes(self.tree);
        let owned = parts(key);
        if writes.is_some() {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, value, seen)) = entries.get(&owned)
                && *seen == writes
            {
                return Ok(Some(value.clone()));
            }
        }
        let Some(bytes) = kv.get(self.tree, key)? else {
            return Ok(None);
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, value, count)) = entries.get_mut(&owned)
            && *seen == bytes
        {
            *count = writes;
            return Ok(Some(value.clone()));
        }
        drop(entries);
        let value = std::sync::Arc::new(decode::<T>(self.tree.name(), &bytes)?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= DECODED_KEPT {
            entries.clear();
        }
        entries.insert(owned, (bytes, value.clone(), writes));
        Ok(Some(value))
    }
}
