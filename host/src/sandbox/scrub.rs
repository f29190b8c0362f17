//! Cutting a connection's secrets out of what a plugin reads. A server that
//! reflects its request (an echo endpoint, an error page quoting the headers)
//! would otherwise hand the credential the host injected back to the guest;
//! every response is scrubbed before the guest or the journal sees it.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use aho_corasick::{AhoCorasick, MatchKind};

use super::http::OutboundResponse;

/// What a scrubbed value is replaced with.
pub const MASK: &str = "********";

/// Shorter values are left alone: they would match ordinary text (a
/// four-digit PIN in every date) and corrupt responses for little gain.
pub const MIN_SCRUBBED_LEN: usize = 6;

/// One pass over a response that replaces every form of the secrets a
/// server could echo.
pub struct Scrubber {
    patterns: AhoCorasick,
}

impl Scrubber {
    /// A scrubber for `secrets` as sent, URL-encoded (`+` or `%20` for a
    /// space) and JSON-escaped, and for `exact` values taken as they are
    /// (e.g. the base64 of a Basic pair). `None` when there is nothing long
    /// enough to scrub, so a connection without secrets costs nothing.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a str>,
        exact: impl IntoIterator<Item = String>,
    ) -> Option<Scrubber> {
        let mut forms: Vec<String> = exact
            .into_iter()
            .filter(|v| v.len() >= MIN_SCRUBBED_LEN)
            .collect();
        for secret in secrets.into_iter().filter(|s| s.len() >= MIN_SCRUBBED_LEN) {
            let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let json = serde_json::to_string(secret).expect("strings serialise");
            forms.push(form.replace('+', "%20"));
            forms.push(form);
            forms.push(json[1..json.len() - 1].to_string());
            forms.push(secret.to_string());
        }
        forms.sort();
        forms.dedup();
        if forms.is_empty() {
            return None;
        }
        Some(Scrubber {
            patterns: automaton(forms),
        })
    }

    /// `bytes` with every match replaced, or `None` if nothing matched
    /// (then nothing was copied).
    fn replace(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut matches = self.patterns.find_iter(bytes).peekable();
        matches.peek()?;
        let mut out = Vec::with_capacity(bytes.len());
        let mut copied = 0;
        for m in matches {
            out.extend_from_slice(&bytes[copied..m.start()]);
            out.extend_from_slice(MASK.as_bytes());
            copied = m.end();
        }
        out.extend_from_slice(&bytes[copied..]);
        Some(out)
    }

    pub fn text(&self, text: &str) -> String {
        match self.replace(text.as_bytes()) {
            // Patterns and the mask are whole UTF-8 strings, so replacing
            // them in UTF-8 text leaves UTF-8 text.
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => text.to_string(),
        }
    }

    /// Scrubs header values and the body; a `Content-Length` is corrected
    /// to the body the guest gets.
    pub fn response(&self, mut response: OutboundResponse) -> OutboundResponse {
        for (_, value) in &mut response.headers {
            if let Some(bytes) = self.replace(value.as_bytes()) {
                *value = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        if let Some(body) = self.replace(&response.body) {
            response.body = body;
            for (name, value) in &mut response.headers {
                if name.eq_ignore_ascii_case("content-length") {
                    *value = response.body.len().to_string();
                }
            }
        }
        response
    }
}

/// How many automatons [`automaton`] keeps; past that it starts over.
const KEPT_AUTOMATONS: usize = 256;

/// The automaton matching `forms`, built once for each set of forms: a
/// connection's secrets change seldom, but every outbound request of every
/// call is scrubbed, and building the automaton cost more than the rest of
/// the scrubbing (about 1% of an end-to-end run's CPU in the load
/// benchmark). The forms stay in memory as long as their automaton, which
/// holds them anyway.
fn automaton(forms: Vec<String>) -> AhoCorasick {
    static BUILT: LazyLock<Mutex<HashMap<Vec<String>, AhoCorasick>>> =
        LazyLock::new(Mutex::default);
    if let Some(found) = BUILT.lock().unwrap_or_else(|e| e.into_inner()).get(&forms) {
        return found.clone(); // an `Arc` inside
    }
    // Leftmost-longest: a secret inside a longer form is cut as a whole.
    let built = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&forms)
        .expect("a few literal patterns always build");
    let mut kept = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= KEPT_AUTOMATONS {
        kept.clear();
    }
    kept.insert(forms, built.clone());
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_echoed_form_is_masked() {
        let secret = r#"s3cr/t+k"y &z"#;
        let scrubber = Scrubber::new([secret, "short"], ["YWxpY2U6czNjci90".to_string()]).unwrap();
        let table = [
            // what a server echoed, what the guest reads
            (format!("token={secret}."), "token=********."),
            ("key=s3cr%2Ft%2Bk%22y+%26z".into(), "key=********"),
            ("key=s3cr%2Ft%2Bk%22y%20%26z".into(), "key=********"),
            (
                r#"{"key":"s3cr/t+k\"y &z"}"#.into(),
                r#"{"key":"********"}"#,
            ),
            ("Basic YWxpY2U6czNjci90".into(), "Basic ********"),
            (format!("{secret}{secret}"), "****************"),
            // Too short to scrub, and the unrelated rest of a body.
            ("short s3cr/t+k".into(), "short s3cr/t+k"),
        ];
        for (echoed, expected) in table {
            assert_eq!(scrubber.text(&echoed), expected, "{echoed}");
        }
    }

    #[test]
    fn headers_body_and_length_are_scrubbed_and_clean_responses_untouched() {
        let scrubber = Scrubber::new(["tok_9f8e7d6c"], []).unwrap();
        let response = OutboundResponse {
            status: 200,
            headers: vec![
                ("x-echo-authorization".into(), "Bearer tok_9f8e7d6c".into()),
                ("content-length".into(), "25".into()),
            ],
            body: br#"{"auth":"tok_9f8e7d6c"}"#.to_vec(),
        };
        let scrubbed = scrubber.response(response);
        assert_eq!(scrubbed.headers[0].1, "Bearer ********");
        assert_eq!(scrubbed.body, br#"{"auth":"********"}"#);
        assert_eq!(scrubbed.headers[1].1, scrubbed.body.len().to_string());
        assert_eq!(scrubber.replace(b"nothing secret here"), None);
        assert!(Scrubber::new(["tiny"], ["abc".to_string()]).is_none());
    }

    #[test]
    fn a_reused_automaton_masks_only_the_secrets_it_was_built_for() {
        let text = "a=first-secret b=second-secret";
        for _ in 0..2 {
            let first = Scrubber::new(["first-secret"], []).unwrap();
            let second = Scrubber::new(["second-secret"], []).unwrap();
            assert_eq!(first.text(text), "a=******** b=second-secret");
            assert_eq!(second.text(text), "a=first-secret b=********");
        }
    }
}
