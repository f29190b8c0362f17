//! The formats as tables: what each reader makes of a file (records, errors
//! that do not end the file), that a reader started at any record's
//! checkpoint reads exactly the records after it, and that what a writer
//! writes (also across a checkpoint and a resume) reads back the same.

use std::io::Write;

use serde_json::{Value, json};

use super::*;

fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    (dir, path)
}

/// Every record of `bytes` from `start`: (index, value or error).
fn read_from(format: &FormatSpec, path: &std::path::Path, start: Start) -> Vec<Record> {
    let file = File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let mut reader = open_reader(format, file, size, start).unwrap();
    let mut out = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        out.push(record);
    }
    out
}

fn csv(delimiter: &str, header: bool, encoding: Option<&str>) -> FormatSpec {
    FormatSpec::Csv {
        delimiter: delimiter.into(),
        quote: "\"".into(),
        header,
        columns: Vec::new(),
        encoding: encoding.map(str::to_string),
    }
}

/// (format, file, the records' values; `Err` where a record cannot be read).
/// A case: its name, the format, the file, the values (`Err` for a bad record).
type Case = (&'static str, FormatSpec, Vec<u8>, Vec<Result<Value, ()>>);

fn cases() -> Vec<Case> {
    vec![
        (
            "csv with quoting and a short row",
            csv(",", true, None),
            b"sku,name\nA1,\"Widget, large\"\nB2\nC3,\"say \"\"hi\"\"\"\n".to_vec(),
            vec![
                Ok(json!({"sku": "A1", "name": "Widget, large"})),
                Err(()),
                Ok(json!({"sku": "C3", "name": "say \"hi\""})),
            ],
        ),
        (
            "csv with semicolons in windows-1252",
            csv(";", true, Some("windows-1252")),
            b"name;city\nJ\xfcrgen;K\xf6ln\n".to_vec(),
            vec![Ok(json!({"name": "Jürgen", "city": "Köln"}))],
        ),
        (
            "csv without a header",
            csv(",", false, None),
            b"1,2\n3,4\n".to_vec(),
            vec![Ok(json!(["1", "2"])), Ok(json!(["3", "4"]))],
        ),
        (
            "json lines with a bad line",
            FormatSpec::Jsonl,
            b"{\"a\":1}\n{oops\n\n{\"a\":3}\n".to_vec(),
            vec![Ok(json!({"a": 1})), Err(()), Ok(json!({"a": 3}))],
        ),
        (
            "a json array",
            FormatSpec::Json,
            b" [ {\"a\": [1, \"]\"]}, 2 ,\"x,y\" ] ".to_vec(),
            vec![Ok(json!({"a": [1, "]"]})), Ok(json!(2)), Ok(json!("x,y"))],
        ),
        (
            "xml records by element path",
            FormatSpec::Xml {
                record: "Orders/Order".into(),
            },
            br#"<?xml version="1.0"?><Orders><Meta>x</Meta><Order id="1"><Sku>A</Sku><Qty>2</Qty></Order><Order id="2"><Sku>B</Sku></Order></Orders>"#.to_vec(),
            vec![
                Ok(json!({"@id": "1", "Sku": "A", "Qty": "2"})),
                Ok(json!({"@id": "2", "Sku": "B"})),
            ],
        ),
    ]
}

#[test]
fn readers_read_each_format_record_by_record() {
    for (name, format, bytes, expected) in cases() {
        let (_dir, path) = file_with(&bytes);
        let records = read_from(&format, &path, Start::default());
        let got: Vec<Result<Value, ()>> = records
            .iter()
            .map(|r| r.value.clone().map_err(|_| ()))
            .collect();
        assert_eq!(got, expected, "{name}");
        let indices: Vec<u64> = records.iter().map(|r| r.index).collect();
        assert_eq!(
            indices,
            (0..expected.len() as u64).collect::<Vec<_>>(),
            "{name}"
        );
    }
}

#[test]
fn a_reader_started_at_a_checkpoint_reads_exactly_the_rest() {
    for (name, format, bytes, _) in cases() {
        let (_dir, path) = file_with(&bytes);
        let file = File::open(&path).unwrap();
        let mut reader = open_reader(&format, file, bytes.len() as u64, Start::default()).unwrap();
        let mut all = Vec::new();
        let mut resumes = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            all.push(record);
            resumes.push(reader.resume());
        }
        // After record k: the offset after it, the next index, the
        // reader's resume fields.
        for k in 0..all.len() {
            let start = Start {
                offset: all[k].end,
                index: all[k].index + 1,
                resume: resumes[k].clone(),
            };
            let rest = read_from(&format, &path, start);
            assert_eq!(
                rest,
                all[k + 1..].to_vec(),
                "{name}: resumed after record {k}"
            );
        }
    }
}

#[test]
fn written_records_read_back_across_a_checkpoint() {
    let records: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("r{i}"), "name": format!("Item, {i} \"q\""), "qty": i}))
        .collect();
    let formats = [
        csv(",", true, None),
        FormatSpec::Jsonl,
        FormatSpec::Json,
        FormatSpec::Xml {
            record: "items/item".into(),
        },
    ];
    for format in formats {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = File::create(&path).unwrap();
        let mut writer = open_writer(&format, file, 0, 0, &Value::Null, dir.path()).unwrap();
        for r in &records[..20] {
            writer.write(r).unwrap();
        }
        let length = writer.checkpoint().unwrap().expect("appendable");
        let resume = writer.resume();
        // Written past the checkpoint, then lost: a crash.
        for r in &records[20..30] {
            writer.write(r).unwrap();
        }
        drop(writer);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut writer = open_writer(&format, file, length, 20, &resume, dir.path()).unwrap();
        for r in &records[20..] {
            writer.write(r).unwrap();
        }
        writer.finish().unwrap();

        let back: Vec<Value> = read_from(&format, &path, Start::default())
            .into_iter()
            .map(|r| r.value.unwrap())
            .collect();
        assert_eq!(back.len(), 50, "{format:?}");
        for (got, want) in back.iter().zip(&records) {
            // CSV and XML give text; JSON keeps the types.
            let text = |v: &Value| cell_text(v);
            for field in ["id", "name", "qty"] {
                assert_eq!(
                    text(&got[field]),
                    text(&want[field]),
                    "{format:?}: {field} of {want}"
                );
            }
        }
    }
}

#[test]
fn xlsx_is_written_in_constant_memory_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.xlsx");
    let format = FormatSpec::Xlsx {
        sheet: None,
        header: true,
        columns: Vec::new(),
    };
    let file = File::create(&path).unwrap();
    let mut writer = open_writer(&format, file, 0, 0, &Value::Null, dir.path()).unwrap();
    assert_eq!(writer.checkpoint().unwrap(), None, "XLSX cannot resume");
    for i in 0..1000 {
        writer
            .write(&json!({"id": format!("r{i}"), "qty": i, "note": null}))
            .unwrap();
    }
    writer.finish().unwrap();
    let records = read_from(&format, &path, Start::default());
    assert_eq!(records.len(), 1000);
    assert_eq!(records[999].value.clone().unwrap()["id"], json!("r999"));
    // Resuming a read skips the rows before the checkpoint's index.
    let rest = read_from(
        &format,
        &path,
        Start {
            offset: 990,
            index: 990,
            resume: Value::Null,
        },
    );
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[0].index, 990);
}
