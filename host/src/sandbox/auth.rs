//! Credentials the host adds to a connection's requests: Basic, API key,
//! bearer, OAuth 2.0 (client credentials, authorization code with PKCE,
//! refresh), session login and Digest. Tokens the host obtains are kept in
//! memory per connection and handed to a persistence hook (sealed at rest);
//! none of it ever reaches the guest.

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
    digest,
    http::{Exchange, HttpSandbox, OutboundRequest, OutboundResponse, Prepared, SendError},
    policy::HostPattern,
};
use crate::manifest::{ApiKeyPlacement, AuthScheme, OAuth2Grant, TokenSource};

/// Tokens are refreshed this long before they expire.
const REFRESH_MARGIN_SECS: u64 = 60;

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

    /// Drops what is cached for a connection (its credentials changed).
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
    /// Secret values, to cut out of anything recorded.
    pub secrets: Vec<String>,
    /// The auth state stored with the connection, used until one is cached.
    pub stored: Option<AuthState>,
    pub states: Arc<AuthStates>,
    pub persist: Option<PersistState>,
}

fn value<'a>(values: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, SendError> {
    values.get(name).map(String::as_str).ok_or_else(|| {
        SendError::Denied(format!(
            "the connection has no `{name}` for its auth scheme"
        ))
    })
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
            } => vec![name.clone()],
            AuthScheme::Session { header_name, .. } => vec![header_name.clone()],
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
        guard
    }

    fn save(&self, state: &AuthState) {
        if let Some(persist) = &self.persist {
            persist(&self.connection_id, state);
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
                    ApiKeyPlacement::Query => {
                        let kept: Vec<(String, String)> = request
                            .url
                            .query_pairs()
                            .filter(|(k, _)| k != name.as_str())
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect();
                        let mut pairs = request.url.query_pairs_mut();
                        pairs.clear();
                        for (k, v) in kept {
                            pairs.append_pair(&k, &v);
                        }
                        pairs.append_pair(name, key);
                    }
                }
            }
            AuthScheme::Oauth2 { .. } => {
                let mut auth = self.lock().await;
                let fresh = auth.state.access_token.is_some()
                    && auth
                        .state
                        .expires_at
                        .is_none_or(|at| at > now_secs() + REFRESH_MARGIN_SECS);
                if !fresh {
                    self.obtain_token(sandbox, &mut auth, deadline, exchanges)
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
                    auth.state.access_token = None;
                    self.obtain_token(sandbox, &mut auth, deadline, exchanges)
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
        auth: &mut ConnectionAuth,
        deadline: Instant,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<(), SendError> {
        let AuthScheme::Oauth2 {
            grant,
            token_url,
            scopes,
            ..
        } = &self.scheme
        else {
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
        let token_url = fill_url(token_url, &self.values);
        let mut state = token_request(
            sandbox,
            &token_url,
            &self.values,
            &form,
            deadline,
            exchanges,
        )
        .await?;
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
        let url = fill(login_url, &self.values, Escape::None);
        let body = login_body.as_deref().map(|b| {
            let escape = if b.trim_start().starts_with(['{', '[']) {
                Escape::Json
            } else {
                Escape::Url
            };
            fill(b, &self.values, escape)
        });
        let request = OutboundRequest {
            method: login_method.clone(),
            url,
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
            return Err(SendError::Denied(format!(
                "session login failed with HTTP {}: {}",
                response.status,
                snippet(&response.body)
            )));
        }
        let token = match token_from {
            TokenSource::Header(name) => response.header(name).map(str::to_string),
            TokenSource::JsonPointer(pointer) => serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|v| v.pointer(pointer).cloned())
                .and_then(|v| match v {
                    Value::String(s) => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
        };
        let Some(token) = token else {
            return Err(SendError::Denied(format!(
                "session login answered {} but the token was not at {token_from:?}",
                response.status
            )));
        };
        auth.state.session_token = Some(token);
        self.save(&auth.state);
        Ok(())
    }
}

/// The value a request was sent with for `name`.
fn sent<'a>(request: &'a Prepared, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Clone, Copy)]
enum Escape {
    None,
    Url,
    Json,
}

/// Fills `{{name}}` placeholders of a manifest URL (token, authorize, login)
/// with connection properties, e.g. `https://{{shop}}.myshopify.com/admin/oauth/access_token`.
pub fn fill_url(template: &str, values: &BTreeMap<String, String>) -> String {
    fill(template, values, Escape::None)
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

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// One request to an OAuth token endpoint, with the client authenticated by
/// HTTP Basic (RFC 6749 §2.3.1).
async fn token_request(
    sandbox: &HttpSandbox,
    token_url: &str,
    values: &BTreeMap<String, String>,
    form: &[(&str, String)],
    deadline: Instant,
    exchanges: &mut Vec<Exchange>,
) -> Result<AuthState, SendError> {
    let client_id = value(values, "client_id")?;
    let client_secret = value(values, "client_secret")?;
    let url = url::Url::parse(token_url)
        .map_err(|e| SendError::InvalidRequest(format!("bad token URL `{token_url}`: {e}")))?;
    let origin = url.origin().ascii_serialization();
    let allowed = [HostPattern::parse(&origin, &BTreeMap::new())
        .map_err(|e| SendError::InvalidRequest(format!("token URL: {e}")))?];
    // The serializer is not `Send`: finish it before any await.
    let body = {
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            serializer.append_pair(k, v);
        }
        serializer.finish()
    };
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let request = OutboundRequest {
        method: "POST".into(),
        url: token_url.to_string(),
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
    let mut prepared = sandbox.check(&allowed, request)?;
    let basic = format!("{}:{}", encode(client_id), encode(client_secret));
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
        return Err(SendError::Denied(format!(
            "the OAuth token endpoint answered HTTP {}: {}",
            response.status,
            snippet(&response.body)
        )));
    }
    let token: TokenResponse = serde_json::from_slice(&response.body).map_err(|e| {
        SendError::Denied(format!(
            "the OAuth token endpoint's answer has no usable access_token: {e}"
        ))
    })?;
    Ok(AuthState {
        access_token: Some(token.access_token),
        refresh_token: token.refresh_token,
        expires_at: token.expires_in.map(|s| now_secs() + s),
        session_token: None,
    })
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
pub fn pkce_pair() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The URL to send a user to for the authorization code grant.
pub fn authorization_url(
    authorize_url: &str,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: &str,
    code_challenge: &str,
) -> Result<String, String> {
    let mut url = url::Url::parse(authorize_url)
        .map_err(|e| format!("bad authorize URL `{authorize_url}`: {e}"))?;
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

/// Exchanges an authorization code for tokens.
pub async fn exchange_code(
    sandbox: &HttpSandbox,
    token_url: &str,
    values: &BTreeMap<String, String>,
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
    let result = token_request(sandbox, token_url, values, &form, deadline, &mut exchanges).await;
    (result, exchanges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_for_their_place() {
        let values: BTreeMap<String, String> = [("user", "a\"b&c"), ("pw", "x y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            fill(r#"{"u":"{{user}}","p":"{{pw}}"}"#, &values, Escape::Json),
            r#"{"u":"a\"b&c","p":"x y"}"#
        );
        assert_eq!(
            fill("u={{user}}&p={{pw}}", &values, Escape::Url),
            "u=a%22b%26c&p=x+y"
        );
        assert_eq!(fill("{{missing}}", &values, Escape::None), "{{missing}}");
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
        let url = authorization_url(
            "https://auth.test/authorize",
            "cid",
            "http://h/cb",
            &["a".into(), "b".into()],
            "st",
            "ch",
        )
        .unwrap();
        assert!(
            url.contains("code_challenge_method=S256")
                && url.contains("scope=a+b")
                && url.contains("state=st")
        );
    }
}
