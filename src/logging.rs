//! The log's format: one event per line on stderr, coloured only for a terminal, and
//! every field's value escaped so that text from outside cannot end the line it is on.
//!
//! Channels' answers reach the log (a push's failure quotes the reply's body, a poll's
//! failure the channel's message), and so do webhook senders' words. A reply body
//! holding `\n2026-12-07T10:00:00Z  INFO lockstep: ...` would otherwise write a second,
//! forged line that a reader or a log shipper takes for ours. tracing-subscriber escapes
//! ESC and a few other terminal codes since 0.3.20 (RUSTSEC-2025-0055), but not line
//! breaks; so the fields are formatted here, with every control character (a line break,
//! a carriage return, ESC, C1 codes) and Unicode's line and paragraph separators written
//! as an escape. One place for every field of every line, rather than each call site
//! remembering to quote what it logs.

use std::fmt::{self, Write};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};

/// Sets up the process's logging: stderr, `RUST_LOG` or lockstep's default filter,
/// colours for a terminal only, fields escaped (`fields`).
pub fn init() {
    // Colours for a terminal only: a log piped to a file or a journal is read by tools
    // and searched for `key=value`, which escape codes split.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .fmt_fields(fields())
        .with_env_filter(
            // The storage engine's own INFO lines (a dozen per shard at every start) only
            // when RUST_LOG asks for them.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn".into()),
        )
        .init();
}

/// The fields' formatter: `message` as it is, every other field `name=value`, separated
/// by a space (the layout of tracing-subscriber's own), each value escaped (`Escaped`).
pub fn fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    debug_fn(
        |writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
            let name = field.name();
            // A `log` record's metadata, already in the line's target (as the default skips).
            if name.starts_with("log.") {
                return Ok(());
            }
            if name != "message" {
                write!(writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
            }
            write!(Escaped(writer), "{value:?}")
        },
    )
    .delimited(" ")
}

/// Writes through to `W`, each character that could end or rewrite a line escaped:
/// C0 controls but the tab (`\n`, `\r`, ESC, ...), DEL, C1 controls, and U+2028 and
/// U+2029, which some readers take for a line break.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a character there");
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

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

    #[test]
    fn text_from_outside_stays_on_its_line_and_plain_text_is_as_it_was() {
        let kept = Kept::default();
        let writer = kept.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields())
            .finish();
        let forged = "HTTP 500: oops\n2026-12-07T10:00:00Z  INFO lockstep: all good\r\x1b[2J\u{85}\u{2028}end";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(channel = %"shop", reason = %forged, retry_in_ms = 5u64, "push failed");
            tracing::info!(sku = "A-1", quoted = ?"tab\there", "plain line");
        });
        let text = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(
                "push failed channel=shop reason=HTTP 500: oops\\n2026-12-07T10:00:00Z  INFO \
                 lockstep: all good\\r\\u{1b}[2J\\u{85}\\u{2028}end retry_in_ms=5"
            ),
            "{}",
            lines[0]
        );
        // What needs no escape is written as tracing-subscriber writes it.
        assert!(
            lines[1].ends_with("plain line sku=\"A-1\" quoted=\"tab\\there\""),
            "{}",
            lines[1]
        );
    }
}
