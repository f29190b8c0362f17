//! Where a node of a spec is written: a small index from JSON pointers
//! (`/actions/get-order/request/url`) to line numbers, built by scanning
//! the text, so a problem found on the parsed value can name its line.
//!
//! YAML is scanned as block YAML (the form specs are written in): keys,
//! `- ` items, indentation, block scalars and flow collections (whose
//! inside is placed at their first line). JSON is scanned token by token.
//! A pointer the index does not know is placed at its nearest known parent.

use std::collections::HashMap;

/// JSON pointers to 1-based line numbers.
#[derive(Debug, Default)]
pub struct Index {
    lines: HashMap<String, usize>,
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl Index {
    pub fn new(text: &str) -> Index {
        let mut index = Index::default();
        index.lines.insert(String::new(), 1);
        if text.trim_start().starts_with(['{', '[']) {
            index.scan_json(text);
        } else {
            index.scan_yaml(text);
        }
        index
    }

    /// The line of `pointer`, or of its nearest parent the index knows.
    pub fn line(&self, pointer: &str) -> usize {
        let mut at = pointer;
        loop {
            if let Some(line) = self.lines.get(at) {
                return *line;
            }
            match at.rfind('/') {
                Some(cut) => at = &at[..cut],
                None => return 1,
            }
        }
    }

    fn record(&mut self, path: &[String], line: usize) {
        let pointer: String = path.iter().map(|s| format!("/{}", escape(s))).collect();
        self.lines.entry(pointer).or_insert(line);
    }

    fn scan_yaml(&mut self, text: &str) {
        /// A mapping or sequence opened at a column.
        struct Open {
            indent: usize,
            path: Vec<String>,
            /// The last item's index, for a sequence.
            items: Option<usize>,
        }
        let mut stack = vec![Open {
            indent: 0,
            path: Vec::new(),
            items: None,
        }];
        // A key with nothing after its colon: its value starts below.
        let mut pending: Option<(usize, Vec<String>)> = None;
        // Inside a block scalar (`|`, `>`) opened by a key at this column.
        let mut block: Option<usize> = None;
        // Open brackets of a flow collection spanning lines.
        let mut flow_depth: i32 = 0;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let content = strip_comment(raw);
            if content.trim().is_empty() {
                continue;
            }
            let indent = content.len() - content.trim_start().len();
            if flow_depth > 0 {
                flow_depth += bracket_balance(content);
                continue;
            }
            if let Some(col) = block {
                if indent > col {
                    continue;
                }
                block = None;
            }
            let mut rest = content.trim_start();
            let is_item = rest == "-" || rest.starts_with("- ");
            match pending.take() {
                Some((col, path)) if indent > col || (is_item && indent == col) => {
                    stack.push(Open {
                        indent,
                        path,
                        items: None,
                    });
                }
                _ => {
                    while stack.len() > 1 && stack.last().is_some_and(|o| o.indent > indent) {
                        stack.pop();
                    }
                }
            }
            let mut col = indent;
            while rest == "-" || rest.starts_with("- ") {
                let Some(top) = stack.last_mut() else { break };
                let item = top.items.map_or(0, |i| i + 1);
                top.items = Some(item);
                let mut path = top.path.clone();
                path.push(item.to_string());
                self.record(&path, line);
                let after = rest[1..].trim_start();
                col += rest.len() - after.len();
                rest = after;
                if rest.is_empty() {
                    pending = Some((indent, path));
                    break;
                }
                stack.push(Open {
                    indent: col,
                    path,
                    items: None,
                });
            }
            if rest.is_empty() {
                continue;
            }
            let Some((key, value)) = split_key(rest) else {
                if rest.starts_with(['{', '[']) {
                    flow_depth = bracket_balance(rest).max(0);
                }
                continue;
            };
            let Some(top) = stack.last() else { continue };
            let mut path = top.path.clone();
            path.push(key);
            self.record(&path, line);
            let value = value.trim();
            if value.is_empty() {
                pending = Some((col, path));
            } else if value.starts_with(['|', '>']) {
                block = Some(col);
            } else if value.starts_with(['{', '[']) {
                flow_depth = bracket_balance(value).max(0);
            }
        }
    }

    fn scan_json(&mut self, text: &str) {
        /// An open object (its current key) or array (its next index).
        enum Open {
            Object(Option<String>),
            Array(usize),
        }
        let mut stack: Vec<Open> = Vec::new();
        let mut line = 1;
        let mut chars = text.chars().peekable();
        let path_of = |stack: &[Open]| -> Vec<String> {
            stack
                .iter()
                .filter_map(|o| match o {
                    Open::Object(key) => key.clone(),
                    Open::Array(i) => Some(i.to_string()),
                })
                .collect()
        };
        // Whether the next string is a key.
        let mut expect_key = false;
        while let Some(c) = chars.next() {
            match c {
                '\n' => line += 1,
                '{' => {
                    stack.push(Open::Object(None));
                    expect_key = true;
                }
                '[' => stack.push(Open::Array(0)),
                '}' | ']' => {
                    stack.pop();
                }
                ',' => match stack.last_mut() {
                    Some(Open::Array(i)) => *i += 1,
                    Some(Open::Object(key)) => {
                        *key = None;
                        expect_key = true;
                    }
                    None => {}
                },
                '"' => {
                    let mut s = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some(e) = chars.next() {
                                    s.push(e);
                                }
                            }
                            '"' => break,
                            '\n' => {
                                line += 1;
                                s.push(c);
                            }
                            _ => s.push(c),
                        }
                    }
                    if expect_key && let Some(Open::Object(key)) = stack.last_mut() {
                        *key = Some(s);
                        expect_key = false;
                        let path = path_of(&stack);
                        self.record(&path, line);
                    }
                }
                _ => {}
            }
            // Array items are placed where they start.
            if let Some(Open::Array(_)) = stack.last()
                && let Some(next) = chars.peek()
                && !next.is_whitespace()
                && !matches!(next, ',' | ']')
            {
                let path = path_of(&stack);
                self.record(&path, line);
            }
        }
    }
}

/// The text before a `#` comment (one that starts a line or follows a
/// space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `key: value` (the key may be quoted), or `None` for a plain scalar.
fn split_key(text: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(quote @ ('"' | '\'')) = text.chars().next() {
        let end = text[1..].find(quote)? + 1;
        (text[1..end].to_string(), &text[end + 1..])
    } else {
        let at = text
            .char_indices()
            .find(|(i, c)| *c == ':' && text[i + 1..].chars().next().is_none_or(|n| n == ' '))
            .map(|(i, _)| i)?;
        if text[..at].contains(['{', '[', '"']) {
            return None;
        }
        (text[..at].trim().to_string(), &text[at..])
    };
    let rest = rest.trim_start();
    let value = rest.strip_prefix(':')?;
    Some((key, value))
}

/// Opening minus closing brackets, outside quotes.
fn bracket_balance(text: &str) -> i32 {
    let (mut depth, mut quote) = (0, None);
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            _ => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nodes_are_placed() {
        let text = "\
declarative: \"0.1\"   # the format
key: shop
actions:
  get-order:
    name: Find
    request:
      url: /orders/{{ input.id }}
      query: {a: 1, b: [2,
        3]}
    responses:
    - status: 404
      output: {found: false}
    - status: [401]
      error: auth
  other:
    cases:
      - when: x
        request:
          url: |
            /a
            /b
      -
        request: {url: /c}
triggers:
  t:
    name: T
";
        let index = Index::new(text);
        let table = [
            ("", 1),
            ("/key", 2),
            ("/actions/get-order", 4),
            ("/actions/get-order/request/url", 7),
            ("/actions/get-order/request/query/a", 8),
            ("/actions/get-order/responses/0", 11),
            ("/actions/get-order/responses/0/output", 12),
            ("/actions/get-order/responses/1/error", 14),
            ("/actions/other/cases/0/when", 17),
            ("/actions/other/cases/0/request/url", 19),
            ("/actions/other/cases/1", 22),
            ("/actions/other/cases/1/request", 23),
            ("/triggers/t/name", 26),
            ("/triggers/t/nope/deeper", 25),
        ];
        for (pointer, line) in table {
            assert_eq!(index.line(pointer), line, "{pointer}");
        }
    }

    #[test]
    fn json_nodes_are_placed() {
        let text = "{\n  \"key\": \"shop\",\n  \"actions\": {\n    \"a\": {\n      \"cases\": [\n        {\"when\": \"x\"},\n        {\"when\": \"y\"}\n      ]\n    }\n  }\n}";
        let index = Index::new(text);
        assert_eq!(index.line("/key"), 2);
        assert_eq!(index.line("/actions/a"), 4);
        assert_eq!(index.line("/actions/a/cases/1/when"), 7);
        assert_eq!(index.line("/actions/a/cases/0/when"), 6);
    }
}
