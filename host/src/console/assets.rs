//! The console's static files, embedded in the binary: served under a name
//! that carries a hash of their content (so a page can let browsers keep
//! them for a year), gzip-compressed once, with an `ETag` for revalidation.

use std::{io::Write as _, sync::LazyLock};

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

/// One embedded file.
pub(super) struct Asset {
    /// The name a template asks for (`console.css`).
    pub name: &'static str,
    /// The name it is served under (`console.3f2a9c1b.css`).
    pub hashed: String,
    content_type: &'static str,
    bytes: &'static [u8],
    gzip: Vec<u8>,
    etag: String,
}

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "htmx.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-2.0.11.min.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, content_type, bytes)| {
            let hash = hex::encode(Sha256::digest(bytes));
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing to a Vec cannot fail.
            let _ = encoder.write_all(bytes);
            Asset {
                name,
                hashed: format!("{stem}.{}.{ext}", &hash[..10]),
                content_type,
                bytes,
                gzip: encoder.finish().unwrap_or_default(),
                etag: format!("\"{}\"", &hash[..20]),
            }
        })
        .collect()
});

/// The URL of an asset by its plain name (for templates).
pub(super) fn url(name: &str) -> String {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| format!("/assets/{}", a.hashed))
        .unwrap_or_else(|| format!("/assets/{name}"))
}

/// `GET /assets/{name}`: the hashed name is cached for a year; the plain
/// name revalidates with its ETag.
pub(super) async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.hashed == name || a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let cache = if asset.hashed == name {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        response_headers.insert(header::ETAG, etag);
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if gzip && !asset.gzip.is_empty() {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        (response_headers, asset.gzip.clone()).into_response()
    } else {
        (response_headers, asset.bytes).into_response()
    }
}
