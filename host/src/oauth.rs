//! The OAuth 2.0 authorization code flow for a connection: the host builds
//! the authorization URL (with PKCE and an unguessable state kept for ten
//! minutes), serves the redirect at `/oauth/callback`, exchanges the code and
//! stores the tokens sealed. The tenant never handles a token. The client it
//! signs in with is the connection's own or the plugin version's (secret
//! environment variables), as the call path builds it for any call.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    calls::Calls,
    clock::now_secs,
    connections::{ConnectionRecord, Connections},
    error::{ServiceError, UpstreamFailure},
    manifest::{AuthScheme, OAuth2Grant},
    sandbox::{HttpSandbox, auth::pkce_pair},
    store::{Kv, KvExt, Tree, Write},
};

const PENDING_SECS: u64 = 600;

/// An authorization code flow waiting for its callback.
#[derive(Serialize, Deserialize)]
struct Pending {
    tenant: String,
    connection_id: String,
    verifier: String,
    redirect_uri: String,
    expires_at: u64,
    /// A path of this host to send the browser back to after the callback.
    #[serde(default)]
    return_to: Option<String>,
}

pub struct OAuth {
    kv: Arc<dyn Kv>,
    connections: Arc<Connections>,
    calls: Arc<Calls>,
    sandbox: HttpSandbox,
}

impl OAuth {
    pub fn new(
        kv: Arc<dyn Kv>,
        connections: Arc<Connections>,
        calls: Arc<Calls>,
        sandbox: HttpSandbox,
    ) -> Self {
        OAuth {
            kv,
            connections,
            calls,
            sandbox,
        }
    }

    /// Starts the flow: returns the URL to send the user to. `base_url` is
    /// where this host is reachable by the browser; `return_to`, a path of
    /// this host where the callback sends the browser when it is done.
    pub fn authorize(
        &self,
        tenant: &str,
        id: &str,
        base_url: &str,
        return_to: Option<&str>,
    ) -> Result<Value, ServiceError> {
        // Only a path of this host: never an open redirect.
        let return_to = return_to
            .filter(|p| p.starts_with('/') && !p.starts_with("//") && !p.contains('\\'))
            .map(str::to_string);
        let record = self.connections.get(tenant, id)?;
        let plugin = self.connections.plugin_for(&record)?;
        if !matches!(
            plugin.record.manifest.auth,
            AuthScheme::Oauth2 {
                grant: OAuth2Grant::AuthorizationCode,
                ..
            }
        ) {
            return Err(ServiceError::BadRequest(format!(
                "plugin `{}` does not use the OAuth authorization code grant",
                record.plugin
            )));
        }
        let redirect_uri = format!("{}/oauth/callback", base_url.trim_end_matches('/'));
        let (verifier, challenge) = pkce_pair();
        let mut state_bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut state_bytes);
        let state = hex::encode(state_bytes);
        let (outbound, credentials) = self.calls.credentials_for(&plugin, &record)?;
        let url = credentials
            .authorization_url(&outbound.allowed, &redirect_uri, &state, &challenge)
            .map_err(ServiceError::BadRequest)?;
        let pending = Pending {
            tenant: tenant.to_string(),
            connection_id: id.to_string(),
            verifier,
            redirect_uri: redirect_uri.clone(),
            expires_at: now_secs() + PENDING_SECS,
            return_to,
        };
        self.kv.put_json(Tree::OAuthPending, &[&state], &pending)?;
        Ok(json!({"authorize_url": url, "redirect_uri": redirect_uri, "expires_in": PENDING_SECS}))
    }

    /// Finishes the flow: exchanges the code and stores the tokens. Returns
    /// the connection, and the path to send the browser back to, if any.
    pub async fn callback(
        &self,
        state: &str,
        code: &str,
    ) -> Result<(ConnectionRecord, Option<String>), ServiceError> {
        let pending: Pending = self
            .kv
            .get_json(Tree::OAuthPending, &[state])?
            .filter(|p: &Pending| p.expires_at > now_secs())
            .ok_or_else(|| {
                ServiceError::BadRequest("unknown or expired OAuth state; start again".into())
            })?;
        // One use only.
        self.kv
            .write(vec![Write::delete(Tree::OAuthPending, &[state])])?;
        let record = self
            .connections
            .get(&pending.tenant, &pending.connection_id)?;
        let plugin = self.connections.plugin_for(&record)?;
        if !matches!(plugin.record.manifest.auth, AuthScheme::Oauth2 { .. }) {
            return Err(ServiceError::State(
                "the plugin no longer uses OAuth".into(),
            ));
        }
        let (outbound, credentials) = self.calls.credentials_for(&plugin, &record)?;
        let (result, _exchanges) = credentials
            .exchange_code(
                &self.sandbox,
                &outbound.allowed,
                code,
                &pending.redirect_uri,
                &pending.verifier,
            )
            .await;
        let tokens = result.map_err(|e| ServiceError::Upstream {
            failure: UpstreamFailure::Failed,
            message: format!("the code exchange failed: {e}"),
        })?;
        self.connections
            .save_auth_state(&pending.tenant, &pending.connection_id, &tokens)?;
        self.connections
            .auth_states()
            .forget(&pending.connection_id);
        let record = self
            .connections
            .get(&pending.tenant, &pending.connection_id)?;
        Ok((record, pending.return_to))
    }
}
