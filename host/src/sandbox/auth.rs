//! Credentials the host adds to a connection's requests: Basic, API key
//! (with an optional partner key of the operator's), bearer, OAuth 2.0
//! (client credentials, authorization code with PKCE, refresh; the client
//! from the connection or from the version's environment), session login and
//! Digest. Tokens the host obtains are kept in memory per connection and
//! handed to a persistence hook (sealed at rest); none of it ever reaches the
//! guest.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    auth_url, digest,
    http::{Exchange, HttpSandbox, OutboundRequest, OutboundResponse, Prepared, SendError},
    login::{LoginFailure, LoginFailureKind},
    policy::{self, HostPattern},
    scrub::Scrubber,
};
use crate::manifest::{ApiKeyPlacement, AuthScheme, OAuth2Grant, TokenSource};

/// Tokens are refreshed this long before they expire.
const REFRESH_MARGIN_SECS: u64 = 60;

/// Environment variables the host reads for an app's own credentials, where
/// a connection has none: the OAuth client (`CLIENT_SECRET` only as a secret
/// variable; `CLIENT_ID` either way) ...
pub const CLIENT_ID: &str = "CLIENT_ID";
pub const CLIENT_SECRET: &str = "CLIENT_SECRET";
/// ... and, for an API key scheme, a partner key (a secret variable) sent
/// beside the user's key under the header or query parameter named by
/// `PARTNER_KEY_NAME`.
pub const PARTNER_KEY: &str = "PARTNER_KEY";
pub const PARTNER_KEY_NAME: &str = "PARTNER_KEY_NAME";

/// A plugin version's environment variables, as the host reads them for
/// auth. The secret ones never reach the guest.
#[derive(Debug, Clone, Default)]
pub struct VersionEnv {
    pub plain: BTreeMap<String, String>,
    pub secret: BTreeMap<String, String>,
}

/// Host-held auth state of one connection, persisted sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub session_token: Option<String>,
}

/// Called with a connection's new auth state after a token was obtained.
pub type PersistState = Arc<dyn Fn(&str, &AuthState) + Send + Sync>;

#[derive(Default)]
struct ConnectionAuth {
    state: AuthState,
    loaded: bool,
    digest: Option<(digest::Challenge, u32)>,
    /// A sign-in refused for wrong credentials, and the fingerprint of the
    /// credentials it was refused with: no call signs in with those again
    /// (an account lock-out is a few failed logins away) until the
    /// connection is changed or resumed ([`AuthStates::forget`]) or the
    /// credentials change.
    refused: Option<(LoginFailure, [u8; 32])>,
}

/// Auth state of every connection, shared by all calls.
#[derive(Default)]
pub struct AuthStates {
    connections: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ConnectionAuth>>>>,
}

impl AuthStates {
    fn entry(&self, connection_id: &str) -> Arc<tokio::sync::Mutex<ConnectionAuth>> {
        self.connections
            .lock()
            .expect("auth state lock")
            .entry(connection_id.to_string())
            .or_default()
            .clone()
    }

    /// Drops what is cached for a connection (its credentials changed, or it
    /// was resumed after a refused sign-in).
    pub fn forget(&self, connection_id: &str) {
        self.connections
            .lock()
            .expect("auth state lock")
            .remove(connection_id);
    }
}

/// What the host needs to authenticate one connection's requests.
pub struct Credentials {
    pub connection_id: String,
    pub scheme: AuthScheme,
    /// Every property of the connection as text, secret ones included.
    pub values: BTreeMap<String, String>,
    /// Secret values (the connection's and the version's), to cut out of
    /// anything recorded and anything the plugin reads.
    pub secrets: Vec<String>,
    /// The plugin version's environment, for an app's own credentials.
    pub env: VersionEnv,
    /// The auth state stored with the connection, used until one is cached.
    pub stored: Option<AuthState>,
    pub states: Arc<AuthStates>,
    pub persist: Option<PersistState>,
    /// Every token of the connection this call has held (access, refresh,
    /// session), to cut out of the responses the plugin reads.
    pub tokens: Mutex<Vec<String>>,
}

fn value<'a>(values: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, SendError> {
    values.get(name).map(String::as_str).ok_or_else(|| {
        SendError::Denied(format!(
            "the connection has no `{name}` for its auth scheme"
        ))
    })
}

/// An OAuth client: the connection's own, or the operator's app from the
/// version's environment.
struct OAuthClient<'a> {
    id: &'a str,
    secret: &'a str,
    operator: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Credentials {
    /// Headers only the host may set for this scheme.
    pub fn host_owned_headers(&self) -> Vec<String> {
        match &self.scheme {
            AuthScheme::ApiKey {
                placement: ApiKeyPlacement::Header,
                name,
                ..
            } => [Some(name.clone()), self.partner_key_name().ok().flatten()]
                .into_iter()
                .flatten()
                .collect(),
            AuthScheme::Session { header_name, .. } => vec![header_name.clone()],
            AuthScheme::AwsSigV4 { .. } => super::sigv4::OWNED_HEADERS.map(String::from).to_vec(),
            _ => Vec::new(),
        }
    }

    /// Cuts secret values (raw and percent-encoded) out of a URL for the log.
    pub fn redact(&self, url: &str) -> String {
        let mut out = url.to_string();
        for secret in self.secrets.iter().filter(|s| s.len() >= 4) {
            out = out.replace(secret.as_str(), "[redacted]");
            let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            out = out.replace(&encoded, "[redacted]");
        }
        out
    }

    async fn lock(&self) -> tokio::sync::OwnedMutexGuard<ConnectionAuth> {
        let mut guard = self.states.entry(&self.connection_id).lock_owned().await;
        if !guard.loaded {
            guard.loaded = true;
            guard.state = self.stored.clone().unwrap_or_default();
        }
        self.remember(&guard.state);
        guard
    }

    fn save(&self, state: &AuthState) {
        self.remember(state);
        if let Some(persist) = &self.persist {
            persist(&self.connection_id, state);
        }
    }

    /// Notes the state's tokens for [`Credentials::scrubber`].
    fn remember(&self, state: &AuthState) {
        let mut tokens = self.tokens.lock().expect("token memo lock");
        let current = [
            &state.access_token,
            &state.refresh_token,
            &state.session_token,
        ];
        for token in current.into_iter().flatten() {
            if !tokens.contains(token) {
                tokens.push(token.clone());
            }
        }
    }

    /// What cuts this connection's secrets and tokens out of a response, or
    /// `None` when it has none worth scrubbing.
    pub fn scrubber(&self) -> Option<Scrubber> {
        let basic_pair = match (&self.scheme, self.values.get("username")) {
            (AuthScheme::Basic, Some(user)) => self
                .values
                .get("password")
                .map(|password| BASE64.encode(format!("{user}:{password}"))),
            _ => None,
        };
        let tokens = self.tokens.lock().expect("token memo lock");
        Scrubber::new(
            self.secrets.iter().chain(tokens.iter()).map(String::as_str),
            basic_pair,
        )
    }

    /// Identifies the credentials a sign-in uses, so a refusal is not held
    /// against credentials that have changed since.
    fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for map in [&self.values, &self.env.plain, &self.env.secret] {
            for (name, value) in map {
                hash.update(name.as_bytes());
                hash.update([0]);
                hash.update(value.as_bytes());
                hash.update([0]);
            }
            hash.update([1]);
        }
        hash.finalize().into()
    }

    /// The refusal an earlier sign-in with these credentials got, if any.
    fn refused(&self, auth: &ConnectionAuth) -> Result<(), SendError> {
        match &auth.refused {
            Some((failure, fingerprint)) if *fingerprint == self.fingerprint() => {
                Err(SendError::Login(failure.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Turns a failed sign-in into the request's error, remembering a
    /// refusal so that no other call tries the same credentials again.
    fn sign_in_failed(&self, auth: &mut ConnectionAuth, failure: LoginFailure) -> SendError {
        if failure.kind == LoginFailureKind::Refused {
            auth.refused = Some((failure.clone(), self.fingerprint()));
        }
        SendError::Login(failure)
    }

    /// The OAuth client to authenticate with: the connection's `client_id`
    /// and `client_secret`, or else the version's `CLIENT_ID` and secret
    /// `CLIENT_SECRET`, so that tenants of a platform-wide app only connect.
    fn oauth_client(&self) -> Result<OAuthClient<'_>, SendError> {
        if let Some(id) = self.values.get("client_id") {
            return Ok(OAuthClient {
                id,
                secret: value(&self.values, "client_secret")?,
                operator: false,
            });
        }
        match (self.env_client_id(), self.env.secret.get(CLIENT_SECRET)) {
            (Some(id), Some(secret)) => Ok(OAuthClient {
                id,
                secret,
                operator: true,
            }),
            _ => Err(SendError::Denied(format!(
                "the connection has no `client_id` and `client_secret`, and the plugin version's \
                 environment has no {CLIENT_ID} and secret {CLIENT_SECRET}"
            ))),
        }
    }

    fn env_client_id(&self) -> Option<&str> {
        (self.env.secret.get(CLIENT_ID))
            .or_else(|| self.env.plain.get(CLIENT_ID))
            .map(String::as_str)
    }

    /// Where the version's partner key goes (`PARTNER_KEY_NAME`), if it has
    /// one; an error if it has a key but does not say where.
    fn partner_key_name(&self) -> Result<Option<String>, SendError> {
        if !self.env.secret.contains_key(PARTNER_KEY) {
            return Ok(None);
        }
        let name = (self.env.plain.get(PARTNER_KEY_NAME))
            .or_else(|| self.env.secret.get(PARTNER_KEY_NAME))
            .filter(|n| !n.trim().is_empty());
        match (name, &self.scheme) {
            (None, _) => Err(SendError::Denied(format!(
                "the plugin version's environment has a secret {PARTNER_KEY} but no \
                 {PARTNER_KEY_NAME} naming the header or query parameter it goes in"
            ))),
            (Some(name), AuthScheme::ApiKey { name: own, .. })
                if name.eq_ignore_ascii_case(own) =>
            {
                Err(SendError::Denied(format!(
                    "{PARTNER_KEY_NAME} `{name}` is where the connection's own key goes; \
                     name another header or query parameter"
                )))
            }
            (Some(name), _) => Ok(Some(name.clone())),
        }
    }

    /// Adds credentials to a request, obtaining a token first if needed.
    pub(crate) async fn apply(
        &self,
        sandbox: &HttpSandbox,
        allowed: &[HostPattern],
        request: &mut Prepared,
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<(), SendError> {
        match &self.scheme {
            AuthScheme::None => {}
            AuthScheme::Basic => {
                let pair = format!(
                    "{}:{}",
                    value(&self.values, "username")?,
                    value(&self.values, "password")?
                );
                request.set_header("Authorization", format!("Basic {}", BASE64.encode(pair)));
            }
            AuthScheme::Bearer => {
                request.set_header(
                    "Authorization",
                    format!("Bearer {}", value(&self.values, "token")?),
                );
            }
            AuthScheme::ApiKey {
                placement,
                name,
                prefix,
            } => {
                let key = value(&self.values, "api_key")?;
                match placement {
                    ApiKeyPlacement::Header => request.set_header(name, format!("{prefix}{key}")),
                    ApiKeyPlacement::Query => set_query(request, name, key),
                }
                if let Some(partner_name) = self.partner_key_name()? {
                    // The operator's key goes only where the manifest says,
                    // never to a host a tenant's property chose.
                    if !policy::named_by_manifest(&request.url, allowed) {
                        return Err(SendError::Denied(format!(
                            "the partner key ({PARTNER_KEY}) goes only to hosts the manifest \
                             names, and {} comes from a connection property",
                            request.url.host_str().unwrap_or_default()
                        )));
                    }
                    let partner = &self.env.secret[PARTNER_KEY];
                    match placement {
                        ApiKeyPlacement::Header => {
                            request.set_header(&partner_name, partner.clone())
                        }
                        ApiKeyPlacement::Query => set_query(request, &partner_name, partner),
                    }
                }
            }
            AuthScheme::Oauth2 { .. } => {
                let mut auth = self.lock().await;
                self.refused(&auth)?;
                let fresh = auth.state.access_token.is_some()
                    && auth
                        .state
                        .expires_at
                        .is_none_or(|at| at > now_secs() + REFRESH_MARGIN_SECS);
                if !fresh {
                    self.obtain_token(sandbox, allowed, &mut auth, deadline, exchanges)
                        .await?;
                }
                let token = auth.state.access_token.clone().unwrap_or_default();
                request.set_header("Authorization", format!("Bearer {token}"));
            }
            AuthScheme::Session {
                header_name,
                header_value,
                ..
            } => {
                let mut auth = self.lock().await;
                self.refused(&auth)?;
                if auth.state.session_token.is_none() {
                    self.login(sandbox, allowed, &mut auth, deadline, exchanges)
                        .await?;
                }
                let token = auth.state.session_token.clone().unwrap_or_default();
                request.set_header(header_name, header_value.replace("{{token}}", &token));
            }
            AuthScheme::Digest => {
                let mut auth = self.lock().await;
                if let Some((challenge, nc)) = &mut auth.digest {
                    *nc += 1;
                    self.answer_digest(challenge, *nc, request)?;
                }
            }
            AuthScheme::AwsSigV4 { region, service } => {
                let region = match region.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
                    Some(name) => value(&self.values, name.trim())?,
                    None => region.as_str(),
                };
                let signer = super::sigv4::Signer {
                    access_key_id: value(&self.values, "access_key_id")?,
                    secret_access_key: value(&self.values, "secret_access_key")?,
                    session_token: self.values.get("session_token").map(String::as_str),
                    region,
                    service,
                };
                let signed = signer
                    .headers(
                        request.method.as_str(),
                        request.url.as_str(),
                        &request.headers,
                        &request.body,
                        SystemTime::now(),
                    )
                    .map_err(SendError::Denied)?;
                for (name, value) in signed {
                    request.set_header(&name, value);
                }
            }
        }
        Ok(())
    }

    /// After a 401: refreshes, logs in again or answers the Digest challenge,
    /// and updates the request. `false` when nothing can be done.
    pub(crate) async fn recover(
        &self,
        sandbox: &HttpSandbox,
        allowed: &[HostPattern],
        request: &mut Prepared,
        response: &OutboundResponse,
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<bool, SendError> {
        match &self.scheme {
            AuthScheme::Oauth2 { .. } => {
                let mut auth = self.lock().await;
                let current = auth
                    .state
                    .access_token
                    .as_ref()
                    .map(|t| format!("Bearer {t}"));
                // Calls refused together share one new token: a call that
                // finds the token already replaced retries with that one.
                if current.is_none() || current.as_deref() == sent(request, "Authorization") {
                    self.refused(&auth)?;
                    auth.state.access_token = None;
                    self.obtain_token(sandbox, allowed, &mut auth, deadline, exchanges)
                        .await?;
                }
                let token = auth.state.access_token.clone().unwrap_or_default();
                request.set_header("Authorization", format!("Bearer {token}"));
                Ok(true)
            }
            AuthScheme::Session {
                header_name,
                header_value,
                ..
            } => {
                let mut auth = self.lock().await;
                let current = (auth.state.session_token.as_ref())
                    .map(|t| header_value.replace("{{token}}", t));
                // As above: one login for calls refused together (a login
                // per call could also end the session another call opened).
                if current.is_none() || current.as_deref() == sent(request, header_name) {
                    self.refused(&auth)?;
                    self.login(sandbox, allowed, &mut auth, deadline, exchanges)
                        .await?;
                }
                let token = auth.state.session_token.clone().unwrap_or_default();
                request.set_header(header_name, header_value.replace("{{token}}", &token));
                Ok(true)
            }
            AuthScheme::Digest => {
                let challenges: Vec<&str> = response
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
                    .map(|(_, v)| v.as_str())
                    .collect();
                let Some(challenge) = digest::parse_challenges(&challenges) else {
                    return Ok(false);
                };
                self.answer_digest(&challenge, 1, request)?;
                self.lock().await.digest = Some((challenge, 1));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Signs `request` for a Digest challenge with nonce count `nc`.
    fn answer_digest(
        &self,
        challenge: &digest::Challenge,
        nc: u32,
        request: &mut Prepared,
    ) -> Result<(), SendError> {
        let header = digest::authorization(
            challenge,
            request.method.as_str(),
            &request.request_target(),
            value(&self.values, "username")?,
            value(&self.values, "password")?,
            nc,
            &digest::new_cnonce(),
        );
        request.set_header("Authorization", header);
        Ok(())
    }

    async fn obtain_token(
        &self,
        sandbox: &HttpSandbox,
        allowed: &[HostPattern],
        auth: &mut ConnectionAuth,
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<(), SendError> {
        let AuthScheme::Oauth2 { grant, scopes, .. } = &self.scheme else {
            return Ok(());
        };
        let mut form = vec![];
        if let Some(refresh) = &auth.state.refresh_token {
            form.push(("grant_type", "refresh_token".to_string()));
            form.push(("refresh_token", refresh.clone()));
        } else if *grant == OAuth2Grant::ClientCredentials {
            form.push(("grant_type", "client_credentials".to_string()));
            if !scopes.is_empty() {
                form.push(("scope", scopes.join(" ")));
            }
        } else {
            return Err(SendError::Denied(
                "the connection is not authorized yet: start the OAuth flow \
                 (POST /v1/connections/{id}/oauth/authorize) first"
                    .to_string(),
            ));
        }
        let previous_refresh = auth.state.refresh_token.clone();
        let mut state = match self
            .token_request(sandbox, allowed, &form, deadline, exchanges)
            .await
        {
            Ok(state) => state,
            Err(SendError::Login(failure)) => return Err(self.sign_in_failed(auth, failure)),
            Err(other) => return Err(other),
        };
        // Providers may omit the refresh token on refresh: keep the old one.
        if state.refresh_token.is_none() {
            state.refresh_token = previous_refresh;
        }
        auth.state.access_token = state.access_token;
        auth.state.refresh_token = state.refresh_token;
        auth.state.expires_at = state.expires_at;
        self.save(&auth.state);
        Ok(())
    }

    async fn login(
        &self,
        sandbox: &HttpSandbox,
        allowed: &[HostPattern],
        auth: &mut ConnectionAuth,
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<(), SendError> {
        let AuthScheme::Session {
            login_method,
            login_url,
            login_headers,
            login_body,
            token_from,
            ..
        } = &self.scheme
        else {
            return Ok(());
        };
        let url = auth_url::fill("login URL", login_url, &self.values, allowed)
            .map_err(SendError::Denied)?;
        let body = login_body
            .as_deref()
            .map(|b| fill(b, &self.values, body_escape(b)));
        let request = OutboundRequest {
            method: login_method.clone(),
            url: url.url.into(),
            headers: login_headers
                .iter()
                .map(|(n, v)| (n.clone(), fill(v, &self.values, Escape::None)))
                .collect(),
            body: body.unwrap_or_default().into_bytes(),
            timeout: None,
        };
        let prepared = sandbox.check(allowed, request)?;
        let response = sandbox
            .transmit("login", prepared, None, deadline, exchanges)
            .await?;
        if !(200..300).contains(&response.status) {
            let failure = LoginFailure::from_answer(
                "session login failed with",
                &response,
                SystemTime::now(),
            );
            return Err(self.sign_in_failed(auth, failure));
        }
        let token = session_token(token_from, |name| response.header(name), &response.body);
        let Some(token) = token else {
            return Err(SendError::Login(LoginFailure::broken(format!(
                "session login answered {} but the token was not at {token_from:?}",
                response.status
            ))));
        };
        auth.state.session_token = Some(token);
        self.save(&auth.state);
        Ok(())
    }

    /// One request to the OAuth token endpoint, with the client
    /// authenticated by HTTP Basic (RFC 6749 §2.3.1). The token URL must be
    /// within the plugin's allowed hosts, and the operator's client secret
    /// goes only to a host the manifest names.
    async fn token_request(
        &self,
        sandbox: &HttpSandbox,
        allowed: &[HostPattern],
        form: &[(&str, String)],
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<AuthState, SendError> {
        let AuthScheme::Oauth2 { token_url, .. } = &self.scheme else {
            return Err(SendError::InvalidRequest(
                "the plugin does not use OAuth".to_string(),
            ));
        };
        let client = self.oauth_client()?;
        let url = auth_url::fill("token URL", token_url, &self.values, allowed)
            .map_err(SendError::Denied)?;
        if client.operator && !url.named {
            return Err(SendError::Denied(format!(
                "the token URL's host {} comes from a connection property, and the \
                 operator's {CLIENT_SECRET} goes only to hosts the manifest names",
                url.url.host_str().unwrap_or_default()
            )));
        }
        // The serializer is not `Send`: finish it before any await.
        let body = {
            let mut serializer = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                serializer.append_pair(k, v);
            }
            serializer.finish()
        };
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let request = OutboundRequest {
            method: "POST".into(),
            url: url.url.into(),
            headers: vec![
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("Accept".into(), "application/json".into()),
            ],
            body: body.into_bytes(),
            timeout: None,
        };
        let mut prepared = sandbox.check(allowed, request)?;
        let basic = format!("{}:{}", encode(client.id), encode(client.secret));
        prepared.set_header("Authorization", format!("Basic {}", BASE64.encode(basic)));
        let response = sandbox
            .transmit("token", prepared, None, deadline, exchanges)
            .await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            refresh_token: Option<String>,
            expires_in: Option<u64>,
        }
        if !(200..300).contains(&response.status) {
            return Err(SendError::Login(LoginFailure::from_answer(
                "the OAuth token endpoint answered",
                &response,
                SystemTime::now(),
            )));
        }
        let token: TokenResponse = serde_json::from_slice(&response.body).map_err(|e| {
            SendError::Login(LoginFailure::broken(format!(
                "the OAuth token endpoint's answer has no usable access_token: {e}"
            )))
        })?;
        Ok(AuthState {
            access_token: Some(token.access_token),
            refresh_token: token.refresh_token,
            expires_at: token.expires_in.map(|s| now_secs() + s),
            session_token: None,
        })
    }

    /// The URL to send a user to for the authorization code grant, with the
    /// connection's client id or the version's `CLIENT_ID`.
    pub fn authorization_url(
        &self,
        allowed: &[HostPattern],
        redirect_uri: &str,
        state: &str,
        code_challenge: &str,
    ) -> Result<String, String> {
        let AuthScheme::Oauth2 {
            grant: OAuth2Grant::AuthorizationCode,
            authorize_url,
            scopes,
            ..
        } = &self.scheme
        else {
            return Err("the plugin does not use the OAuth authorization code grant".into());
        };
        let client_id = (self.values.get("client_id").map(String::as_str))
            .or_else(|| self.env_client_id())
            .ok_or_else(|| {
                format!(
                    "the connection has no `client_id` and the plugin version's environment \
                     has no {CLIENT_ID}"
                )
            })?;
        let mut url = auth_url::fill("authorize URL", authorize_url, &self.values, allowed)?.url;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", state)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges an authorization code for tokens. The error has the
    /// connection's secrets cut out: the provider's answer may quote them.
    pub async fn exchange_code(
        &self,
        sandbox: &HttpSandbox,
        allowed: &[HostPattern],
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> (Result<AuthState, SendError>, Vec<Exchange>) {
        let mut exchanges = Vec::new();
        let form = [
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", verifier.to_string()),
        ];
        let deadline = Instant::now() + sandbox.config().request_timeout;
        let result = self
            .token_request(sandbox, allowed, &form, deadline, &mut exchanges)
            .await;
        let result = match (result, self.scrubber()) {
            (Err(e), Some(scrubber)) => Err(e.scrubbed(&scrubber)),
            (result, _) => result,
        };
        (result, exchanges)
    }
}

/// Sets the query parameter `name` to `value`, replacing any the plugin set.
fn set_query(request: &mut Prepared, name: &str, value: &str) {
    let kept: Vec<(String, String)> = request
        .url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut pairs = request.url.query_pairs_mut();
    pairs.clear();
    for (k, v) in kept {
        pairs.append_pair(&k, &v);
    }
    pairs.append_pair(name, value);
}

/// The value a request was sent with for `name`.
fn sent<'a>(request: &'a Prepared, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    Url,
    Json,
}

/// How values are escaped in a session login body: a body that starts
/// (after white space) with `{` or `[` is JSON, and a value goes in as the
/// inside of a JSON string (the template puts the quotes); any other body
/// is a form, and a value is URL-encoded.
fn body_escape(body: &str) -> Escape {
    if body.trim_start().starts_with(['{', '[']) {
        Escape::Json
    } else {
        Escape::Url
    }
}

/// Replaces `{{name}}` with the connection's value, escaped for where it goes.
fn fill(template: &str, values: &BTreeMap<String, String>, escape: Escape) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        let needle = format!("{{{{{name}}}}}");
        if out.contains(&needle) {
            let escaped = match escape {
                Escape::None => value.clone(),
                Escape::Url => url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
                Escape::Json => {
                    let quoted = serde_json::to_string(value).expect("strings serialise");
                    quoted[1..quoted.len() - 1].to_string()
                }
            };
            out = out.replace(&needle, &escaped);
        }
    }
    out
}

/// The token in a session login's answer: a header's value, or the string
/// or number at a JSON pointer into the body (the empty pointer `""` is the
/// whole body, for an API that answers a bare JSON string).
fn session_token<'a>(
    from: &TokenSource,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> Option<String> {
    match from {
        TokenSource::Header(name) => header(name).map(str::to_string),
        TokenSource::JsonPointer(pointer) => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.pointer(pointer).cloned())
            .and_then(|v| match v {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
    }
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
pub fn pkce_pair() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn credentials(scheme: AuthScheme, values: &[(&str, &str)], env: VersionEnv) -> Credentials {
        Credentials {
            connection_id: "conn_1".into(),
            scheme,
            values: map(values),
            secrets: Vec::new(),
            env,
            stored: None,
            states: Default::default(),
            persist: None,
            tokens: Default::default(),
        }
    }

    fn code_grant() -> AuthScheme {
        AuthScheme::Oauth2 {
            grant: OAuth2Grant::AuthorizationCode,
            authorize_url: "https://{{shop}}.shop.test/authorize".into(),
            token_url: "https://{{shop}}.shop.test/token".into(),
            scopes: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn templates_escape_for_their_place() {
        let values = map(&[("user", "a\"b&c"), ("pw", "x y")]);
        assert_eq!(
            fill(r#"{"u":"{{user}}","p":"{{pw}}"}"#, &values, Escape::Json),
            r#"{"u":"a\"b&c","p":"x y"}"#
        );
        assert_eq!(
            fill("u={{user}}&p={{pw}}", &values, Escape::Url),
            "u=a%22b%26c&p=x+y"
        );
        assert_eq!(fill("{{missing}}", &values, Escape::None), "{{missing}}");
        for (body, escape) in [
            (r#"{"u":"{{user}}"}"#, Escape::Json),
            ("\n  [\"{{user}}\"]", Escape::Json),
            ("u={{user}}", Escape::Url),
            (r#""{{user}}""#, Escape::Url),
            ("", Escape::Url),
        ] {
            assert_eq!(body_escape(body), escape, "{body}");
        }
    }

    #[test]
    fn session_tokens_are_found_where_the_manifest_says() {
        let pointer = |p: &str| TokenSource::JsonPointer(p.to_string());
        let header = TokenSource::Header("X-Session".to_string());
        let cases: &[(&TokenSource, &str, Option<&str>)] = &[
            // The empty pointer is the whole body: a bare JSON string.
            (&pointer(""), r#""tok-123""#, Some("tok-123")),
            (&pointer(""), "42", Some("42")),
            (&pointer(""), r#"{"token":"t"}"#, None),
            (
                &pointer("/data/token"),
                r#"{"data":{"token":"t-1"}}"#,
                Some("t-1"),
            ),
            (
                &pointer("/data/token"),
                r#"{"data":{"token":7}}"#,
                Some("7"),
            ),
            (&pointer("/data/token"), r#"{"data":{"token":null}}"#, None),
            (&pointer("/list/0"), r#"{"list":["first"]}"#, Some("first")),
            // A pointer starts with `/` (RFC 6901).
            (&pointer("data/token"), r#"{"data":{"token":"t-1"}}"#, None),
            (&pointer(""), "tok-123", None),
            (&header, "", Some("from-header")),
        ];
        for (from, body, expected) in cases {
            let found = session_token(
                from,
                |name| (name == "X-Session").then_some("from-header"),
                body.as_bytes(),
            );
            assert_eq!(found.as_deref(), *expected, "{from:?} in {body}");
        }
        let missing = session_token(&TokenSource::Header("X-Other".into()), |_| None, b"");
        assert_eq!(missing, None);
    }

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let (verifier, challenge) = pkce_pair();
        assert!(verifier.len() >= 43);
        assert_eq!(
            challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
        );
        // RFC 7636 appendix B.
        let rfc = URL_SAFE_NO_PAD.encode(Sha256::digest(
            b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        ));
        assert_eq!(rfc, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn the_oauth_client_is_the_connection_s_or_else_the_operator_s() {
        let operator = VersionEnv {
            plain: map(&[(CLIENT_ID, "app-id")]),
            secret: map(&[(CLIENT_SECRET, "app-secret")]),
        };
        let own = credentials(
            code_grant(),
            &[("client_id", "own-id"), ("client_secret", "own-secret")],
            operator.clone(),
        );
        let client = own.oauth_client().unwrap();
        assert_eq!(
            (client.id, client.secret, client.operator),
            ("own-id", "own-secret", false)
        );

        let shared = credentials(code_grant(), &[("shop", "acme")], operator.clone());
        let client = shared.oauth_client().unwrap();
        assert_eq!(
            (client.id, client.secret, client.operator),
            ("app-id", "app-secret", true)
        );
        let allowed = [HostPattern::parse(
            "https://{shop}.shop.test",
            &[("shop".to_string(), Value::String("acme".into()))].into(),
        )
        .unwrap()];
        let url = shared
            .authorization_url(&allowed, "http://h/cb", "st", "ch")
            .unwrap();
        assert!(
            url.starts_with("https://acme.shop.test/authorize?")
                && url.contains("client_id=app-id")
                && url.contains("code_challenge_method=S256")
                && url.contains("scope=a+b")
                && url.contains("state=st"),
            "{url}"
        );
        // A client secret set as a plain variable (which the guest sees) is not used.
        let plain_secret = VersionEnv {
            plain: map(&[(CLIENT_ID, "app-id"), (CLIENT_SECRET, "app-secret")]),
            secret: BTreeMap::new(),
        };
        let message = match credentials(code_grant(), &[], plain_secret).oauth_client() {
            Err(SendError::Denied(m)) => m,
            other => panic!("{:?}", other.map(|c| c.id)),
        };
        assert!(message.contains("secret CLIENT_SECRET"), "{message}");
        let tampered = credentials(code_grant(), &[("shop", "x.evil.test/")], operator);
        assert!(
            tampered
                .authorization_url(&allowed, "http://h/cb", "st", "ch")
                .unwrap_err()
                .contains("`shop`")
        );
    }

    #[test]
    fn the_partner_key_needs_a_place_of_its_own() {
        let api_key = AuthScheme::ApiKey {
            placement: ApiKeyPlacement::Header,
            name: "X-Api-Key".into(),
            prefix: String::new(),
        };
        let env = |plain: &[(&str, &str)]| VersionEnv {
            plain: map(plain),
            secret: map(&[(PARTNER_KEY, "pk-123456")]),
        };
        let placed = credentials(
            api_key.clone(),
            &[],
            env(&[(PARTNER_KEY_NAME, "X-Partner")]),
        );
        assert_eq!(
            placed.partner_key_name().unwrap().as_deref(),
            Some("X-Partner")
        );
        assert_eq!(placed.host_owned_headers(), ["X-Api-Key", "X-Partner"]);
        for plain in [&[][..], &[(PARTNER_KEY_NAME, "x-api-key")][..]] {
            assert!(
                credentials(api_key.clone(), &[], env(plain))
                    .partner_key_name()
                    .is_err()
            );
        }
        let none = credentials(api_key, &[], VersionEnv::default());
        assert_eq!(none.partner_key_name().unwrap(), None);
    }

    #[test]
    fn the_scrubber_knows_the_basic_pair_and_held_tokens() {
        let mut basic = credentials(
            AuthScheme::Basic,
            &[("username", "ops"), ("password", "pw-123456")],
            VersionEnv::default(),
        );
        basic.secrets = vec!["pw-123456".into()];
        let pair = BASE64.encode("ops:pw-123456");
        let scrubber = basic.scrubber().unwrap();
        assert_eq!(
            scrubber.text(&format!("Basic {pair} / pw-123456")),
            "Basic ******** / ********"
        );
        basic.remember(&AuthState {
            session_token: Some("sess-abcdef".into()),
            ..AuthState::default()
        });
        assert_eq!(
            basic.scrubber().unwrap().text("t=sess-abcdef"),
            "t=********"
        );
        let nothing = credentials(AuthScheme::None, &[], VersionEnv::default());
        assert!(nothing.scrubber().is_none());
    }
}
