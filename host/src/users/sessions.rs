//! Browser sessions: sign-in with an email and password or with an API
//! token, a random session id kept only as its SHA-256 digest, a CSRF token
//! per session, a fixed lifetime, and a throttle that slows sign-ins after a
//! few failures in a row.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{Users, digest, random_hex};
use crate::{
    clock::now_secs,
    error::ServiceError,
    store::{KvExt, Tree},
    tenants::{Principal, Tenants},
};

/// Failures in a row that are free; each one after doubles the wait.
const FREE_FAILURES: u32 = 3;
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Entries the throttle remembers at most (older ones go first).
const THROTTLE_KEYS: usize = 10_000;

/// What a person signs in with.
pub enum SignIn<'a> {
    Password {
        email: &'a str,
        password: &'a str,
    },
    /// The operator's or a tenant's API token.
    Token(&'a str),
}

/// Who a session is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Holder {
    /// Signed in with a token: its digest, so a rotated token ends the session.
    Token {
        digest: String,
    },
    User {
        tenant: String,
        user: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub holder: Holder,
    /// Sent back with every form and htmx request that changes something.
    pub csrf: String,
    pub created_at: u64,
    pub expires_at: u64,
}

/// A session as a request sees it: who it acts for and its CSRF token.
#[derive(Debug, Clone)]
pub struct Active {
    pub principal: Principal,
    pub csrf: String,
    pub expires_at: u64,
}

/// What became of a session id.
#[derive(Debug)]
pub enum Lookup {
    Active(Active),
    /// It existed and ran out (or its user or token is gone).
    Expired,
    Unknown,
}

/// Consecutive failures per key (an email, or a source address for tokens).
#[derive(Default)]
pub(super) struct Throttle {
    failures: HashMap<String, (u32, Instant)>,
}

impl Throttle {
    /// How long `key` must still wait before its next attempt.
    fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let (count, last) = self.failures.get(key)?;
        let wait = delay_after(*count)?;
        let ready = *last + wait;
        (ready > now).then(|| ready - now)
    }

    fn fail(&mut self, key: &str, now: Instant) {
        if self.failures.len() >= THROTTLE_KEYS && !self.failures.contains_key(key) {
            // Forget the entries whose wait is over, then the oldest.
            self.failures
                .retain(|_, (count, last)| delay_after(*count).is_some_and(|d| *last + d > now));
            if self.failures.len() >= THROTTLE_KEYS
                && let Some(oldest) = self
                    .failures
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(k, _)| k.clone())
            {
                self.failures.remove(&oldest);
            }
        }
        let entry = self.failures.entry(key.to_string()).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
    }

    fn succeed(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

/// The wait after `failures` failures in a row: none for the first few,
/// then 1 s, 2 s, 4 s... up to five minutes.
pub fn delay_after(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    Some(Duration::from_secs(1u64 << over.min(9)).min(MAX_WAIT))
}

impl Users {
    /// Checks the credentials and opens a session; returns its id (for the
    /// cookie; only its digest is stored). `source` keys the throttle of
    /// token sign-ins (the caller's address).
    pub fn sign_in(
        &self,
        tenants: &Tenants,
        credentials: SignIn<'_>,
        source: &str,
    ) -> Result<(String, Session), ServiceError> {
        let key = match &credentials {
            SignIn::Password { email, .. } => format!("email:{}", email.trim().to_lowercase()),
            SignIn::Token(_) => format!("token:{source}"),
        };
        let now = Instant::now();
        if let Some(wait) = self.throttle().wait(&key, now) {
            return Err(ServiceError::TooMany {
                message: format!(
                    "too many failed sign-ins in a row; try again in {} s",
                    wait.as_secs().max(1)
                ),
                retry_after: wait.as_secs().max(1),
            });
        }
        let holder = match credentials {
            SignIn::Password { email, password } => {
                self.check_password(email, password)?.map(|u| Holder::User {
                    tenant: u.tenant,
                    user: u.id,
                })
            }
            SignIn::Token(token) => tenants.authenticate(token.trim())?.map(|_| Holder::Token {
                digest: Tenants::token_digest(token.trim()),
            }),
        };
        let Some(holder) = holder else {
            self.throttle().fail(&key, now);
            return Err(ServiceError::Unauthorized(
                "the email and password, or the token, are not right".into(),
            ));
        };
        self.throttle().succeed(&key);
        // Every hundredth sign-in clears the sessions that ran out.
        if self
            .sign_ins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % 100
            == 99
        {
            self.prune_sessions()?;
        }
        let id = format!("sys_{}", random_hex(32));
        let created_at = now_secs();
        let session = Session {
            holder,
            csrf: random_hex(24),
            created_at,
            expires_at: created_at + self.session_secs,
        };
        self.kv
            .put_json(Tree::Sessions, &[&digest(&id)], &session)?;
        Ok((id, session))
    }

    /// The session a cookie names, with who it acts for now (a user's
    /// current role; a removed user or a rotated token ends it).
    pub fn session(&self, tenants: &Tenants, id: &str) -> Result<Lookup, ServiceError> {
        let key = digest(id);
        let Some(session) = self.kv.get_json::<Session>(Tree::Sessions, &[&key])? else {
            return Ok(Lookup::Unknown);
        };
        // Kept until pruned, so every request of that browser hears why.
        if session.expires_at <= now_secs() {
            return Ok(Lookup::Expired);
        }
        let principal = match &session.holder {
            Holder::Token { digest } => tenants.authenticate_digest(digest)?,
            Holder::User { tenant, user } => self
                .kv
                .get_json::<super::User>(Tree::Users, &[tenant, user])?
                .map(|u| Principal::Tenant {
                    tenant: u.tenant,
                    role: u.role,
                    user: Some(u.email),
                }),
        };
        Ok(match principal {
            Some(principal) => Lookup::Active(Active {
                principal,
                csrf: session.csrf,
                expires_at: session.expires_at,
            }),
            None => {
                self.kv.delete(Tree::Sessions, &[&key])?;
                Lookup::Expired
            }
        })
    }

    /// Ends a session (sign-out).
    pub fn sign_out(&self, id: &str) -> Result<(), ServiceError> {
        self.kv.delete(Tree::Sessions, &[&digest(id)])?;
        Ok(())
    }

    /// Deletes sessions that ran out; returns how many.
    pub fn prune_sessions(&self) -> Result<usize, ServiceError> {
        let now = now_secs();
        let mut gone = 0;
        for (key, bytes) in self.kv.scan(Tree::Sessions, &[])? {
            let expired = serde_json::from_slice::<Session>(&bytes)
                .map(|s| s.expires_at <= now)
                .unwrap_or(true);
            if expired {
                let parts: Vec<&str> = key.iter().map(String::as_str).collect();
                self.kv.delete(Tree::Sessions, &parts)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_after_a_few_failures() {
        let table = [
            (0, None),
            (1, None),
            (3, Some(1)),
            (4, Some(2)),
            (6, Some(8)),
            (12, Some(300)),
            (40, Some(300)),
        ];
        for (failures, secs) in table {
            assert_eq!(
                delay_after(failures),
                secs.map(Duration::from_secs),
                "{failures}"
            );
        }
    }

    #[test]
    fn the_throttle_waits_then_forgets_on_success() {
        let mut t = Throttle::default();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.wait("a", start), None);
            t.fail("a", start);
        }
        assert_eq!(t.wait("a", start), Some(Duration::from_secs(1)));
        assert_eq!(t.wait("b", start), None, "other keys are not slowed");
        assert_eq!(t.wait("a", start + Duration::from_secs(2)), None);
        t.succeed("a");
        assert_eq!(t.wait("a", start), None);
    }
}
