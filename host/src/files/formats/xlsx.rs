//! XLSX rows with `calamine`'s cell reader, which reads a sheet's XML from
//! the archive cell by cell. The reader borrows the workbook, so it runs on
//! a thread of its own that owns both and hands rows over a small bounded
//! channel. A zip archive cannot be entered in the middle: a resumed reader
//! skips the rows before its checkpoint.

use std::{
    fs::File,
    io::BufReader,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
};

use calamine::{DataRef, DataType, Reader, Xlsx, open_workbook_from_rs};
use serde_json::{Map, Value, json};

use super::{Raw, Record, RecordReader, Start};

/// Rows in flight between the reading thread and the job.
const AHEAD: usize = 256;

type Row = Result<Option<(u64, Vec<Value>)>, String>;

pub(super) struct XlsxReader {
    rows: Receiver<Row>,
    columns: Option<Vec<String>>,
    done: bool,
    index: u64,
}

impl XlsxReader {
    pub(super) fn open(
        file: File,
        _size: u64,
        sheet: Option<String>,
        header: bool,
        columns: Vec<String>,
        start: Start,
    ) -> Result<Self, String> {
        let workbook: Xlsx<_> = open_workbook_from_rs(BufReader::new(file))
            .map_err(|e| format!("not an XLSX workbook: {e}"))?;
        let sheet = match sheet {
            Some(sheet) => sheet,
            None => workbook
                .sheet_names()
                .first()
                .cloned()
                .ok_or("the workbook has no sheet")?,
        };
        let (tx, rx) = sync_channel(AHEAD);
        let (first_tx, first_rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("switchyard-xlsx".into())
            .spawn(move || read_rows(workbook, sheet, tx, first_tx))
            .map_err(|e| format!("starting the XLSX reader: {e}"))?;
        // The sheet must open before the job goes on.
        first_rx
            .recv()
            .map_err(|_| "the XLSX reader stopped".to_string())??;
        let mut this = XlsxReader {
            rows: rx,
            columns: (!columns.is_empty()).then_some(columns),
            done: false,
            index: start.index,
        };
        let mut skip = start.index;
        if header {
            // The header is row 0; records are counted after it.
            if let Some((_, names)) = this.row()?
                && this.columns.is_none()
            {
                this.columns = Some(names.iter().map(super::cell_text).collect());
            }
        }
        while skip > 0 && this.row()?.is_some() {
            skip -= 1;
        }
        Ok(this)
    }

    fn row(&mut self) -> Result<Option<(u64, Vec<Value>)>, String> {
        if self.done {
            return Ok(None);
        }
        match self.rows.recv() {
            Ok(Ok(Some(row))) => Ok(Some(row)),
            Ok(Ok(None)) | Err(_) => {
                self.done = true;
                Ok(None)
            }
            Ok(Err(e)) => {
                self.done = true;
                Err(e)
            }
        }
    }
}

fn read_rows(
    mut workbook: Xlsx<BufReader<File>>,
    sheet: String,
    tx: SyncSender<Row>,
    first: SyncSender<Result<(), String>>,
) {
    let mut cells = match workbook.worksheet_cells_reader(&sheet) {
        Ok(cells) => {
            let _ = first.send(Ok(()));
            cells
        }
        Err(e) => {
            let _ = first.send(Err(format!("sheet `{sheet}`: {e}")));
            return;
        }
    };
    let mut current: Option<(u32, Vec<Value>)> = None;
    loop {
        let cell = match cells.next_cell() {
            Ok(cell) => cell,
            Err(e) => {
                let _ = tx.send(Err(format!("reading sheet `{sheet}`: {e}")));
                return;
            }
        };
        let Some(cell) = cell else { break };
        let (row, col) = cell.get_position();
        if current.as_ref().is_some_and(|(r, _)| *r != row) {
            let (r, values) = current.take().expect("checked");
            if tx.send(Ok(Some((r as u64, values)))).is_err() {
                return; // the job stopped reading
            }
        }
        let values = &mut current.get_or_insert_with(|| (row, Vec::new())).1;
        let col = col as usize;
        if values.len() <= col {
            values.resize(col + 1, Value::Null);
        }
        values[col] = json_of(cell.get_value());
    }
    if let Some((r, values)) = current {
        let _ = tx.send(Ok(Some((r as u64, values))));
    }
    let _ = tx.send(Ok(None));
}

fn json_of(cell: &DataRef<'_>) -> Value {
    match cell {
        DataRef::Int(i) => json!(i),
        DataRef::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        DataRef::String(s) => json!(s),
        DataRef::SharedString(s) => json!(s),
        DataRef::Bool(b) => json!(b),
        DataRef::DateTime(_) => cell.as_datetime().map_or(Value::Null, |d| {
            json!(d.format("%Y-%m-%dT%H:%M:%S").to_string())
        }),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => json!(s),
        DataRef::Error(e) => json!(format!("#{e:?}")),
        DataRef::Empty => Value::Null,
    }
}

impl RecordReader for XlsxReader {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        let Some((_, values)) = self.row()? else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        let raw = Raw::Fields(values.iter().map(super::cell_text).collect());
        let value = match &self.columns {
            Some(columns) => {
                let mut fields = Map::new();
                for (i, name) in columns.iter().enumerate() {
                    fields.insert(name.clone(), values.get(i).cloned().unwrap_or(Value::Null));
                }
                Value::Object(fields)
            }
            None => Value::Array(values),
        };
        Ok(Some(Record {
            index,
            offset: index,
            end: index + 1,
            value: Ok(value),
            raw,
        }))
    }

    fn resume(&self) -> Value {
        Value::Null
    }

    fn columns(&self) -> Option<Vec<String>> {
        self.columns.clone()
    }
}
