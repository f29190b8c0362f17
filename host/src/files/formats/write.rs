//! Writing records: CSV, JSON Lines, a JSON array and XML are appended to
//! a file whose length is checkpointed (a resumed job cuts the file back to
//! its checkpoint and writes on); XLSX is written by `rust_xlsxwriter` in
//! constant-memory mode (rows go to a temporary file as they are written,
//! and the archive is assembled at the end), so an XLSX output starts over
//! when its job resumes.

use std::{
    fs::File,
    io::{BufWriter, Seek, SeekFrom, Write},
    path::Path,
};

use serde_json::{Value, json};

use super::{FormatSpec, cell_text};

/// An output file being written.
pub trait RecordWriter: Send {
    fn write(&mut self, value: &Value) -> Result<(), String>;
    /// Writes what is buffered and syncs it; returns the length a resumed
    /// writer may start from, or `None` when this format cannot resume.
    fn checkpoint(&mut self) -> Result<Option<u64>, String>;
    /// What a writer resumed from the checkpoint needs (CSV columns).
    fn resume(&self) -> Value;
    /// Closes the format (`]`, `</records>`, the XLSX archive) and syncs;
    /// returns the file's length.
    fn finish(self: Box<Self>) -> Result<u64, String>;
}

/// A writer of `format` into `file`, which holds `length` bytes of `records`
/// records already (the rest is cut off).
pub fn open_writer(
    format: &FormatSpec,
    mut file: File,
    length: u64,
    records: u64,
    resume: &Value,
    tempdir: &Path,
) -> Result<Box<dyn RecordWriter>, String> {
    let length = if format.appendable() { length } else { 0 };
    file.set_len(length)
        .and_then(|_| file.seek(SeekFrom::Start(length)).map(|_| ()))
        .map_err(|e| format!("preparing the output at byte {length}: {e}"))?;
    let out = Out {
        file: BufWriter::with_capacity(1 << 16, file),
        length,
    };
    Ok(match format {
        FormatSpec::Csv {
            delimiter,
            quote,
            header,
            columns,
            ..
        } => {
            let saved: Option<Vec<String>> = resume
                .get("columns")
                .and_then(|c| serde_json::from_value(c.clone()).ok());
            Box::new(CsvWriter {
                out,
                delimiter: *delimiter.as_bytes().first().unwrap_or(&b','),
                quote: *quote.as_bytes().first().unwrap_or(&b'"'),
                header: *header,
                columns: saved.or_else(|| (!columns.is_empty()).then(|| columns.clone())),
                started: length > 0,
                row: Vec::new(),
            })
        }
        FormatSpec::Jsonl => Box::new(LinesWriter { out }),
        FormatSpec::Json => Box::new(ArrayWriter {
            out,
            records,
            started: length > 0,
        }),
        FormatSpec::Xml { record } => {
            let parts: Vec<&str> = record.split('/').map(str::trim).collect();
            let element = element_name(parts.last().copied().unwrap_or("record"));
            let root = match parts.as_slice() {
                [root, _, ..] => element_name(root),
                _ => "records".to_string(),
            };
            Box::new(XmlWriter {
                out,
                root,
                element,
                started: length > 0,
            })
        }
        FormatSpec::Xlsx { sheet, columns, .. } => {
            let mut workbook = rust_xlsxwriter::Workbook::new();
            workbook
                .set_tempdir(tempdir)
                .map_err(|e| format!("the XLSX writer's temporary directory: {e}"))?;
            let worksheet = workbook
                .add_worksheet_with_constant_memory()
                .map_err(|e| format!("starting the XLSX sheet: {e}"))?;
            if let Some(name) = sheet {
                worksheet
                    .set_name(name)
                    .map_err(|e| format!("sheet name `{name}`: {e}"))?;
            }
            Box::new(XlsxWriter {
                file: out.file,
                workbook,
                columns: (!columns.is_empty()).then(|| columns.clone()),
                row: 0,
            })
        }
    })
}

/// A buffered file that knows its length.
struct Out {
    file: BufWriter<File>,
    length: u64,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .map_err(|e| format!("writing the output: {e}"))?;
        self.length += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<u64, String> {
        self.file
            .flush()
            .and_then(|_| self.file.get_ref().sync_data())
            .map_err(|e| format!("syncing the output: {e}"))?;
        Ok(self.length)
    }
}

struct CsvWriter {
    out: Out,
    delimiter: u8,
    quote: u8,
    header: bool,
    columns: Option<Vec<String>>,
    /// The header (if any) is written.
    started: bool,
    row: Vec<u8>,
}

impl CsvWriter {
    fn line(&mut self, cells: &[String]) -> Result<(), String> {
        self.row.clear();
        {
            let mut writer = csv::WriterBuilder::new()
                .delimiter(self.delimiter)
                .quote(self.quote)
                .from_writer(&mut self.row);
            writer
                .write_record(cells)
                .and_then(|_| writer.flush().map_err(csv::Error::from))
                .map_err(|e| format!("writing a CSV row: {e}"))?;
        }
        let row = std::mem::take(&mut self.row);
        let result = self.out.put(&row);
        self.row = row;
        result
    }
}

impl RecordWriter for CsvWriter {
    fn write(&mut self, value: &Value) -> Result<(), String> {
        if self.columns.is_none()
            && let Value::Object(fields) = value
        {
            self.columns = Some(fields.keys().cloned().collect());
        }
        if !self.started {
            self.started = true;
            if self.header
                && let Some(columns) = self.columns.clone()
            {
                self.line(&columns)?;
            }
        }
        let cells: Vec<String> = match (value, &self.columns) {
            (Value::Object(fields), Some(columns)) => columns
                .iter()
                .map(|c| fields.get(c).map(cell_text).unwrap_or_default())
                .collect(),
            (Value::Array(items), _) => items.iter().map(cell_text).collect(),
            (other, _) => vec![cell_text(other)],
        };
        self.line(&cells)
    }

    fn checkpoint(&mut self) -> Result<Option<u64>, String> {
        self.out.sync().map(Some)
    }

    fn resume(&self) -> Value {
        json!({ "columns": self.columns })
    }

    fn finish(mut self: Box<Self>) -> Result<u64, String> {
        if !self.started
            && self.header
            && let Some(columns) = self.columns.clone()
        {
            // An empty output still says what its columns are.
            self.line(&columns)?;
        }
        self.out.sync()
    }
}

struct LinesWriter {
    out: Out,
}

impl RecordWriter for LinesWriter {
    fn write(&mut self, value: &Value) -> Result<(), String> {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        self.out.put(&line)
    }

    fn checkpoint(&mut self) -> Result<Option<u64>, String> {
        self.out.sync().map(Some)
    }

    fn resume(&self) -> Value {
        Value::Null
    }

    fn finish(mut self: Box<Self>) -> Result<u64, String> {
        self.out.sync()
    }
}

struct ArrayWriter {
    out: Out,
    records: u64,
    started: bool,
}

impl RecordWriter for ArrayWriter {
    fn write(&mut self, value: &Value) -> Result<(), String> {
        if !self.started {
            self.started = true;
            self.out.put(b"[\n")?;
        }
        if self.records > 0 {
            self.out.put(b",\n")?;
        }
        self.records += 1;
        self.out.put(value.to_string().as_bytes())
    }

    fn checkpoint(&mut self) -> Result<Option<u64>, String> {
        self.out.sync().map(Some)
    }

    fn resume(&self) -> Value {
        Value::Null
    }

    fn finish(mut self: Box<Self>) -> Result<u64, String> {
        if !self.started {
            self.out.put(b"[")?;
        }
        self.out.put(b"\n]\n")?;
        self.out.sync()
    }
}

struct XmlWriter {
    out: Out,
    root: String,
    element: String,
    started: bool,
}

/// A JSON key as an XML name: characters XML does not allow become `_`.
fn element_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || !name.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name
}

fn xml_value(name: &str, value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            for item in items {
                xml_value(name, item, out);
            }
        }
        Value::Object(fields) => {
            out.push('<');
            out.push_str(name);
            for (key, value) in fields {
                if let Some(attribute) = key.strip_prefix('@') {
                    out.push(' ');
                    out.push_str(&element_name(attribute));
                    out.push_str("=\"");
                    out.push_str(&quick_xml::escape::escape(cell_text(value)));
                    out.push('"');
                }
            }
            out.push('>');
            for (key, value) in fields {
                if key == "#text" {
                    out.push_str(&quick_xml::escape::escape(cell_text(value)));
                } else if !key.starts_with('@') {
                    xml_value(&element_name(key), value, out);
                }
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
        }
        scalar => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            out.push_str(&quick_xml::escape::escape(cell_text(scalar)));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

impl XmlWriter {
    fn open(&mut self) -> Result<(), String> {
        if !self.started {
            self.started = true;
            let head = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{}>\n",
                self.root
            );
            self.out.put(head.as_bytes())?;
        }
        Ok(())
    }
}

impl RecordWriter for XmlWriter {
    fn write(&mut self, value: &Value) -> Result<(), String> {
        self.open()?;
        let mut text = String::new();
        xml_value(&self.element, value, &mut text);
        text.push('\n');
        self.out.put(text.as_bytes())
    }

    fn checkpoint(&mut self) -> Result<Option<u64>, String> {
        self.out.sync().map(Some)
    }

    fn resume(&self) -> Value {
        Value::Null
    }

    fn finish(mut self: Box<Self>) -> Result<u64, String> {
        self.open()?;
        let tail = format!("</{}>\n", self.root);
        self.out.put(tail.as_bytes())?;
        self.out.sync()
    }
}

struct XlsxWriter {
    file: BufWriter<File>,
    workbook: rust_xlsxwriter::Workbook,
    columns: Option<Vec<String>>,
    row: u32,
}

impl XlsxWriter {
    fn cell(&mut self, col: u16, value: &Value) -> Result<(), String> {
        let row = self.row;
        let sheet = self
            .workbook
            .worksheet_from_index(0)
            .map_err(|e| format!("the XLSX sheet: {e}"))?;
        let written = match value {
            Value::Null => return Ok(()),
            Value::Bool(b) => sheet.write_boolean(row, col, *b).map(|_| ()),
            Value::Number(n) => match n.as_f64() {
                Some(f) => sheet.write_number(row, col, f).map(|_| ()),
                None => sheet.write_string(row, col, n.to_string()).map(|_| ()),
            },
            other => sheet.write_string(row, col, cell_text(other)).map(|_| ()),
        };
        written.map_err(|e| format!("writing row {} of the XLSX sheet: {e}", row + 1))
    }
}

impl RecordWriter for XlsxWriter {
    fn write(&mut self, value: &Value) -> Result<(), String> {
        if self.columns.is_none()
            && let Value::Object(fields) = value
        {
            let columns: Vec<String> = fields.keys().cloned().collect();
            for (i, name) in columns.iter().enumerate() {
                self.cell(i as u16, &json!(name))?;
            }
            self.row += 1;
            self.columns = Some(columns);
        } else if self.row == 0
            && let Some(columns) = self.columns.clone()
        {
            for (i, name) in columns.iter().enumerate() {
                self.cell(i as u16, &json!(name))?;
            }
            self.row += 1;
        }
        let cells: Vec<Value> = match (value, &self.columns) {
            (Value::Object(fields), Some(columns)) => columns
                .iter()
                .map(|c| fields.get(c).cloned().unwrap_or(Value::Null))
                .collect(),
            (Value::Array(items), _) => items.clone(),
            (other, _) => vec![other.clone()],
        };
        for (i, cell) in cells.iter().enumerate() {
            self.cell(i as u16, cell)?;
        }
        self.row += 1;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<Option<u64>, String> {
        Ok(None)
    }

    fn resume(&self) -> Value {
        Value::Null
    }

    fn finish(mut self: Box<Self>) -> Result<u64, String> {
        let mut file = self.file;
        self.workbook
            .save_to_writer(&mut file)
            .map_err(|e| format!("assembling the XLSX file: {e}"))?;
        file.flush()
            .and_then(|_| file.get_ref().sync_data())
            .map_err(|e| format!("syncing the XLSX file: {e}"))?;
        file.get_ref()
            .metadata()
            .map(|m| m.len())
            .map_err(|e| format!("the XLSX file's size: {e}"))
    }
}
