//! XML records with `quick-xml`'s streaming reader: the elements at an
//! element path (`Orders/Order`) are the records, each turned into JSON
//! (attributes as `@name`, child elements by name, repeated ones as an
//! array, text alone as a string or beside children as `#text`). Only the
//! record being read is in memory. A resumed reader seeks to the end of the
//! last record and knows the elements it is inside from the checkpoint.

use std::{
    fs::File,
    io::{BufReader, Seek, SeekFrom},
};

use quick_xml::{Reader, events::Event};
use serde_json::{Map, Value, json};

use super::{Raw, Record, RecordReader, Start};

/// A record larger than this (as JSON) ends the file with an error.
const MAX_RECORD: usize = 16 << 20;

pub(super) struct XmlReader {
    reader: Reader<BufReader<File>>,
    /// Where the reader started in the file: its positions are relative.
    base: u64,
    index: u64,
    path: Vec<String>,
    /// The elements the reader is inside, outside a record.
    stack: Vec<String>,
    buf: Vec<u8>,
}

/// An element being built.
struct Frame {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

impl XmlReader {
    pub(super) fn open(record: &str, mut file: File, start: Start) -> Result<Self, String> {
        file.seek(SeekFrom::Start(start.offset))
            .map_err(|e| format!("seeking to byte {}: {e}", start.offset))?;
        let mut reader = Reader::from_reader(BufReader::with_capacity(1 << 16, file));
        // A resumed reader starts inside elements whose start it never saw.
        reader.config_mut().check_end_names = false;
        reader.config_mut().allow_unmatched_ends = true;
        let stack = start
            .resume
            .get("inside")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .map(|n| n.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        Ok(XmlReader {
            reader,
            base: start.offset,
            index: start.index,
            path: record.split('/').map(|p| p.trim().to_string()).collect(),
            stack,
            buf: Vec::new(),
        })
    }

    fn position(&self) -> u64 {
        self.base + self.reader.buffer_position()
    }

    /// Reads the rest of a record whose start tag is `frames`' only one.
    fn finish(&mut self, mut frames: Vec<Frame>) -> Result<Value, String> {
        let mut size = 0usize;
        loop {
            self.buf.clear();
            let at = self.position();
            let event = self
                .reader
                .read_event_into(&mut self.buf)
                .map_err(|e| format!("XML at byte {at}: {e}"))?;
            match event {
                Event::Start(e) => {
                    let frame = frame(&e)?;
                    frames.push(frame);
                }
                Event::Empty(e) => {
                    let done = frame(&e)?;
                    let top = frames.last_mut().expect("inside a record");
                    insert(&mut top.fields, done.name.clone(), value_of(done));
                }
                Event::Text(e) => {
                    let text = e.decode().map_err(|e| format!("XML at byte {at}: {e}"))?;
                    size += text.len();
                    frames
                        .last_mut()
                        .expect("inside a record")
                        .text
                        .push_str(&text);
                }
                Event::CData(e) => {
                    let text = e.decode().map_err(|e| format!("XML at byte {at}: {e}"))?;
                    size += text.len();
                    frames
                        .last_mut()
                        .expect("inside a record")
                        .text
                        .push_str(&text);
                }
                Event::GeneralRef(e) => {
                    let text = if e.is_char_ref() {
                        e.resolve_char_ref()
                            .map_err(|e| format!("XML at byte {at}: {e}"))?
                            .map(String::from)
                            .unwrap_or_default()
                    } else {
                        let name = e.decode().map_err(|e| format!("XML at byte {at}: {e}"))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(str::to_string)
                            .ok_or_else(|| format!("XML at byte {at}: unknown entity `&{name};`"))?
                    };
                    frames
                        .last_mut()
                        .expect("inside a record")
                        .text
                        .push_str(&text);
                }
                Event::End(_) => {
                    let done = frames.pop().expect("inside a record");
                    let name = done.name.clone();
                    let value = value_of(done);
                    match frames.last_mut() {
                        Some(parent) => insert(&mut parent.fields, name, value),
                        None => return Ok(value),
                    }
                }
                Event::Eof => {
                    return Err(format!("the file ends at byte {at} inside a record"));
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
            if size > MAX_RECORD {
                return Err(format!(
                    "a record at byte {at} is larger than {} MiB",
                    MAX_RECORD >> 20
                ));
            }
        }
    }
}

fn frame(e: &quick_xml::events::BytesStart<'_>) -> Result<Frame, String> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut fields = Map::new();
    for attribute in e.attributes() {
        let attribute = attribute.map_err(|e| format!("an attribute of <{name}>: {e}"))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = attribute
            .decode_and_unescape_value(e.decoder())
            .map_err(|e| format!("attribute `{key}` of <{name}>: {e}"))?;
        fields.insert(format!("@{key}"), Value::String(value.into_owned()));
    }
    Ok(Frame {
        name,
        fields,
        text: String::new(),
    })
}

fn value_of(frame: Frame) -> Value {
    let text = frame.text.trim();
    if frame.fields.is_empty() {
        return Value::String(text.to_string());
    }
    let mut fields = frame.fields;
    if !text.is_empty() {
        fields.insert("#text".into(), Value::String(text.to_string()));
    }
    Value::Object(fields)
}

/// Adds a child element's value; a repeated name becomes an array.
fn insert(fields: &mut Map<String, Value>, name: String, value: Value) {
    match fields.get_mut(&name) {
        None => {
            fields.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

impl RecordReader for XmlReader {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        loop {
            self.buf.clear();
            let at = self.position();
            let event = self
                .reader
                .read_event_into(&mut self.buf)
                .map_err(|e| format!("XML at byte {at}: {e}"))?;
            let (start, empty) = match event {
                Event::Start(e) => (frame(&e)?, false),
                Event::Empty(e) => (frame(&e)?, true),
                Event::End(_) => {
                    self.stack.pop();
                    continue;
                }
                Event::Eof => return Ok(None),
                _ => continue,
            };
            let is_record = self.stack.len() + 1 == self.path.len()
                && self.stack.iter().zip(&self.path).all(|(a, b)| a == b)
                && self.path.last() == Some(&start.name);
            if !is_record {
                if !empty {
                    self.stack.push(start.name);
                }
                continue;
            }
            let value = if empty {
                value_of(start)
            } else {
                self.finish(vec![start])?
            };
            let index = self.index;
            self.index += 1;
            let raw = Raw::Text(value.to_string());
            return Ok(Some(Record {
                index,
                offset: at,
                end: self.position(),
                value: Ok(value),
                raw,
            }));
        }
    }

    fn resume(&self) -> Value {
        json!({ "inside": self.stack })
    }
}
