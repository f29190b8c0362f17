//! S3 and S3-compatible object storage (AWS S3, MinIO, Ceph, R2, ...).
//!
//! | action | request |
//! | --- | --- |
//! | `list-objects` | `GET /{bucket}?list-type=2&prefix=&continuation-token=` |
//! | `get-object` | `GET /{bucket}/{key}` with `Range` (a chunk) and `If-Match` |
//! | `put-object` | `PUT /{bucket}/{key}` |
//! | `copy-object` | `PUT /{bucket}/{to}` with `x-amz-copy-source` |
//! | `delete-object` | `DELETE /{bucket}/{key}` |
//! | `create-multipart-upload` | `POST /{bucket}/{key}?uploads` |
//! | `upload-part` | `PUT /{bucket}/{key}?partNumber=&uploadId=` |
//! | `complete-multipart-upload` | `POST /{bucket}/{key}?uploadId=` with the parts' ETags |
//! | `abort-multipart-upload` | `DELETE /{bucket}/{key}?uploadId=` |
//!
//! `list-objects`, `get-object`, `copy-object` and `delete-object` follow
//! the file source contract of file triggers, and the multipart actions
//! with `put-object` the file destination contract of record jobs
//! (`docs/connector-guide.md`): a flow can watch a bucket of any
//! S3-compatible store and export to one. `SlowDown` answers are
//! `rate-limited`, so the host waits and tries again.
//!
//! Requests are signed by the host with AWS Signature Version 4: this
//! connector declares the `aws-sigv4` scheme through the 0.2.0 contract's
//! `auth` export and never sees the secret key. Paths are path-style
//! (`{endpoint}/{bucket}/{key}`), which every S3-compatible store serves.

mod xml;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use switchyard_sdk::http::{Request, Response, percent_encode};
use switchyard_sdk::{
    Action, AuthScheme, Connector, Context, Error, Manifest, PollResult, Property, Value,
    WebhookOutcome, WebhookRequest, json,
};

/// The 0.2.0 `auth` export, generated here (the SDK speaks 0.1.0).
#[allow(unsafe_code, clippy::all, unreachable_pub, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package switchyard:s3;

            world auth-export {
                export switchyard:connector/auth@0.2.0;
            }
        "#,
        path: ["../../wit/connector@0.1.0", "../../wit/connector@0.2.0"],
        world: "auth-export",
        generate_all,
    });
}

use bindings::exports::switchyard::connector0_2_0::auth;

/// The component.
struct S3;

switchyard_sdk::export_connector!(S3);
bindings::export!(S3 with_types_in bindings);

impl auth::Guest for S3 {
    fn scheme() -> auth::AuthScheme {
        auth::AuthScheme::AwsSigv4(auth::AwsSigv4 {
            region: "{{region}}".into(),
            service: "s3".into(),
        })
    }
}

impl Connector for S3 {
    fn describe() -> Manifest {
        let path = json!({ "type": "string", "minLength": 1 });
        let bucket = json!({ "type": "string", "minLength": 3 });
        Manifest::new("s3", "S3 object storage", env!("CARGO_PKG_VERSION"))
            .description(
                "Lists, reads (in chunks), writes (whole or in parts), copies and deletes objects \
                 of S3 and S3-compatible stores; every request signed by the host (AWS \
                 Signature V4).",
            )
            // The scheme is AWS Signature V4, declared by the `auth` export.
            .auth(AuthScheme::None)
            .property(
                Property::new("endpoint", "Endpoint")
                    .description("https://s3.eu-west-1.amazonaws.com, or a compatible store's URL")
                    .required()
                    .schema(json!({ "type": "string", "format": "uri" })),
            )
            .property(
                Property::new("region", "Region")
                    .description("The region requests are signed for, e.g. eu-west-1")
                    .required()
                    .schema(json!({ "type": "string", "pattern": "^[a-z0-9-]+$" })),
            )
            .property(
                Property::new("access_key_id", "Access key ID")
                    .required()
                    .schema(json!({ "type": "string", "minLength": 1 })),
            )
            .property(
                Property::new("secret_access_key", "Secret access key")
                    .description("Kept by the host, which signs every request")
                    .required()
                    .secret()
                    .schema(json!({ "type": "string", "minLength": 1 })),
            )
            .property(
                Property::new("session_token", "Session token")
                    .description("For temporary credentials")
                    .secret()
                    .schema(json!({ "type": "string" })),
            )
            .allowed_host("{endpoint}")
            .action(
                Action::search("list-objects", "List objects")
                    .description("One page of the objects under a prefix")
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket"],
                        "properties": {
                            "bucket": bucket,
                            "prefix": { "type": "string" },
                            "cursor": { "type": ["string", "null"] },
                            "max_keys": { "type": "integer", "minimum": 1, "maximum": 1000 }
                        }
                    }))
                    .output_schema(json!({
                        "type": "object",
                        "required": ["objects"],
                        "properties": {
                            "objects": { "type": "array", "items": { "type": "object" } },
                            "next": { "type": ["string", "null"] }
                        }
                    })),
            )
            .action(
                Action::search("get-object", "Get object")
                    .description("The bytes of an object (base64), or of a range of it")
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "path"],
                        "properties": {
                            "bucket": bucket,
                            "path": path,
                            "offset": { "type": "integer", "minimum": 0 },
                            "length": { "type": "integer", "minimum": 1, "maximum": 8388608 },
                            "etag": { "type": "string" }
                        }
                    }))
                    .output_schema(json!({
                        "type": "object",
                        "required": ["data_base64", "size"],
                        "properties": {
                            "data_base64": { "type": "string" },
                            "size": { "type": "integer" },
                            "etag": { "type": ["string", "null"] }
                        }
                    })),
            )
            .action(
                Action::create("put-object", "Put object")
                    .description("Writes an object from base64 bytes or text")
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "path"],
                        "properties": {
                            "bucket": bucket,
                            "path": path,
                            "data_base64": { "type": "string" },
                            "text": { "type": "string" },
                            "content_type": { "type": "string" }
                        }
                    }))
                    .output_schema(json!({ "type": "object" })),
            )
            .action(
                Action::create("copy-object", "Copy object")
                    .description(
                        "Copies an object within the store (to another bucket with `to_bucket`)",
                    )
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "from", "to"],
                        "properties": {
                            "bucket": bucket,
                            "from": path,
                            "to": path,
                            "to_bucket": { "type": "string" }
                        }
                    }))
                    .output_schema(json!({ "type": "object" })),
            )
            .action(
                Action::other("delete-object", "Delete object")
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "path"],
                        "properties": { "bucket": bucket, "path": path }
                    }))
                    .output_schema(json!({ "type": "object" })),
            )
            .action(
                Action::create("create-multipart-upload", "Start a multipart upload")
                    .description(
                        "Starts writing an object in parts; it appears only when completed",
                    )
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "path"],
                        "properties": {
                            "bucket": bucket,
                            "path": path,
                            "content_type": { "type": "string" }
                        }
                    }))
                    .output_schema(json!({
                        "type": "object",
                        "required": ["upload_id"],
                        "properties": { "upload_id": { "type": "string" } }
                    })),
            )
            .action(
                Action::create("upload-part", "Upload a part")
                    .description(
                        "One part of a multipart upload (base64); the same number replaces it",
                    )
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "path", "upload_id", "part_number", "data_base64"],
                        "properties": {
                            "bucket": bucket,
                            "path": path,
                            "upload_id": { "type": "string", "minLength": 1 },
                            "part_number": { "type": "integer", "minimum": 1, "maximum": 10000 },
                            "data_base64": { "type": "string" }
                        }
                    }))
                    .output_schema(json!({
                        "type": "object",
                        "required": ["etag"],
                        "properties": { "etag": { "type": "string" } }
                    })),
            )
            .action(
                Action::create("complete-multipart-upload", "Complete a multipart upload")
                    .description("Joins the parts: the object appears under its key, whole")
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "path", "upload_id", "parts"],
                        "properties": {
                            "bucket": bucket,
                            "path": path,
                            "upload_id": { "type": "string", "minLength": 1 },
                            "parts": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["part_number", "etag"],
                                    "properties": {
                                        "part_number": { "type": "integer", "minimum": 1 },
                                        "etag": { "type": "string" }
                                    }
                                }
                            }
                        }
                    }))
                    .output_schema(json!({ "type": "object" })),
            )
            .action(
                Action::other("abort-multipart-upload", "Abort a multipart upload")
                    .description("Drops an unfinished upload and its parts")
                    .input_schema(json!({
                        "type": "object",
                        "required": ["bucket", "path", "upload_id"],
                        "properties": {
                            "bucket": bucket,
                            "path": path,
                            "upload_id": { "type": "string", "minLength": 1 }
                        }
                    }))
                    .output_schema(json!({ "type": "object" })),
            )
    }

    fn test_connection(ctx: &Context) -> Result<(), Error> {
        Request::get(format!("{}/", endpoint(ctx)?))
            .send()?
            .error_for_status()?;
        Ok(())
    }

    fn perform(ctx: &Context, action: &str, input: Value, _key: &str) -> Result<Value, Error> {
        let text = |name: &str| -> Result<String, Error> {
            input
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::invalid_input(format!("`{name}` must be a string")))
        };
        match action {
            "list-objects" => {
                let bucket = text("bucket")?;
                let mut request = Request::get(format!("{}/{}", endpoint(ctx)?, segment(&bucket)))
                    .query("list-type", "2")
                    .query("prefix", input["prefix"].as_str().unwrap_or(""));
                if let Some(cursor) = input["cursor"].as_str().filter(|c| !c.is_empty()) {
                    request = request.query("continuation-token", cursor);
                }
                if let Some(max) = input["max_keys"].as_u64() {
                    request = request.query("max-keys", &max.to_string());
                }
                let response = checked(request.send()?)?;
                let page = xml::list(&response.text())?;
                Ok(json!({ "objects": page.objects, "next": page.next }))
            }
            "get-object" => {
                let url = object_url(ctx, &text("bucket")?, &text("path")?)?;
                let mut request = Request::get(url);
                let offset = input["offset"].as_u64().unwrap_or(0);
                if let Some(length) = input["length"].as_u64() {
                    let last = offset + length.max(1) - 1;
                    request = request.header("Range", format!("bytes={offset}-{last}"));
                }
                if let Some(etag) = input["etag"].as_str().filter(|e| !e.is_empty()) {
                    request = request.header("If-Match", format!("\"{}\"", etag.trim_matches('"')));
                }
                let response = request.send()?;
                if response.status == 416 {
                    // A range past the end (an empty object): nothing more.
                    return Ok(json!({ "data_base64": "", "size": offset, "etag": null }));
                }
                if response.status == 412 {
                    return Err(Error::permanent(
                        "the object changed while it was read (its ETag no longer matches)",
                    ));
                }
                let response = checked(response)?;
                let size = total_size(&response).unwrap_or(offset + response.body.len() as u64);
                Ok(json!({
                    "data_base64": BASE64.encode(&response.body),
                    "size": size,
                    "etag": response.header("etag").map(|e| e.trim_matches('"').to_string()),
                }))
            }
            "put-object" => {
                let url = object_url(ctx, &text("bucket")?, &text("path")?)?;
                let body = match (input["data_base64"].as_str(), input["text"].as_str()) {
                    (Some(data), _) => BASE64
                        .decode(data)
                        .map_err(|e| Error::invalid_input(format!("`data_base64`: {e}")))?,
                    (None, Some(text)) => text.as_bytes().to_vec(),
                    (None, None) => {
                        return Err(Error::invalid_input("give `data_base64` or `text`"));
                    }
                };
                let content_type = input["content_type"]
                    .as_str()
                    .unwrap_or("application/octet-stream");
                let response = checked(
                    Request::put(url)
                        .header("Content-Type", content_type)
                        .body(body)
                        .send()?,
                )?;
                Ok(
                    json!({ "etag": response.header("etag").map(|e| e.trim_matches('"').to_string()) }),
                )
            }
            "copy-object" => {
                let bucket = text("bucket")?;
                let to_bucket = input["to_bucket"].as_str().unwrap_or(&bucket).to_string();
                let url = object_url(ctx, &to_bucket, &text("to")?)?;
                let source = format!("/{}/{}", segment(&bucket), key_path(&text("from")?));
                checked(
                    Request::put(url)
                        .header("x-amz-copy-source", source)
                        .send()?,
                )?;
                Ok(json!({ "copied": true }))
            }
            "delete-object" => {
                let url = object_url(ctx, &text("bucket")?, &text("path")?)?;
                checked(Request::delete(url).send()?)?;
                Ok(json!({ "deleted": true }))
            }
            "create-multipart-upload" => {
                let url = object_url(ctx, &text("bucket")?, &text("path")?)?;
                let content_type = input["content_type"]
                    .as_str()
                    .unwrap_or("application/octet-stream");
                let response = checked(
                    Request::post(url)
                        .query("uploads", "")
                        .header("Content-Type", content_type)
                        .send()?,
                )?;
                let upload_id = xml::field(&response.text(), "UploadId").ok_or_else(|| {
                    Error::permanent("the store started an upload but gave no UploadId")
                })?;
                Ok(json!({ "upload_id": upload_id }))
            }
            "upload-part" => {
                let url = object_url(ctx, &text("bucket")?, &text("path")?)?;
                let number = input["part_number"]
                    .as_u64()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| Error::invalid_input("`part_number` from 1 to 10,000"))?;
                let body = BASE64
                    .decode(text("data_base64")?)
                    .map_err(|e| Error::invalid_input(format!("`data_base64`: {e}")))?;
                let response = checked(
                    Request::put(url)
                        .query("partNumber", &number.to_string())
                        .query("uploadId", &text("upload_id")?)
                        .body(body)
                        .send()?,
                )?;
                let etag = response
                    .header("etag")
                    .ok_or_else(|| Error::permanent("the store answered a part without an ETag"))?;
                Ok(json!({ "etag": etag.trim_matches('"') }))
            }
            "complete-multipart-upload" => {
                let url = object_url(ctx, &text("bucket")?, &text("path")?)?;
                let parts = input["parts"]
                    .as_array()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| Error::invalid_input("`parts`: the uploaded parts, in order"))?;
                let mut body = String::from("<CompleteMultipartUpload>");
                for part in parts {
                    let (Some(number), Some(etag)) =
                        (part["part_number"].as_u64(), part["etag"].as_str())
                    else {
                        return Err(Error::invalid_input("`parts`: each `{part_number, etag}`"));
                    };
                    body.push_str(&format!(
                        "<Part><PartNumber>{number}</PartNumber><ETag>\"{}\"</ETag></Part>",
                        xml::escape(etag.trim_matches('"'))
                    ));
                }
                body.push_str("</CompleteMultipartUpload>");
                let response = checked(
                    Request::post(url)
                        .query("uploadId", &text("upload_id")?)
                        .header("Content-Type", "application/xml")
                        .body(body)
                        .send()?,
                )?;
                // S3 may answer 200 and report a failure in the body.
                let text = response.text();
                if let Some(detail) = xml::error(&text) {
                    return Err(Error::transient(format!("completing the upload: {detail}")));
                }
                Ok(
                    json!({ "etag": xml::field(&text, "ETag").map(|e| e.trim_matches('"').to_string()) }),
                )
            }
            "abort-multipart-upload" => {
                let url = object_url(ctx, &text("bucket")?, &text("path")?)?;
                let response = Request::delete(url)
                    .query("uploadId", &text("upload_id")?)
                    .send()?;
                // Already gone is what was asked for.
                if response.status != 404 {
                    checked(response)?;
                }
                Ok(json!({ "aborted": true }))
            }
            _ => Err(Error::unknown_action(action)),
        }
    }

    fn poll(_: &Context, trigger: &str, _: Value, _: Option<&str>) -> Result<PollResult, Error> {
        Err(Error::unknown_trigger(trigger))
    }

    fn subscribe(_: &Context, trigger: &str, _: Value, _: &str) -> Result<String, Error> {
        Err(Error::unknown_trigger(trigger))
    }

    fn unsubscribe(_: &Context, trigger: &str, _: Value, _: &str) -> Result<(), Error> {
        Err(Error::unknown_trigger(trigger))
    }

    fn handle_webhook(
        _: &Context,
        trigger: &str,
        _: Value,
        _: WebhookRequest,
    ) -> Result<WebhookOutcome, Error> {
        Err(Error::unknown_trigger(trigger))
    }
}

fn endpoint(ctx: &Context) -> Result<String, Error> {
    Ok(ctx
        .string_property("endpoint")?
        .trim_end_matches('/')
        .to_string())
}

/// One path segment, encoded as S3 signs it.
fn segment(text: &str) -> String {
    percent_encode(text)
}

/// An object key as a path: every segment encoded, `/` kept.
fn key_path(key: &str) -> String {
    key.split('/').map(segment).collect::<Vec<_>>().join("/")
}

fn object_url(ctx: &Context, bucket: &str, key: &str) -> Result<String, Error> {
    Ok(format!(
        "{}/{}/{}",
        endpoint(ctx)?,
        segment(bucket),
        key_path(key)
    ))
}

/// The object's whole size from `Content-Range: bytes 0-9/1234`.
fn total_size(response: &Response) -> Option<u64> {
    response
        .header("content-range")?
        .rsplit('/')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The error an S3 answer means: its `<Code>` and `<Message>` kept.
fn checked(response: Response) -> Result<Response, Error> {
    if response.is_success() {
        return Ok(response);
    }
    let detail = xml::error(&response.text());
    // Throttling: S3 answers 503 SlowDown without a Retry-After.
    if let Some(detail) = detail.as_deref().filter(|d| d.starts_with("SlowDown")) {
        return Err(Error::rate_limited(
            1_000,
            format!("{}: {detail}", response.status),
        ));
    }
    match response.error_for_status() {
        Ok(response) => Ok(response),
        Err(error) => Err(match detail {
            Some(detail) => with_detail(error, &detail),
            None => error,
        }),
    }
}

fn with_detail(error: Error, detail: &str) -> Error {
    let message = format!("{}: {detail}", error.message());
    match error {
        Error::RateLimited { retry_after_ms, .. } => Error::rate_limited(retry_after_ms, message),
        Error::Transient(_) => Error::transient(message),
        Error::Auth(_) => Error::auth(message),
        Error::InvalidInput(_) => Error::invalid_input(message),
        Error::Permanent(_) => Error::permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_declares_the_file_source_actions() {
        let m = S3::describe();
        let keys: Vec<_> = m.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "list-objects",
                "get-object",
                "put-object",
                "copy-object",
                "delete-object",
                "create-multipart-upload",
                "upload-part",
                "complete-multipart-upload",
                "abort-multipart-upload"
            ]
        );
        assert_eq!(m.allowed_hosts, ["{endpoint}"]);
    }

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        assert_eq!(key_path("in/2026 01/a+b.csv"), "in/2026%2001/a%2Bb.csv");
        assert_eq!(segment("my.bucket"), "my.bucket");
    }
}
