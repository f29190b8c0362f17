//! Progress bars for long CLI work (a large upload, a bulk replay), drawn on
//! stderr when it is a terminal. Elsewhere (CI, pipes, a test capturing the
//! output) a bar is hidden and costs nothing, so what scripts read stays
//! exactly what the command prints.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

/// Uploads smaller than this finish before a bar would be read.
pub(super) const UPLOAD_BAR_BYTES: usize = 1 << 20;

/// Whether bars are drawn at all.
pub(super) fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar for `len` bytes sent, or a hidden one off a terminal.
pub(super) fn bytes(len: u64, what: &str) -> ProgressBar {
    bar(
        len,
        what,
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
}

/// A bar for `len` items done, or a hidden one off a terminal.
pub(super) fn items(len: u64, what: &str) -> ProgressBar {
    bar(len, what, "{msg} [{bar:30}] {pos}/{len} {eta}")
}

fn bar(len: u64, what: &str, template: &str) -> ProgressBar {
    if !on_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template)
        .expect("the templates above are valid")
        .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_message(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_bars_are_hidden() {
        // The test harness captures stderr: not a terminal.
        if on_terminal() {
            return;
        }
        assert!(bytes(10, "uploading").is_hidden());
        assert!(items(10, "replaying").is_hidden());
    }
}
