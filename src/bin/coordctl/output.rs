//! Standard output, plain-text tables and value formatting for `coordctl`'s human-readable
//! output.

use std::fmt;
use std::io::{self, Write};

use serde_json::Value;

/// Writes like `print!`, through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// Writes like `println!`, through [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `args` to standard output and flushes it, so a line is out before the command goes on
/// (a `watch` prints each change as it comes).
///
/// A reader that has gone away (`coordctl config schema P | head -5`) ends the process at once
/// with exit 0, as Unix filters do: the output nobody reads is dropped, and a `watch` stops
/// instead of running on. Any other write failure ends it with exit 1 and the error on stderr.
/// `print!` would panic in both cases (exit 101, a backtrace on stderr).
pub(crate) fn write_stdout(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("coordctl: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// Left-aligned columns separated by two spaces, with a header row.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A value for a table cell: strings bare, everything else as compact JSON.
pub(crate) fn cell(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The leaves of a document as `(dotted path, value)`, in path order.
pub(crate) fn leaves(doc: &Value) -> Vec<(String, Value)> {
    fn walk(path: &str, value: &Value, out: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&child, v, out);
                }
            }
            other => out.push((path.to_string(), other.clone())),
        }
    }
    let mut out = Vec::new();
    if doc.as_object().is_some_and(|m| !m.is_empty()) {
        walk("", doc, &mut out);
    }
    out
}
