//! The allow/deny decision for every outbound request, as pure functions:
//! which hosts a plugin may reach (its manifest's allow-list, templated from
//! connection properties) and which addresses anyone may reach (no loopback,
//! private, link-local, metadata or otherwise special addresses unless the
//! operator allows a network).

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use url::Url;

/// Why a request was refused. The text is shown to connector authors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Denied {}

/// One entry of a plugin's allow-list after templating: a scheme, a host (or a
/// `*.` wildcard suffix) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: String,
    host: HostMatch,
    port: u16,
    /// The manifest writes (part of) the host itself, as in
    /// `{shop}.myshopify.com`, rather than taking all of it from a connection
    /// property, as `{base_url}` does. Only such hosts receive the operator's
    /// own credentials (see [`named_by_manifest`]).
    named: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`: any host with at least one label before `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    /// `scheme://host[:port]` of a pattern naming one host (not a wildcard):
    /// where a relative path of a custom API call goes.
    pub fn origin(&self) -> Option<String> {
        let HostMatch::Exact(host) = &self.host else {
            return None;
        };
        let default = matches!(
            (self.scheme.as_str(), self.port),
            ("https", 443) | ("http", 80)
        );
        Some(if default {
            format!("{}://{host}", self.scheme)
        } else {
            format!("{}://{host}:{}", self.scheme, self.port)
        })
    }

    /// Parses a manifest pattern, substituting `{name}` with connection
    /// properties. A pattern that is a single `{name}` takes the origin of the
    /// URL in that property (e.g. a `base_url`); elsewhere a property value must
    /// be host-name text (letters, digits, `-`, `.`), so it cannot smuggle in a
    /// different host.
    pub fn parse(
        pattern: &str,
        properties: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Self, String> {
        let whole = pattern
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .filter(|name| !name.contains(['{', '}']));
        let text = match whole {
            Some(name) => {
                let value = property_text(properties, name)?;
                let url = Url::parse(&value).map_err(|e| {
                    format!("property `{name}` (`{value}`) is not an absolute URL: {e}")
                })?;
                let host = url
                    .host_str()
                    .ok_or_else(|| format!("property `{name}` (`{value}`) has no host"))?;
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}://{host}{port}", url.scheme())
            }
            None => substitute(pattern, properties)?,
        };
        let mut parsed =
            Self::parse_literal(&text).map_err(|e| format!("allowed host `{pattern}`: {e}"))?;
        parsed.named = whole.is_none() && host_has_literal_text(pattern);
        Ok(parsed)
    }

    fn parse_literal(text: &str) -> Result<Self, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_string(), text),
        };
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            other => return Err(format!("scheme `{other}` is not http or https")),
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            // An IPv6 literal: `[addr]` or `[addr]:port`.
            let (addr, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("unclosed `[` in `{rest}`"))?;
            // Only an address can stand in brackets (anything else would be a
            // pattern that matches no URL and is shown as another one), kept
            // in the form URLs carry it in (`[fd00::1]` for `[FD00:0::1]`,
            // `[::ffff:a9fe:a9fe]` for `[::ffff:169.254.169.254]`).
            let addr = addr
                .parse::<Ipv6Addr>()
                .map_err(|_| format!("`[{addr}]` is not an IPv6 address"))?;
            let addr = url::Host::<String>::Ipv6(addr).to_string();
            let port = match after.strip_prefix(':') {
                Some(port) => port
                    .parse::<u16>()
                    .map_err(|_| format!("bad port `{port}`"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("unexpected `{after}` after `]`")),
            };
            (addr, port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => {
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| format!("bad port `{port}`"))?;
                    (host.to_string(), port)
                }
                None => (rest.to_string(), default_port),
            }
        };
        if host.contains('/') {
            return Err("a host pattern has no path".to_string());
        }
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(suffix) => {
                valid_host_text(suffix)?;
                HostMatch::Subdomains(suffix.to_string())
            }
            None => {
                if !host.starts_with('[') {
                    valid_host_text(&host)?;
                }
                HostMatch::Exact(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                )
            }
        };
        Ok(HostPattern {
            scheme,
            host,
            port,
            named: true,
        })
    }

    /// Whether two patterns let the same URLs through (whether the manifest
    /// named the host aside).
    pub fn same_reach(&self, other: &HostPattern) -> bool {
        (&self.scheme, &self.host, self.port) == (&other.scheme, &other.host, other.port)
    }

    fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        self.scheme == url.scheme()
            && Some(self.port) == url.port_or_known_default()
            && match &self.host {
                HostMatch::Exact(h) => h == host,
                HostMatch::Subdomains(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostMatch::Exact(h) if h.contains(':') => format!("[{h}]"),
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Subdomains(s) => format!("*.{s}"),
        };
        write!(f, "{}://{host}:{}", self.scheme, self.port)
    }
}

fn property_text(
    properties: &BTreeMap<String, serde_json::Value>,
    name: &str,
) -> Result<String, String> {
    match properties.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(format!("property `{name}` is not a string")),
        None => Err(format!("connection property `{name}` is not set")),
    }
}

fn substitute(
    pattern: &str,
    properties: &BTreeMap<String, serde_json::Value>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{pattern}`"))?;
        let name = &rest[start + 1..start + end];
        let value = property_text(properties, name)?;
        if value.is_empty()
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "property `{name}` (`{value}`) may hold only letters, digits, `-` and `.` where it is part of a host name"
            ));
        }
        out.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_host_text(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name"))
    }
}

/// Whether the host part of an allow-list pattern has text of its own
/// besides placeholders: `{shop}.myshopify.com` has, `{host}:8080` and
/// `*.{domain}` have not.
fn host_has_literal_text(pattern: &str) -> bool {
    let rest = pattern.split_once("://").map_or(pattern, |(_, rest)| rest);
    if rest.starts_with('[') {
        return true;
    }
    let host = rest.split(':').next().unwrap_or_default();
    let mut literal = String::new();
    let mut text = host;
    while let Some(start) = text.find('{') {
        literal.push_str(&text[..start]);
        text = text[start..].split_once('}').map_or("", |(_, after)| after);
    }
    literal.push_str(text);
    literal.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// Whether `url` is on a host the manifest names (not one a connection
/// property chose entirely): where the host may send what belongs to the
/// operator rather than to the tenant, such as an app's OAuth client secret.
pub fn named_by_manifest(url: &Url, allowed: &[HostPattern]) -> bool {
    allowed.iter().any(|p| p.named && p.matches(url))
}

/// Lists the `{name}` placeholders of a pattern (for manifest validation).
pub fn placeholders(pattern: &str) -> Vec<&str> {
    pattern
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
        .collect()
}

/// May a plugin whose allow-list is `allowed` send a request to `url`?
pub fn check_url(url: &Url, allowed: &[HostPattern]) -> Result<(), Denied> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Denied(format!(
            "scheme `{}` is not allowed; use http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Denied(
            "credentials in the URL are not allowed; the host adds them".to_string(),
        ));
    }
    if allowed.iter().any(|p| p.matches(url)) {
        return Ok(());
    }
    let list = allowed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Err(Denied(format!(
        "{}://{}:{} is not in this plugin's allowed hosts [{list}]",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0),
    )))
}

/// May anyone connect to `ip`? Special-purpose addresses are refused unless a
/// network in `operator_allowed` contains them.
pub fn check_ip(ip: IpAddr, operator_allowed: &[IpNet]) -> Result<(), Denied> {
    let embedded = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    if operator_allowed
        .iter()
        .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)))
    {
        return Ok(());
    }
    match forbidden_reason(ip) {
        Some(reason) => Err(Denied(format!(
            "address {ip} is {reason}; the operator has not allowed it"
        ))),
        None => Ok(()),
    }
}

fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return forbidden_v4(v4).map(|_| "an IPv4 special address in IPv6 form");
            }
            let seg0 = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("a cloud metadata address")
            } else if seg0 & 0xfe00 == 0xfc00 {
                Some("a unique local (private) address")
            } else if seg0 & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg0 & 0xff00 == 0xff00 {
                Some("multicast")
            } else if seg0 == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("a documentation address")
            } else if seg0 == 0x2001 && v6.segments()[1] == 0 {
                Some("a Teredo tunnel address")
            } else if seg0 == 0x0100 && v6.segments()[1..4] == [0, 0, 0] {
                Some("a discard-only address")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("a cloud metadata address")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("multicast, broadcast or reserved")
    } else if ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
    {
        Some("a documentation, benchmarking or protocol address")
    } else {
        None
    }
}

/// The IPv4 address inside v4-mapped (`::ffff:a.b.c.d`), v4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) forms.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        Some(v4)
    } else if (s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        Some(tail())
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(value: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn url_decisions() {
        let p = props(
            json!({"shop": "acme", "base_url": "http://127.0.0.1:8080/api", "evil": "evil.com/x"}),
        );
        let allowed: Vec<HostPattern> = [
            "{shop}.myshopify.com",
            "*.example.com",
            "{base_url}",
            "http://plain.test:8080",
            "http://[fd00::1]:8080",
        ]
        .iter()
        .map(|pat| HostPattern::parse(pat, &p).unwrap())
        .collect();
        let table = [
            (
                "https://acme.myshopify.com/admin/api/2024-01/orders.json",
                true,
            ),
            ("https://ACME.myshopify.com./x", true),
            ("http://acme.myshopify.com/", false),
            ("https://acme.myshopify.com:8443/", false),
            ("https://other.myshopify.com/", false),
            ("https://api.example.com/", true),
            ("https://a.b.example.com/", true),
            ("https://example.com/", false),
            ("https://badexample.com/", false),
            ("http://127.0.0.1:8080/items", true),
            ("http://127.0.0.1:8081/items", false),
            ("http://plain.test:8080/", true),
            ("http://plain.test/", false),
            ("http://[fd00::1]:8080/x", true),
            ("http://[fd00::1]/x", false),
            ("ftp://api.example.com/", false),
            ("https://user:pw@api.example.com/", false),
            ("https://api.example.com.evil.net/", false),
        ];
        for (url, ok) in table {
            let url = Url::parse(url).unwrap();
            assert_eq!(check_url(&url, &allowed).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn templates_cannot_change_the_host() {
        let p = props(json!({"evil": "evil.com/x", "empty": "", "obj": {}}));
        for pattern in [
            "{evil}.myshopify.com",
            "{empty}.myshopify.com",
            "{obj}.x.com",
            "{missing}.x.com",
            "{evil}",
        ] {
            assert!(HostPattern::parse(pattern, &p).is_err(), "{pattern}");
        }
        for literal in [
            "http://[fd  }1]:8080",
            "https://[]",
            "https://[example.com]",
        ] {
            assert!(HostPattern::parse(literal, &p).is_err(), "{literal}");
        }
        for (pattern, url) in [
            ("https://[FD00:0::1]:8443", "https://[fd00::1]:8443/x"),
            (
                "http://[::ffff:169.254.169.254]",
                "http://[::ffff:a9fe:a9fe]/x",
            ),
        ] {
            let written = HostPattern::parse(pattern, &p).unwrap();
            assert_eq!(
                check_url(&Url::parse(url).unwrap(), &[written]),
                Ok(()),
                "{pattern}"
            );
        }
        assert_eq!(
            placeholders("https://{shop}.x.com:{port}"),
            vec!["shop", "port"]
        );
    }

    #[test]
    fn which_hosts_the_manifest_names() {
        let p = props(json!({
            "shop": "acme", "host": "api.acme.test", "domain": "acme.test",
            "port": "8080", "base_url": "https://api.acme.test",
        }));
        let table = [
            ("{shop}.myshopify.com", "https://acme.myshopify.com/", true),
            ("https://api.example.com", "https://api.example.com/", true),
            ("*.example.com", "https://a.example.com/", true),
            ("http://127.0.0.2:{port}", "http://127.0.0.2:8080/", true),
            ("https://[fd00::1]", "https://[fd00::1]/", true),
            ("{base_url}", "https://api.acme.test/", false),
            ("https://{host}", "https://api.acme.test/", false),
            (
                "https://{host}:{port}",
                "https://api.acme.test:8080/",
                false,
            ),
            ("*.{domain}", "https://x.acme.test/", false),
        ];
        for (pattern, url, named) in table {
            let allowed = [HostPattern::parse(pattern, &p).unwrap()];
            let url = Url::parse(url).unwrap();
            assert!(check_url(&url, &allowed).is_ok(), "{pattern} allows {url}");
            assert_eq!(named_by_manifest(&url, &allowed), named, "{pattern}");
        }
    }

    #[test]
    fn address_decisions() {
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let table: &[(&str, bool, bool)] = &[
            // address, allowed by default, allowed with 127.0.0.1/32 allowed
            ("93.184.216.34", true, true),
            ("2606:2800:220:1:248:1893:25c8:1946", true, true),
            ("127.0.0.1", false, true),
            ("127.0.0.2", false, false),
            ("10.0.0.1", false, false),
            ("172.16.5.4", false, false),
            ("192.168.1.1", false, false),
            ("169.254.169.254", false, false),
            ("169.254.1.1", false, false),
            ("100.64.0.1", false, false),
            ("0.0.0.0", false, false),
            ("255.255.255.255", false, false),
            ("224.0.0.1", false, false),
            ("::1", false, false),
            ("::", false, false),
            ("fd00:ec2::254", false, false),
            ("fc00::1", false, false),
            ("fe80::1", false, false),
            ("ff02::1", false, false),
            ("::ffff:127.0.0.1", false, true),
            ("::ffff:10.0.0.1", false, false),
            ("::ffff:169.254.169.254", false, false),
            ("::127.0.0.1", false, true),
            ("64:ff9b::a00:1", false, false),
            ("2002:a00:1::", false, false),
            ("::ffff:93.184.216.34", true, true),
        ];
        for (ip, default_ok, allowed_ok) in table {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(check_ip(addr, &[]).is_ok(), *default_ok, "{ip} by default");
            assert_eq!(
                check_ip(addr, &allow).is_ok(),
                *allowed_ok,
                "{ip} with 127.0.0.1/32 allowed"
            );
        }
    }
}
