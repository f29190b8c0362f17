//! File formats, read record by record and written record by record, in
//! bounded memory: CSV (`csv`), JSON Lines, a JSON array (a scanner that
//! finds each element's bytes, then `serde_json`), XML (`quick-xml`'s
//! streaming reader, records by element path) and XLSX (`calamine`'s cell
//! reader to read, `rust_xlsxwriter` in constant-memory mode to write).
//!
//! A reader starts at a checkpoint: formats whose records can be found from
//! a byte offset (CSV, JSON Lines, a JSON array, XML) seek there; XLSX, a zip
//! archive, skips the records before the checkpoint's index.

mod csv;
mod json;
mod write;
mod xlsx;
mod xml;

use std::fs::File;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use write::{RecordWriter, open_writer};

/// How a file's records are written: the `format` of a flow's file source
/// or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FormatSpec {
    Csv {
        #[serde(default = "comma")]
        delimiter: String,
        #[serde(default = "double_quote")]
        quote: String,
        /// The first row names the columns (records are objects by name).
        #[serde(default = "yes")]
        header: bool,
        /// Column names: for a file without a header, or the order of an
        /// output's columns (by default the first record's keys).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<String>,
        /// A WHATWG encoding label (`utf-8`, `windows-1252`, `iso-8859-1`,
        /// `shift_jis`); ASCII-compatible encodings only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    /// One JSON array of records.
    Json,
    /// One JSON value per line.
    Jsonl,
    Xml {
        /// The records' element path from the root, `Orders/Order`.
        record: String,
    },
    Xlsx {
        /// The sheet to read (the first when left out) or to write.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sheet: Option<String>,
        #[serde(default = "yes")]
        header: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<String>,
    },
}

fn comma() -> String {
    ",".into()
}

fn double_quote() -> String {
    "\"".into()
}

fn yes() -> bool {
    true
}

impl FormatSpec {
    /// The format a path's extension suggests.
    pub fn for_path(path: &str) -> Option<FormatSpec> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" | "txt" => FormatSpec::Csv {
                delimiter: comma(),
                quote: double_quote(),
                header: true,
                columns: Vec::new(),
                encoding: None,
            },
            "tsv" => FormatSpec::Csv {
                delimiter: "\t".into(),
                quote: double_quote(),
                header: true,
                columns: Vec::new(),
                encoding: None,
            },
            "json" => FormatSpec::Json,
            "jsonl" | "ndjson" => FormatSpec::Jsonl,
            "xlsx" => FormatSpec::Xlsx {
                sheet: None,
                header: true,
                columns: Vec::new(),
            },
            _ => return None,
        })
    }

    /// Whether a checkpoint of an output in this format can be resumed
    /// (an XLSX archive is assembled at the end, so it cannot).
    pub fn appendable(&self) -> bool {
        !matches!(self, FormatSpec::Xlsx { .. })
    }

    /// What is wrong with the settings, if anything (publish-time check).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            FormatSpec::Csv {
                delimiter,
                quote,
                encoding,
                ..
            } => {
                for (name, text) in [("delimiter", delimiter), ("quote", quote)] {
                    if text.len() != 1 {
                        problems.push(format!("{name}: one ASCII character, not `{text}`"));
                    }
                }
                if let Some(label) = encoding {
                    match encoding_rs::Encoding::for_label(label.as_bytes()) {
                        None => problems.push(format!("encoding: `{label}` is not an encoding")),
                        Some(e) if !e.is_ascii_compatible() => problems.push(format!(
                            "encoding: {} is not ASCII-compatible; convert the file to UTF-8",
                            e.name()
                        )),
                        Some(_) => {}
                    }
                }
            }
            FormatSpec::Xml { record } => {
                if record.split('/').any(|p| p.trim().is_empty()) {
                    problems.push(format!(
                        "record: `{record}` is not an element path such as `Orders/Order`"
                    ));
                }
            }
            FormatSpec::Json | FormatSpec::Jsonl | FormatSpec::Xlsx { .. } => {}
        }
        problems
    }
}

/// One record as read: where it is, and its value or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 0-based.
    pub index: u64,
    /// Byte offset of the record's start, and of what follows it (XLSX:
    /// both are the index).
    pub offset: u64,
    pub end: u64,
    /// The record as JSON, or why it could not be read (the file goes on).
    pub value: Result<Value, String>,
    /// The record as it was in the file, for `rejected.csv`.
    pub raw: Raw,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// A CSV row's fields.
    Fields(Vec<String>),
    /// Anything else: its text (a JSON line, an element's JSON).
    Text(String),
}

/// Where a reader starts.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub offset: u64,
    pub index: u64,
    /// What the reader said it needs to resume ([`RecordReader::resume`]).
    pub resume: Value,
}

/// A file's records, one at a time.
pub trait RecordReader: Send {
    /// The next record, `None` at the end, or an error that ends the file
    /// (it cannot be read on: a broken archive, unbalanced JSON).
    fn next_record(&mut self) -> Result<Option<Record>, String>;
    /// What a reader started at a later checkpoint needs to know (a CSV
    /// header, the XML element path above the records).
    fn resume(&self) -> Value;
    /// The column names, when the format has them (for `rejected.csv`).
    fn columns(&self) -> Option<Vec<String>> {
        None
    }
}

/// A reader of `file` (`size` bytes) in `format`, from `start`.
pub fn open_reader(
    format: &FormatSpec,
    file: File,
    size: u64,
    start: Start,
) -> Result<Box<dyn RecordReader>, String> {
    Ok(match format {
        FormatSpec::Csv { .. } => Box::new(csv::CsvReader::open(format, file, start)?),
        FormatSpec::Jsonl => Box::new(json::LinesReader::open(file, start)?),
        FormatSpec::Json => Box::new(json::ArrayReader::open(file, start)?),
        FormatSpec::Xml { record } => Box::new(xml::XmlReader::open(record, file, start)?),
        FormatSpec::Xlsx {
            sheet,
            header,
            columns,
        } => Box::new(xlsx::XlsxReader::open(
            file,
            size,
            sheet.clone(),
            *header,
            columns.clone(),
            start,
        )?),
    })
}

/// A JSON value as one CSV or XLSX cell: text as it is, null as nothing,
/// anything else as its JSON.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
