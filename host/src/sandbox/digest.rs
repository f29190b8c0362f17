//! HTTP Digest authentication (RFC 7616) as pure functions: picking the best
//! challenge out of a 401's `WWW-Authenticate` headers and computing the
//! `Authorization` header that answers it. No I/O, so the sandbox decides when
//! to use it and the tables below can pin it to the RFC's worked examples.

use md5::Md5;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

/// The hash (and whether it is a session variant, §3.4.2) a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn from_token(token: &str) -> Option<Algorithm> {
        const NAMES: [(&str, Algorithm); 4] = [
            ("MD5", Algorithm::Md5),
            ("MD5-sess", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(token))
            .map(|(_, algorithm)| *algorithm)
    }

    fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// RFC 7616 §3.7: a client picks the strongest hash it supports.
    fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 0,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 1,
        }
    }

    fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 | Algorithm::Sha256Sess => {
                hex::encode(Sha256::digest(data.as_bytes()))
            }
        }
    }
}

/// A Digest challenge the host can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `qop=auth` was offered; `false` is the RFC 2069 form without qop.
    pub qop_auth: bool,
    /// The server rejected the nonce, not the credentials.
    pub stale: bool,
    /// The server wants the username sent hashed (§3.4.4).
    pub userhash: bool,
    pub charset_utf8: bool,
}

/// The best Digest challenge among all `WWW-Authenticate` values of a
/// response, or `None` when there is none the host can answer.
pub fn parse_challenges(www_authenticate: &[&str]) -> Option<Challenge> {
    let mut best: Option<Challenge> = None;
    for raw in www_authenticate
        .iter()
        .flat_map(|value| split_challenges(value))
    {
        if !raw.scheme.eq_ignore_ascii_case("Digest") {
            continue;
        }
        let Some(candidate) = digest_challenge(&raw.params) else {
            continue;
        };
        // Ties keep the server's order: it lists what it prefers first.
        if best.as_ref().is_none_or(|b| rank(&candidate) > rank(b)) {
            best = Some(candidate);
        }
    }
    best
}

fn rank(challenge: &Challenge) -> (u8, bool) {
    (challenge.algorithm.strength(), challenge.qop_auth)
}

fn digest_challenge(params: &[(String, String)]) -> Option<Challenge> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let flag = |name: &str| param(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let algorithm = match param("algorithm") {
        Some(token) => Algorithm::from_token(token)?,
        None => Algorithm::Md5,
    };
    let qop_auth = match param("qop") {
        Some(list) => {
            // Only `auth`: `auth-int` would need the body hashed, which the
            // sandbox does not do; a challenge offering nothing else is
            // unanswerable.
            if !list
                .split(',')
                .any(|q| q.trim().eq_ignore_ascii_case("auth"))
            {
                return None;
            }
            true
        }
        None => false,
    };
    // A session hash needs a cnonce, and a cnonce is only sent with a qop
    // (RFC 2617 §3.2.2), so this combination cannot be answered coherently.
    if algorithm.is_session() && !qop_auth {
        return None;
    }
    Some(Challenge {
        realm: param("realm")?.to_string(),
        nonce: param("nonce")?.to_string(),
        opaque: param("opaque").map(str::to_string),
        algorithm,
        qop_auth,
        stale: flag("stale"),
        userhash: flag("userhash"),
        charset_utf8: param("charset").is_some_and(|v| v.eq_ignore_ascii_case("UTF-8")),
    })
}

/// The `Authorization` header value answering `challenge` for one request.
/// `uri` is the request-target (path and query), exactly as sent; `nc` counts
/// the requests made with this challenge's nonce, starting at 1.
///
/// Strings are hashed as UTF-8 whether or not the server declared
/// `charset=UTF-8`: RFC 7616 leaves other encodings to the server's
/// discretion, and UTF-8 is what every current implementation uses.
pub fn authorization(
    challenge: &Challenge,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let algorithm = challenge.algorithm;
    let nc = format!("{nc:08x}");
    let mut ha1 = algorithm.hex(&format!("{username}:{}:{password}", challenge.realm));
    if algorithm.is_session() {
        ha1 = algorithm.hex(&format!("{ha1}:{}:{cnonce}", challenge.nonce));
    }
    let ha2 = algorithm.hex(&format!("{method}:{uri}"));
    let response = if challenge.qop_auth {
        algorithm.hex(&format!(
            "{ha1}:{}:{nc}:{cnonce}:auth:{ha2}",
            challenge.nonce
        ))
    } else {
        algorithm.hex(&format!("{ha1}:{}:{ha2}", challenge.nonce))
    };

    let mut header = String::from("Digest ");
    if challenge.userhash {
        let hashed = algorithm.hex(&format!("{username}:{}", challenge.realm));
        header.push_str(&format!("username={}", quoted(&hashed)));
    } else if needs_extended(username) {
        // A quoted-string cannot carry these portably; §3.4 prescribes the
        // RFC 5987 form instead.
        header.push_str(&format!("username*=UTF-8''{}", percent_encode(username)));
    } else {
        header.push_str(&format!("username={}", quoted(username)));
    }
    header.push_str(&format!(
        ", realm={}, uri={}, algorithm={}, nonce={}",
        quoted(&challenge.realm),
        quoted(uri),
        algorithm.token(),
        quoted(&challenge.nonce),
    ));
    if challenge.qop_auth {
        header.push_str(&format!(", nc={nc}, cnonce={}, qop=auth", quoted(cnonce)));
    }
    header.push_str(&format!(", response={}", quoted(&response)));
    if let Some(opaque) = &challenge.opaque {
        header.push_str(&format!(", opaque={}", quoted(opaque)));
    }
    if challenge.userhash {
        header.push_str(", userhash=true");
    }
    header
}

/// A fresh client nonce: 16 random bytes, hex-encoded.
pub fn new_cnonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn needs_extended(value: &str) -> bool {
    value.chars().any(|c| !c.is_ascii() || c.is_ascii_control())
}

/// RFC 5987 `value-chars`: everything but `attr-char` percent-encoded.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One challenge as written: its scheme and its `name=value` parameters
/// (quoted values unescaped; a token68 is dropped, Digest never uses one).
struct RawChallenge {
    scheme: String,
    params: Vec<(String, String)>,
}

/// Splits one header value into challenges (RFC 9110 §11.6.1). A comma
/// separates both challenges and parameters, so an element is a new
/// challenge exactly when it does not have the shape `name = value`.
fn split_challenges(value: &str) -> Vec<RawChallenge> {
    let mut cursor = Cursor {
        bytes: value.as_bytes(),
        at: 0,
    };
    let mut challenges: Vec<RawChallenge> = Vec::new();
    loop {
        cursor.skip_while(|b| b == b',' || is_ws(b));
        if cursor.done() {
            break;
        }
        if let Some(param) = cursor.param() {
            // A parameter before any scheme belongs to nothing.
            if let Some(current) = challenges.last_mut() {
                current.params.push(param);
            }
            continue;
        }
        let scheme = cursor.token();
        if scheme.is_empty() {
            cursor.skip_element();
            continue;
        }
        challenges.push(RawChallenge {
            scheme,
            params: Vec::new(),
        });
        cursor.skip_while(is_ws);
        if let Some(param) = cursor.param() {
            if let Some(current) = challenges.last_mut() {
                current.params.push(param);
            }
            continue;
        }
        // Whatever else follows the scheme (a token68, or garbage) is not
        // something Digest needs.
        cursor.skip_element();
    }
    challenges
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_while(&mut self, keep: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> String {
        let start = self.at;
        self.skip_while(is_tchar);
        // tchars are ASCII, so this slice is valid UTF-8.
        String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned()
    }

    /// `name BWS "=" BWS ( token / quoted-string )`, or nothing consumed.
    fn param(&mut self) -> Option<(String, String)> {
        let start = self.at;
        let parsed = self.param_inner();
        if parsed.is_none() {
            self.at = start;
        }
        parsed
    }

    fn param_inner(&mut self) -> Option<(String, String)> {
        let name = self.token();
        if name.is_empty() {
            return None;
        }
        self.skip_while(is_ws);
        if self.peek() != Some(b'=') {
            return None;
        }
        self.at += 1;
        self.skip_while(is_ws);
        let value = if self.peek() == Some(b'"') {
            self.quoted_string()?
        } else {
            let token = self.token();
            if token.is_empty() {
                return None;
            }
            token
        };
        Some((name, value))
    }

    fn quoted_string(&mut self) -> Option<String> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.at += 1;
                    out.push(self.peek()?);
                    self.at += 1;
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }

    /// Moves past the current element to the next comma outside quotes.
    fn skip_element(&mut self) {
        let mut in_quotes = false;
        while let Some(b) = self.peek() {
            match b {
                b',' if !in_quotes => return,
                b'"' => in_quotes = !in_quotes,
                b'\\' if in_quotes => self.at += 1,
                _ => {}
            }
            self.at += 1;
        }
    }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn rfc_challenge(algorithm: Algorithm) -> Challenge {
        Challenge {
            realm: "http-auth@example.org".into(),
            nonce: RFC_NONCE.into(),
            opaque: Some(RFC_OPAQUE.into()),
            algorithm,
            qop_auth: true,
            stale: false,
            userhash: false,
            charset_utf8: false,
        }
    }

    /// A parameter of the first challenge-shaped element of `header`.
    fn param(header: &str, name: &str) -> Option<String> {
        let raw = split_challenges(header);
        let (_, value) = raw.first()?.params.iter().find(|(n, _)| n == name)?;
        Some(value.clone())
    }

    #[test]
    fn responses_match_independently_computed_vectors() {
        // (algorithm, qop, expected response). The first two are RFC 7616
        // §3.9.1; the others were computed with Python's hashlib from the
        // same inputs, following §3.4.1 and §3.4.2 (and RFC 2069 for no qop).
        let cases = [
            (Algorithm::Md5, true, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                true,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
            (Algorithm::Md5Sess, true, "e783283f46242139c486a698fec7211d"),
            (
                Algorithm::Sha256Sess,
                true,
                "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7",
            ),
            (Algorithm::Md5, false, "7b2cc3b30e75b4777ea31027084363fd"),
        ];
        for (algorithm, qop_auth, expected) in cases {
            let mut challenge = rfc_challenge(algorithm);
            challenge.qop_auth = qop_auth;
            let header = authorization(
                &challenge,
                "GET",
                "/dir/index.html",
                "Mufasa",
                "Circle of Life",
                1,
                RFC_CNONCE,
            );
            assert_eq!(
                param(&header, "response").as_deref(),
                Some(expected),
                "{algorithm:?} qop={qop_auth}: {header}"
            );
        }
    }

    #[test]
    fn the_header_has_every_field_in_rfc_form() {
        let header = authorization(
            &rfc_challenge(Algorithm::Sha256),
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            1,
            RFC_CNONCE,
        );
        assert_eq!(
            header,
            format!(
                "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
                 uri=\"/dir/index.html\", algorithm=SHA-256, nonce=\"{RFC_NONCE}\", \
                 nc=00000001, cnonce=\"{RFC_CNONCE}\", qop=auth, \
                 response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
                 opaque=\"{RFC_OPAQUE}\""
            )
        );

        let mut bare = rfc_challenge(Algorithm::Md5);
        bare.qop_auth = false;
        bare.opaque = None;
        let header = authorization(&bare, "GET", "/a?b=c", "u", "p", 7, "ignored");
        assert!(!header.contains("nc="), "{header}");
        assert!(!header.contains("cnonce="), "{header}");
        assert!(!header.contains("qop="), "{header}");
        assert!(!header.contains("opaque="), "{header}");
        assert!(header.contains("uri=\"/a?b=c\""), "{header}");
    }

    #[test]
    fn nc_is_eight_hex_digits() {
        for (nc, expected) in [(1, "00000001"), (2, "00000002"), (255, "000000ff")] {
            let header = authorization(
                &rfc_challenge(Algorithm::Md5),
                "GET",
                "/",
                "u",
                "p",
                nc,
                "c",
            );
            assert!(header.contains(&format!("nc={expected},")), "{header}");
        }
    }

    #[test]
    fn userhash_sends_the_hashed_username_and_hashes_the_plain_one() {
        // RFC 7616 §3.9.2 with SHA-256 in place of SHA-512-256 (which the
        // host does not offer; the RFC's own values there are SHA-512
        // truncated, a known erratum). Expected values from Python's hashlib:
        // sha256("Jäsøn Doe:api@example.org".encode()).hexdigest(), and the
        // §3.4.1 response over the plain username.
        let challenge = Challenge {
            realm: "api@example.org".into(),
            nonce: "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK".into(),
            opaque: Some("HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS".into()),
            algorithm: Algorithm::Sha256,
            qop_auth: true,
            stale: false,
            userhash: true,
            charset_utf8: true,
        };
        let header = authorization(
            &challenge,
            "GET",
            "/doe.json",
            "Jäsøn Doe",
            "Secret, or not?",
            1,
            "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
        );
        assert_eq!(
            param(&header, "username").as_deref(),
            Some("5a1a8a47df5c298551b9b42ba9b05835174a5bd7d511ff7fe9191d8e946fc4e7"),
            "{header}"
        );
        assert!(header.ends_with(", userhash=true"), "{header}");
        assert!(!header.contains("Jäsøn"), "{header}");
        // The response still hashes the plain username (§3.4.4).
        assert_eq!(
            param(&header, "response").as_deref(),
            Some("b6d5cb9c3000ea2385250005e294d7132b260b8fd08940d2377373493cee8cc4"),
            "{header}"
        );
    }

    #[test]
    fn usernames_that_a_quoted_string_cannot_carry() {
        let challenge = rfc_challenge(Algorithm::Md5);
        let cases = [
            ("Mufasa", "username=\"Mufasa\""),
            ("a\"b\\c", "username=\"a\\\"b\\\\c\""),
            ("Jäsøn Doe", "username*=UTF-8''J%C3%A4s%C3%B8n%20Doe"),
            ("evil\r\nX: y", "username*=UTF-8''evil%0D%0AX%3A%20y"),
        ];
        for (username, expected) in cases {
            let header = authorization(&challenge, "GET", "/", username, "p", 1, "c");
            assert!(
                header.starts_with(&format!("Digest {expected}, realm=")),
                "{username:?}: {header}"
            );
        }
    }

    #[test]
    fn quoted_values_are_escaped_and_round_trip() {
        let mut challenge = rfc_challenge(Algorithm::Md5);
        challenge.realm = r#"a "quoted", \realm\"#.into();
        challenge.opaque = Some("o\"p".into());
        let header = authorization(&challenge, "GET", "/x", "u", "p", 1, "c");
        assert!(
            header.contains(r#"realm="a \"quoted\", \\realm\\""#),
            "{header}"
        );
        let raw = split_challenges(&header);
        assert_eq!(raw.len(), 1, "{header}");
        let get = |name: &str| {
            raw[0]
                .params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("realm").as_deref(), Some(challenge.realm.as_str()));
        assert_eq!(get("opaque").as_deref(), Some("o\"p"));
    }

    #[test]
    fn cnonces_are_fresh_hex() {
        let a = new_cnonce();
        let b = new_cnonce();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    fn md5(realm: &str, nonce: &str) -> Challenge {
        Challenge {
            realm: realm.into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm: Algorithm::Md5,
            qop_auth: true,
            stale: false,
            userhash: false,
            charset_utf8: false,
        }
    }

    #[test]
    fn parsing_picks_the_best_answerable_challenge() {
        let rfc_sha = Challenge {
            opaque: Some(RFC_OPAQUE.into()),
            algorithm: Algorithm::Sha256,
            ..md5("http-auth@example.org", RFC_NONCE)
        };
        let rfc_md5 = Challenge {
            opaque: Some(RFC_OPAQUE.into()),
            ..md5("http-auth@example.org", RFC_NONCE)
        };
        let cases: Vec<(&str, Vec<&str>, Option<Challenge>)> = vec![
            (
                "RFC 7616 §3.9.1: SHA-256 preferred over MD5, across headers",
                vec![
                    r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
                    r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
                ],
                Some(rfc_sha.clone()),
            ),
            (
                "SHA-256 preferred even when offered second in one header",
                vec![
                    r#"Digest realm="http-auth@example.org", qop="auth", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", Digest realm="http-auth@example.org", qop="auth", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
                ],
                Some(rfc_sha),
            ),
            (
                "MD5 alone",
                vec![
                    r#"Digest realm="http-auth@example.org", qop="auth", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
                ],
                Some(rfc_md5),
            ),
            (
                "Basic and Digest mixed in one header, quoted commas",
                vec![r#"Basic realm="a, b", Digest realm="x, y", nonce="n,1", qop="auth""#],
                Some(md5("x, y", "n,1")),
            ),
            (
                "Basic in one header, Digest in another",
                vec![
                    r#"Basic realm="r""#,
                    r#"Digest nonce="n", realm="r", qop=auth"#,
                ],
                Some(md5("r", "n")),
            ),
            (
                "token68 scheme before Digest",
                vec![r#"Negotiate YII=, Digest realm="r", nonce="n", qop="auth""#],
                Some(md5("r", "n")),
            ),
            (
                "algorithm and parameter names case-insensitive; escapes in quotes",
                vec![r#"digest REALM="a\"b", Nonce="n", ALGORITHM=sha-256-SESS, qop="AUTH""#],
                Some(Challenge {
                    algorithm: Algorithm::Sha256Sess,
                    ..md5("a\"b", "n")
                }),
            ),
            (
                "no algorithm means MD5; no qop is RFC 2069",
                vec![r#"Digest realm="r", nonce="n""#],
                Some(Challenge {
                    qop_auth: false,
                    ..md5("r", "n")
                }),
            ),
            (
                "stale, userhash, charset",
                vec![
                    r#"Digest realm="r", nonce="n", qop="auth", stale=TRUE, userhash=true, charset=UTF-8"#,
                ],
                Some(Challenge {
                    stale: true,
                    userhash: true,
                    charset_utf8: true,
                    ..md5("r", "n")
                }),
            ),
            (
                "stale=false",
                vec![r#"Digest realm="r", nonce="n", qop="auth", stale=false"#],
                Some(md5("r", "n")),
            ),
            (
                "unknown algorithm skipped for the next challenge",
                vec![
                    r#"Digest realm="r", nonce="a", algorithm=SHA-512-256, qop="auth", Digest realm="r", nonce="b", algorithm=MD5, qop="auth""#,
                ],
                Some(md5("r", "b")),
            ),
            (
                "a challenge with qop preferred over one without",
                vec![
                    r#"Digest realm="r", nonce="a""#,
                    r#"Digest realm="r", nonce="b", qop="auth""#,
                ],
                Some(md5("r", "b")),
            ),
            (
                "only unknown algorithms",
                vec![r#"Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth""#],
                None,
            ),
            (
                "auth-int only",
                vec![r#"Digest realm="r", nonce="n", qop="auth-int""#],
                None,
            ),
            (
                "session hash without qop",
                vec![r#"Digest realm="r", nonce="n", algorithm=MD5-sess"#],
                None,
            ),
            (
                "missing nonce",
                vec![r#"Digest realm="r", qop="auth""#],
                None,
            ),
            (
                "missing realm",
                vec![r#"Digest nonce="n", qop="auth""#],
                None,
            ),
            (
                "Basic only",
                vec![r#"Basic realm="Digest realm=\"r\", nonce=\"n\"""#],
                None,
            ),
            ("nothing", vec![], None),
            (
                "garbage",
                vec![
                    r#"Digest realm="unterminated, nonce="n"#,
                    ",,, =, \"",
                    "Digest",
                ],
                None,
            ),
        ];
        for (name, headers, expected) in cases {
            assert_eq!(parse_challenges(&headers), expected, "{name}");
        }
    }
}
