//! The XML S3 answers with: a `ListObjectsV2` page and an error's code and
//! message, read with `quick-xml`'s streaming reader.

use quick_xml::{Reader, events::Event};
use switchyard_sdk::{Error, Value};

/// One page of a listing.
pub(crate) struct Page {
    pub(crate) objects: Vec<Value>,
    pub(crate) next: Option<String>,
}

/// Reads a `ListBucketResult`: each `<Contents>` becomes `{path, size,
/// etag, modified_at}`; `<NextContinuationToken>` is the next page's cursor.
pub(crate) fn list(text: &str) -> Result<Page, Error> {
    let mut reader = Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    let mut current: Option<serde_map::Object> = None;
    let mut next = None;
    let mut truncated = false;
    loop {
        match reader
            .read_event()
            .map_err(|e| Error::permanent(format!("the listing is not XML: {e}")))?
        {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "Contents" {
                    current = Some(serde_map::Object::default());
                }
                path.push(name);
            }
            Event::End(_) => {
                if path.pop().as_deref() == Some("Contents")
                    && let Some(object) = current.take()
                {
                    objects.push(object.into_json());
                }
            }
            Event::Text(e) => {
                let value = e
                    .decode()
                    .map_err(|e| Error::permanent(format!("the listing: {e}")))?
                    .into_owned();
                text_at(&path, value, &mut current, &mut next, &mut truncated);
            }
            Event::GeneralRef(e) => {
                let name = e
                    .decode()
                    .map_err(|e| Error::permanent(format!("the listing: {e}")))?;
                let value = match quick_xml::escape::resolve_predefined_entity(&name) {
                    Some(value) => value.to_string(),
                    None => e
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .map(String::from)
                        .unwrap_or_default(),
                };
                text_at(&path, value, &mut current, &mut next, &mut truncated);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(Page {
        objects,
        next: next.filter(|_| truncated),
    })
}

fn text_at(
    path: &[String],
    value: String,
    current: &mut Option<serde_map::Object>,
    next: &mut Option<String>,
    truncated: &mut bool,
) {
    match path.last().map(String::as_str) {
        Some("NextContinuationToken") => next.get_or_insert_with(String::new).push_str(&value),
        Some("IsTruncated") => *truncated = value.trim() == "true",
        Some(field) => {
            if let Some(object) = current.as_mut() {
                object.add(field, &value);
            }
        }
        None => {}
    }
}

/// An S3 error's `Code: Message`, when the body is one.
pub(crate) fn error(text: &str) -> Option<String> {
    let mut reader = Reader::from_str(text);
    let mut field = String::new();
    let (mut code, mut message) = (String::new(), String::new());
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                field = String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
            }
            Event::End(_) => field.clear(),
            Event::Text(e) => {
                let value = e.decode().ok()?;
                match field.as_str() {
                    "Code" => code.push_str(&value),
                    "Message" => message.push_str(&value),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (!code.is_empty()).then(|| format!("{code}: {message}"))
}

/// The text of the first element named `name` (`UploadId`, `ETag`).
pub(crate) fn field(text: &str, name: &str) -> Option<String> {
    let mut reader = Reader::from_str(text);
    let mut inside = false;
    let mut value = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => inside = e.local_name().as_ref() == name.as_bytes(),
            Event::Text(e) if inside => value.push_str(&e.decode().ok()?),
            Event::End(_) if inside => return Some(value),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Text made safe for an XML element.
pub(crate) fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// A listed object's fields as they arrive.
mod serde_map {
    use switchyard_sdk::{Value, json};

    #[derive(Default)]
    pub(crate) struct Object {
        key: String,
        size: u64,
        etag: String,
        modified: String,
    }

    impl Object {
        pub(crate) fn add(&mut self, field: &str, value: &str) {
            match field {
                "Key" => self.key.push_str(value),
                "Size" => self.size = value.trim().parse().unwrap_or(0),
                "ETag" => self.etag.push_str(value),
                "LastModified" => self.modified.push_str(value),
                _ => {}
            }
        }

        pub(crate) fn into_json(self) -> Value {
            json!({
                "path": self.key,
                "size": self.size,
                "etag": self.etag.trim_matches('"'),
                "modified_at": self.modified,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::json;

    #[test]
    fn an_upload_id_is_read_from_its_element() {
        let text = "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><Bucket>b</Bucket>\
                    <Key>k</Key><UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(field(text, "UploadId").as_deref(), Some("VXBsb2FkIElE"));
        assert_eq!(field(text, "ETag"), None);
        assert_eq!(escape("a<b&c"), "a&lt;b&amp;c");
    }

    #[test]
    fn a_listing_page() {
        let page = list(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>drop</Name><Prefix>in/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>
  <Contents><Key>in/a&amp;b.csv</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>
    <ETag>&quot;abc&quot;</ETag><Size>42</Size></Contents>
  <Contents><Key>in/c.csv</Key><LastModified>2026-01-02T00:00:00.000Z</LastModified>
    <ETag>"def"</ETag><Size>7</Size></Contents>
  <NextContinuationToken>tok-2</NextContinuationToken>
</ListBucketResult>"#,
        )
        .unwrap();
        assert_eq!(page.next.as_deref(), Some("tok-2"));
        assert_eq!(
            page.objects,
            vec![
                json!({"path": "in/a&b.csv", "size": 42, "etag": "abc", "modified_at": "2026-01-01T00:00:00.000Z"}),
                json!({"path": "in/c.csv", "size": 7, "etag": "def", "modified_at": "2026-01-02T00:00:00.000Z"}),
            ]
        );
        let last =
            list("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>").unwrap();
        assert!(last.objects.is_empty() && last.next.is_none());
    }

    #[test]
    fn an_error_body() {
        assert_eq!(
            error("<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>")
                .as_deref(),
            Some("NoSuchKey: The key does not exist")
        );
        assert_eq!(error("not xml at all"), None);
    }
}
