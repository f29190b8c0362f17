//! AWS Signature Version 4, done by the host with AWS's own signer (the
//! `aws-sigv4` crate): the connection's access key id and secret key (and
//! session token) never reach the plugin, which only builds the request.
//! S3 (and the S3-compatible stores) sign the path as sent, without
//! normalising or encoding it twice, and want the payload's SHA-256 in
//! `x-amz-content-sha256`; other services take the defaults.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    },
    sign::v4,
};
use aws_smithy_runtime_api::client::identity::Identity;

/// Headers the host sets for this scheme; a guest's are dropped.
pub const OWNED_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

/// The guest headers that take part in the signature (the rest may be
/// changed on the way by the HTTP client, which would break it).
fn signed(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("x-amz-")
        || matches!(
            name.as_str(),
            "content-type" | "content-md5" | "range" | "if-match" | "if-none-match"
        )
}

/// Who signs, for what.
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
}

impl Signer<'_> {
    /// The headers to add to a request (`Authorization`, `X-Amz-Date`, and
    /// for S3 `X-Amz-Content-Sha256`), signed at `time`.
    pub fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        let identity: Identity = Credentials::new(
            self.access_key_id,
            self.secret_access_key,
            self.session_token.map(str::to_string),
            None,
            "switchyard-connection",
        )
        .into();
        let mut settings = SigningSettings::default();
        if self.service == "s3" {
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| format!("aws-sigv4: {e}"))?
            .into();
        let kept: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(n, _)| signed(n))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request =
            SignableRequest::new(method, url, kept.into_iter(), SignableBody::Bytes(body))
                .map_err(|e| format!("aws-sigv4: the request cannot be signed: {e}"))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| format!("aws-sigv4: {e}"))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// AWS's published example for S3 (GET Object with a Range header):
    /// the documentation's credentials, time and expected signature.
    #[test]
    fn signs_the_documented_s3_example() {
        let signer = Signer {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            service: "s3",
        };
        // 20130524T000000Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let headers = signer
            .headers(
                "GET",
                "https://examplebucket.s3.amazonaws.com/test.txt",
                &[("Range".into(), "bytes=0-9".into())],
                b"",
                time,
            )
            .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20130524T000000Z"));
        assert_eq!(
            get("x-amz-content-sha256"),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            )
        );
    }

    #[test]
    fn a_session_token_is_sent_and_other_headers_are_not_signed() {
        let signer = Signer {
            access_key_id: "AKID",
            secret_access_key: "secret",
            session_token: Some("token-1"),
            region: "eu-west-1",
            service: "s3",
        };
        let headers = signer
            .headers(
                "PUT",
                "http://127.0.0.1:9000/bucket/a%20b.csv",
                &[
                    ("Content-Type".into(), "text/csv".into()),
                    ("User-Agent".into(), "whatever".into()),
                ],
                b"a,b\n",
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            )
            .unwrap();
        let auth = &headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .unwrap()
            .1;
        assert!(auth.contains("/eu-west-1/s3/aws4_request"), "{auth}");
        assert!(auth.contains("content-type"), "{auth}");
        assert!(!auth.contains("user-agent"), "{auth}");
        assert!(
            headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("x-amz-security-token") && v == "token-1")
        );
    }
}
