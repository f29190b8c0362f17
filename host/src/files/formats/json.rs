//! JSON Lines (one value per line) and a JSON array of records. For the
//! array, a small scanner finds where each element ends (strings, escapes
//! and nesting counted) so only one element is in memory at a time, and
//! `serde_json` parses it; a malformed element is one failed record.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
};

use serde_json::Value;

use super::{Raw, Record, RecordReader, Start};

/// An element or line larger than this is refused (the file goes on).
const MAX_RECORD: usize = 16 << 20;

pub(super) struct LinesReader {
    reader: BufReader<File>,
    offset: u64,
    index: u64,
    line: Vec<u8>,
}

impl LinesReader {
    pub(super) fn open(mut file: File, start: Start) -> Result<Self, String> {
        file.seek(SeekFrom::Start(start.offset))
            .map_err(|e| format!("seeking to byte {}: {e}", start.offset))?;
        Ok(LinesReader {
            reader: BufReader::with_capacity(1 << 16, file),
            offset: start.offset,
            index: start.index,
            line: Vec::new(),
        })
    }
}

impl RecordReader for LinesReader {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        loop {
            self.line.clear();
            let offset = self.offset;
            let read = (&mut self.reader)
                .take(MAX_RECORD as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(|e| format!("reading line at byte {offset}: {e}"))?;
            if read == 0 {
                return Ok(None);
            }
            if read > MAX_RECORD && self.line.last() != Some(&b'\n') {
                return Err(format!(
                    "the line at byte {offset} is longer than {} MiB",
                    MAX_RECORD >> 20
                ));
            }
            self.offset += read as u64;
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let index = self.index;
            self.index += 1;
            return Ok(Some(Record {
                index,
                offset,
                end: self.offset,
                value: serde_json::from_str(text).map_err(|e| format!("not JSON: {e}")),
                raw: Raw::Text(text.to_string()),
            }));
        }
    }

    fn resume(&self) -> Value {
        Value::Null
    }
}

pub(super) struct ArrayReader {
    reader: BufReader<File>,
    offset: u64,
    index: u64,
    /// Past the closing `]`.
    done: bool,
    element: Vec<u8>,
}

impl ArrayReader {
    pub(super) fn open(mut file: File, start: Start) -> Result<Self, String> {
        file.seek(SeekFrom::Start(start.offset))
            .map_err(|e| format!("seeking to byte {}: {e}", start.offset))?;
        let mut this = ArrayReader {
            reader: BufReader::with_capacity(1 << 16, file),
            offset: start.offset,
            index: start.index,
            done: false,
            element: Vec::new(),
        };
        if start.offset == 0 {
            match this.skip_space()? {
                Some(b'[') => this.bump(),
                Some(b'\xEF') => {
                    // A UTF-8 byte order mark.
                    for _ in 0..3 {
                        this.bump();
                    }
                    match this.skip_space()? {
                        Some(b'[') => this.bump(),
                        other => return Err(not_array(other)),
                    }
                }
                other => return Err(not_array(other)),
            }
        }
        Ok(this)
    }

    fn peek(&mut self) -> Result<Option<u8>, String> {
        let buf = self
            .reader
            .fill_buf()
            .map_err(|e| format!("reading at byte {}: {e}", self.offset))?;
        Ok(buf.first().copied())
    }

    fn bump(&mut self) {
        self.reader.consume(1);
        self.offset += 1;
    }

    fn skip_space(&mut self) -> Result<Option<u8>, String> {
        while let Some(b) = self.peek()? {
            if !b.is_ascii_whitespace() {
                return Ok(Some(b));
            }
            self.bump();
        }
        Ok(None)
    }

    /// Reads one element's bytes, up to (not including) the `,` or `]`
    /// after it.
    fn element(&mut self) -> Result<(), String> {
        self.element.clear();
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        while let Some(b) = self.peek()? {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' if depth == 0 => return Ok(()),
                    b']' | b'}' => depth -= 1,
                    b',' if depth == 0 => return Ok(()),
                    _ => {}
                }
            }
            if self.element.len() >= MAX_RECORD {
                return Err(format!(
                    "an element at byte {} is larger than {} MiB",
                    self.offset,
                    MAX_RECORD >> 20
                ));
            }
            self.element.push(b);
            self.bump();
        }
        Err(format!(
            "the array ends at byte {} without its closing `]`",
            self.offset
        ))
    }
}

fn not_array(found: Option<u8>) -> String {
    match found {
        Some(b) => format!(
            "the file is not a JSON array (it starts with `{}`); use `jsonl` for one value per line",
            b as char
        ),
        None => "the file is empty, not a JSON array".into(),
    }
}

impl RecordReader for ArrayReader {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        if self.done {
            return Ok(None);
        }
        match self.skip_space()? {
            Some(b',') => {
                self.bump();
                // A trailing comma before the end is forgiven.
                if self.skip_space()? == Some(b']') {
                    self.bump();
                    self.done = true;
                    return Ok(None);
                }
            }
            Some(b']') => {
                self.bump();
                self.done = true;
                return Ok(None);
            }
            Some(_) => {}
            None => {
                return Err(format!(
                    "the array ends at byte {} without its closing `]`",
                    self.offset
                ));
            }
        }
        let offset = self.offset;
        self.element()?;
        let text = String::from_utf8_lossy(&self.element);
        let text = text.trim_end();
        let index = self.index;
        self.index += 1;
        Ok(Some(Record {
            index,
            offset,
            end: self.offset,
            value: serde_json::from_str(text).map_err(|e| format!("not JSON: {e}")),
            raw: Raw::Text(text.to_string()),
        }))
    }

    fn resume(&self) -> Value {
        Value::Null
    }
}
