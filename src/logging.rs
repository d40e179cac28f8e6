//! The log's format: one event per line on stderr, coloured only for a terminal, each
//! field written so that text from outside can neither end its line nor pass for another
//! field of it.
//!
//! Channels' answers reach the log (a push's failure quotes the reply's body, a poll's
//! failure the channel's message), and so do webhook senders' words. A reply body holding
//! `\n2026-12-07T10:00:00Z  INFO lockstep: ...` would otherwise write a second, forged
//! line that a reader or a log shipper takes for ours, and one holding ` channel=other`
//! a forged field. tracing-subscriber's own field formatter escapes ESC and a few other
//! terminal codes since 0.3.20 (RUSTSEC-2025-0055), in the message and errors only, and
//! no line breaks. So the fields are written here, in the `key=value` layout of
//! tracing-subscriber's, with logfmt's quoting: a value that is empty or holds whitespace,
//! `=`, `"`, a backslash or a control character is written in double quotes, with `"`
//! and `\` escaped and every control character (a line break, a carriage return, a tab,
//! ESC, C1 codes) and Unicode's line and paragraph separators written as an escape
//! (`\n`, `\r`, `\t`, else `\u001b`: the forms logfmt readers decode, as JSON's). The
//! message is ours and is not quoted; its control characters but the tab are escaped all
//! the same. One place for every field of every line, rather than each call site
//! remembering to quote. (`for_terminal` does the same for a command's closing error.)
//!
//! What tracing-subscriber's formatter did that this one does not: italic field names and
//! a dimmed `=` on a terminal (the level's colour and the line's prefix keep theirs).

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// Sets up the process's logging: stderr, `RUST_LOG` or lockstep's default filter,
/// colours for a terminal only, fields written by `Fields`.
pub fn init() {
    // Colours for a terminal only: a log piped to a file or a journal is read by tools
    // and searched for `key=value`, which escape codes split.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .fmt_fields(Fields)
        .with_env_filter(
            // The storage engine's own INFO lines (a dozen per shard at every start) only
            // when RUST_LOG asks for them.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn".into()),
        )
        .init();
}

/// The fields' formatter: the message as it is, every other field `name=value`, separated
/// by a space; values quoted where they need it (`quoted`), control characters escaped.
pub struct Fields;

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut line = Line {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut line);
        line.result
    }
}

/// Writes one event's (or span's) fields as they are visited.
struct Line<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl Line<'_> {
    fn put(&mut self, field: &Field, text: &str) {
        let name = field.name();
        // A `log` record's metadata, already in the line's target and level.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = self.write(name, text);
    }

    fn write(&mut self, name: &str, text: &str) -> fmt::Result {
        if !std::mem::take(&mut self.empty) {
            self.writer.write_char(' ')?;
        }
        if name == "message" {
            return escaped(&mut self.writer, text, false);
        }
        write!(self.writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
        quoted(&mut self.writer, text)
    }
}

impl Visit for Line<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }

    /// The error, then the errors that caused it as tracing-subscriber's own writes them
    /// (`name.sources=[first, second]`), the list quoted as any value is.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &value.to_string());
        let mut sources = Vec::new();
        let mut next = value.source();
        while let Some(source) = next {
            sources.push(source.to_string());
            next = source.source();
        }
        if !sources.is_empty() && self.result.is_ok() {
            let name = format!("{}.sources", field.name());
            self.result = self.write(&name, &format!("[{}]", sources.join(", ")));
        }
    }
}

/// `text` as a field's value: as it is when it holds only printable characters other than
/// a space, `=`, `"` and `\`; else in double quotes, those escaped.
fn quoted(out: &mut impl Write, text: &str) -> fmt::Result {
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || escaped_in_quotes(c));
    if plain {
        return out.write_str(text);
    }
    out.write_char('"')?;
    escaped(out, text, true)?;
    out.write_char('"')
}

/// Writes `text` with its control characters escaped (and the tab, `"` and `\` too when
/// it goes `inside_quotes`).
fn escaped(out: &mut impl Write, text: &str, inside_quotes: bool) -> fmt::Result {
    let escape = |c: char| {
        if inside_quotes {
            escaped_in_quotes(c)
        } else {
            needs_escape(c)
        }
    };
    let mut rest = text;
    while let Some(at) = rest.find(escape) {
        out.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().expect("found a character there");
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            // Every such character is below U+10000: four digits, as JSON and logfmt write.
            c => write!(out, "\\u{:04x}", c as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// `text` for a terminal, as a command's last error is written: its line breaks kept (a
/// message may say more on a line of its own), every other control character escaped,
/// since the text may quote a channel's answer and ESC would drive the operator's
/// terminal.
pub fn for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        escaped(&mut out, line, false).expect("a String takes every write");
    }
    out
}

/// What a quoted value escapes: what any text does, and the tab, `"` and `\`.
fn escaped_in_quotes(c: char) -> bool {
    needs_escape(c) || matches!(c, '\t' | '"' | '\\')
}

/// C0 controls but the tab, DEL, C1 controls, and U+2028 and U+2029, which some readers
/// take for a line break.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs, through `Fields`, without time or colour.
    fn logged(emit: impl FnOnce()) -> Vec<String> {
        let kept = Kept::default();
        let writer = kept.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(Fields)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn text_from_outside_stays_in_its_field_on_its_line() {
        let forged = "HTTP 500: oops\n2026-12-07T10:00:00Z  INFO lockstep: all good\r\x1b[2J\u{85}\u{2028} channel=other \\n \"x\"";
        let lines = logged(|| {
            tracing::warn!(channel = %"shop", reason = %forged, retry_in_ms = 5u64, "push failed");
        });
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].ends_with(
                "push failed channel=shop reason=\"HTTP 500: oops\\n2026-12-07T10:00:00Z  INFO \
                 lockstep: all good\\r\\u001b[2J\\u0085\\u2028 channel=other \\\\n \\\"x\\\"\" \
                 retry_in_ms=5"
            ),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn a_commands_error_keeps_its_lines_and_loses_its_escape_codes() {
        assert_eq!(
            for_terminal("HTTP 500: \x1b]0;owned\x07oops\r\nthe listings are kept"),
            "HTTP 500: \\u001b]0;owned\\u0007oops\\r\nthe listings are kept"
        );
    }

    /// An error caused by another.
    #[derive(Debug)]
    struct Failed(std::io::Error);

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("commit failed")
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn plain_values_are_written_bare_and_log_metadata_not_at_all() {
        let lines = logged(|| {
            tracing::info!(sku = "A-1", shard = 3, spaced = "a b", tab = %"a\tb", empty = "", "plain line");
            tracing::info!(
                log.target = "fjall",
                log.module_path = "fjall::x",
                "from the log crate"
            );
            let error = Failed(std::io::Error::other("disk\ngone"));
            tracing::error!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            );
        });
        assert_eq!(
            lines,
            [
                " INFO lockstep::logging::tests: plain line sku=A-1 shard=3 spaced=\"a b\" \
                 tab=\"a\\tb\" empty=\"\"",
                " INFO lockstep::logging::tests: from the log crate",
                "ERROR lockstep::logging::tests: failed error=\"commit failed\" \
                 error.sources=\"[disk\\ngone]\"",
            ]
        );
    }
}
