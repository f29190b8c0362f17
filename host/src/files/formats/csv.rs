//! CSV records with the `csv` crate: a delimiter, quoting, a header row (or
//! given column names), and ASCII-compatible encodings other than UTF-8
//! decoded field by field, so byte offsets stay offsets in the file and a
//! resumed reader seeks straight to its checkpoint.

use std::{
    fs::File,
    io::{BufReader, Seek, SeekFrom},
};

use serde_json::{Map, Value, json};

use super::{FormatSpec, Raw, Record, RecordReader, Start};

pub(super) struct CsvReader {
    reader: csv::Reader<BufReader<File>>,
    /// Where the `csv` reader started in the file: its positions are
    /// relative to it.
    base: u64,
    index: u64,
    columns: Option<Vec<String>>,
    encoding: &'static encoding_rs::Encoding,
    record: csv::ByteRecord,
}

impl CsvReader {
    pub(super) fn open(format: &FormatSpec, mut file: File, start: Start) -> Result<Self, String> {
        let FormatSpec::Csv {
            delimiter,
            quote,
            header,
            columns,
            encoding,
        } = format
        else {
            return Err("not a CSV format".into());
        };
        let encoding = match encoding {
            Some(label) => encoding_rs::Encoding::for_label(label.as_bytes())
                .ok_or_else(|| format!("`{label}` is not an encoding"))?,
            None => encoding_rs::UTF_8,
        };
        file.seek(SeekFrom::Start(start.offset))
            .map_err(|e| format!("seeking to byte {}: {e}", start.offset))?;
        let reader = csv::ReaderBuilder::new()
            .delimiter(*delimiter.as_bytes().first().unwrap_or(&b','))
            .quote(*quote.as_bytes().first().unwrap_or(&b'"'))
            .has_headers(false)
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 16, file));
        let mut this = CsvReader {
            reader,
            base: start.offset,
            index: start.index,
            columns: (!columns.is_empty()).then(|| columns.clone()),
            encoding,
            record: csv::ByteRecord::new(),
        };
        if let Some(saved) = start.resume.get("columns").and_then(Value::as_array) {
            this.columns = Some(
                saved
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_string())
                    .collect(),
            );
        } else if *header && start.offset == 0 {
            // The header is not a record: it names the columns.
            let found = this
                .reader
                .read_byte_record(&mut this.record)
                .map_err(|e| format!("reading the header row: {e}"))?;
            if found {
                let names = this
                    .fields()
                    .map_err(|e| format!("the header row: {e}"))?
                    .into_iter()
                    .map(|n| n.trim().to_string())
                    .collect();
                if this.columns.is_none() {
                    this.columns = Some(names);
                }
            }
        }
        Ok(this)
    }

    fn fields(&self) -> Result<Vec<String>, String> {
        self.record
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                if self.encoding == encoding_rs::UTF_8 {
                    std::str::from_utf8(bytes).map(str::to_string).map_err(|_| {
                        format!("field {} is not UTF-8 (set the format's `encoding`)", i + 1)
                    })
                } else {
                    Ok(self
                        .encoding
                        .decode_without_bom_handling(bytes)
                        .0
                        .into_owned())
                }
            })
            .collect()
    }
}

impl RecordReader for CsvReader {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        let offset = self.base + self.reader.position().byte();
        let found = self
            .reader
            .read_byte_record(&mut self.record)
            .map_err(|e| format!("reading CSV at byte {offset}: {e}"))?;
        if !found {
            return Ok(None);
        }
        let end = self.base + self.reader.position().byte();
        let index = self.index;
        self.index += 1;
        let (value, raw) = match self.fields() {
            Err(e) => {
                let raw = self
                    .record
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect();
                (Err(e), raw)
            }
            Ok(fields) => {
                let value = match &self.columns {
                    Some(columns) if columns.len() != fields.len() => Err(format!(
                        "the row has {} fields, the header {}",
                        fields.len(),
                        columns.len()
                    )),
                    Some(columns) => Ok(Value::Object(
                        columns
                            .iter()
                            .cloned()
                            .zip(fields.iter().cloned().map(Value::String))
                            .collect::<Map<_, _>>(),
                    )),
                    None => Ok(json!(fields)),
                };
                (value, fields)
            }
        };
        Ok(Some(Record {
            index,
            offset,
            end,
            value,
            raw: Raw::Fields(raw),
        }))
    }

    fn resume(&self) -> Value {
        match &self.columns {
            Some(columns) => json!({ "columns": columns }),
            None => Value::Null,
        }
    }

    fn columns(&self) -> Option<Vec<String>> {
        self.columns.clone()
    }
}
