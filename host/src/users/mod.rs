//! People, not only tokens: a tenant's users (email and an argon2id
//! password hash) with their roles, the invitations an owner hands out,
//! browser sessions ([`sessions`]) and the audit log ([`audit`]). API
//! tokens stay for machines; a signed-in user acts as a [`Principal`] with
//! the user's tenant and role, so the API and the console enforce the same
//! rules.

pub mod audit;
pub mod sessions;

use std::sync::{Arc, Mutex};

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    clock::now_secs,
    error::ServiceError,
    store::{Kv, KvExt, Tree, Write},
    tenants::Role,
};

pub use audit::AuditEntry;
pub use sessions::{Session, SignIn};

/// How long an invitation link works.
const INVITATION_SECS: u64 = 7 * 24 * 3600;
/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub tenant: String,
    pub email: String,
    pub role: Role,
    /// argon2id, in the PHC string format (algorithm, parameters, salt, hash).
    password: String,
    pub created_at: u64,
    /// Who invited this user.
    pub invited_by: String,
}

/// Where an email signs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailEntry {
    tenant: String,
    user: String,
}

/// An invitation waiting for its link to be opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invitation {
    pub tenant: String,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub expires_at: u64,
}

/// The users service: people, sessions, sign-in throttling, audit log.
pub struct Users {
    kv: Arc<dyn Kv>,
    throttle: Mutex<sessions::Throttle>,
    /// How long a session lasts from sign-in.
    session_secs: u64,
    /// Sign-ins since start (every hundredth prunes expired sessions).
    sign_ins: std::sync::atomic::AtomicU32,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// An email as it is stored and looked up: trimmed, lower case, and
/// plausible (one `@` with text on both sides, no spaces).
pub fn normalise_email(text: &str) -> Result<String, ServiceError> {
    let email = text.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
    if valid {
        Ok(email)
    } else {
        Err(ServiceError::BadRequest(format!(
            "`{}` is not an email address",
            text.trim()
        )))
    }
}

fn hash_password(password: &str) -> Result<String, ServiceError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(ServiceError::BadRequest(format!(
            "the password must be at least {MIN_PASSWORD} characters"
        )));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ServiceError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("hashing a password: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

impl Users {
    pub fn new(kv: Arc<dyn Kv>, session_secs: u64) -> Self {
        Users {
            kv,
            throttle: Mutex::default(),
            session_secs: session_secs.max(1),
            sign_ins: Default::default(),
        }
    }

    /// How long a session lasts from sign-in, in seconds.
    pub fn session_secs(&self) -> u64 {
        self.session_secs
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<User>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Users, &[tenant])?)
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<User, ServiceError> {
        self.kv
            .get_json(Tree::Users, &[tenant, id])?
            .ok_or_else(|| ServiceError::NotFound(format!("user `{id}` does not exist")))
    }

    /// Invites `email` into `tenant` with `role`; returns the invitation's
    /// token (for the link, shown once; only its digest is kept).
    pub fn invite(
        &self,
        tenant: &str,
        email: &str,
        role: Role,
        invited_by: &str,
    ) -> Result<(Invitation, String), ServiceError> {
        let email = normalise_email(email)?;
        if self.kv.get(Tree::UserEmails, &[&email])?.is_some() {
            return Err(ServiceError::State(format!(
                "{email} already has an account on this host"
            )));
        }
        let token = format!("inv_{}", random_hex(24));
        let invitation = Invitation {
            tenant: tenant.to_string(),
            email,
            role,
            invited_by: invited_by.to_string(),
            expires_at: now_secs() + INVITATION_SECS,
        };
        self.kv
            .put_json(Tree::Invitations, &[&digest(&token)], &invitation)?;
        Ok((invitation, token))
    }

    /// A tenant's invitations that are still waiting, soonest to expire first.
    pub fn invitations(&self, tenant: &str) -> Result<Vec<Invitation>, ServiceError> {
        let now = now_secs();
        let mut list: Vec<Invitation> = self
            .kv
            .scan_json::<Invitation>(Tree::Invitations, &[])?
            .into_iter()
            .filter(|i| i.tenant == tenant && i.expires_at > now)
            .collect();
        list.sort_by_key(|i| i.expires_at);
        Ok(list)
    }

    /// The invitation a link carries, if it is still good.
    pub fn invitation(&self, token: &str) -> Result<Invitation, ServiceError> {
        self.kv
            .get_json::<Invitation>(Tree::Invitations, &[&digest(token)])?
            .filter(|i| i.expires_at > now_secs())
            .ok_or_else(|| {
                ServiceError::NotFound(
                    "this invitation is unknown, used or expired; ask for a new one".into(),
                )
            })
    }

    /// Accepts an invitation: creates the user with `password`. The
    /// invitation is used up in the same batch.
    pub fn accept(&self, token: &str, password: &str) -> Result<User, ServiceError> {
        let invitation = self.invitation(token)?;
        let hash = hash_password(password)?;
        if self
            .kv
            .get(Tree::UserEmails, &[&invitation.email])?
            .is_some()
        {
            return Err(ServiceError::State(format!(
                "{} already has an account on this host",
                invitation.email
            )));
        }
        let user = User {
            id: format!("usr_{}", random_hex(8)),
            tenant: invitation.tenant.clone(),
            email: invitation.email.clone(),
            role: invitation.role,
            password: hash,
            created_at: now_secs(),
            invited_by: invitation.invited_by.clone(),
        };
        self.kv.write(vec![
            Write::delete(Tree::Invitations, &[&digest(token)]),
            Write::put(Tree::Users, &[&user.tenant, &user.id], &user),
            Write::put(
                Tree::UserEmails,
                &[&user.email],
                &EmailEntry {
                    tenant: user.tenant.clone(),
                    user: user.id.clone(),
                },
            ),
        ])?;
        Ok(user)
    }

    /// Changes a user's role. The last owner of a tenant stays an owner
    /// (the tenant's token is not a person to recover with).
    pub fn set_role(&self, tenant: &str, id: &str, role: Role) -> Result<User, ServiceError> {
        let mut user = self.get(tenant, id)?;
        if user.role == Role::Owner && role != Role::Owner && self.owners(tenant)? == 1 {
            return Err(ServiceError::State(format!(
                "{} is the last owner; make someone else an owner first",
                user.email
            )));
        }
        user.role = role;
        self.kv.put_json(Tree::Users, &[tenant, &user.id], &user)?;
        Ok(user)
    }

    /// Removes a user; their sessions end at their next request.
    pub fn remove(&self, tenant: &str, id: &str) -> Result<User, ServiceError> {
        let user = self.get(tenant, id)?;
        self.kv.write(vec![
            Write::delete(Tree::Users, &[tenant, id]),
            Write::delete(Tree::UserEmails, &[&user.email]),
        ])?;
        Ok(user)
    }

    /// Forgets every user of a deleted tenant.
    pub fn remove_tenant(&self, tenant: &str) -> Result<(), ServiceError> {
        let mut writes = Vec::new();
        for user in self.list(tenant)? {
            writes.push(Write::delete(Tree::Users, &[tenant, &user.id]));
            writes.push(Write::delete(Tree::UserEmails, &[&user.email]));
        }
        if !writes.is_empty() {
            self.kv.write(writes)?;
        }
        Ok(())
    }

    fn owners(&self, tenant: &str) -> Result<usize, ServiceError> {
        Ok(self
            .list(tenant)?
            .iter()
            .filter(|u| u.role == Role::Owner)
            .count())
    }

    /// The user behind an email and password, or `None`; timing does not
    /// tell a missing user from a wrong password.
    fn check_password(&self, email: &str, password: &str) -> Result<Option<User>, ServiceError> {
        let Ok(email) = normalise_email(email) else {
            return Ok(None);
        };
        let entry: Option<EmailEntry> = self.kv.get_json(Tree::UserEmails, &[&email])?;
        let user = match entry {
            Some(e) => self
                .kv
                .get_json::<User>(Tree::Users, &[&e.tenant, &e.user])?,
            None => None,
        };
        match user {
            Some(user) if verify_password(password, &user.password) => Ok(Some(user)),
            Some(_) => Ok(None),
            None => {
                // The same work as a real check.
                verify_password(password, DUMMY_HASH);
                Ok(None)
            }
        }
    }
}

/// An argon2id hash of nothing anyone types, checked when an email is
/// unknown so that a wrong email costs as long as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$U7yXg6x1dJd1wM0bO0m3xqvP3sFvM2Y5Q0o0m6v7m0Q";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_or_refused() {
        for (given, expected) in [
            (" Ana@Shop.Example ", Some("ana@shop.example")),
            ("ana@shop", None),
            ("@shop.example", None),
            ("ana shop@x.example", None),
            ("", None),
        ] {
            assert_eq!(
                normalise_email(given).ok().as_deref(),
                expected,
                "{given:?}"
            );
        }
    }

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterx", &hash));
        assert!(!verify_password("anything", "not a hash"));
        assert!(hash_password("short").is_err());
    }
}
