//! Logging on standard error, with no email address in any line at any level: every formatted
//! line passes through [`RedactEmails`], which replaces anything shaped like an address with a
//! short digest of it (`email-sha256:…`). Addresses reach logs by routes no field list can
//! follow (a provider's error message, an API server's denial quoting a value), so they are
//! removed where every line goes out rather than at each macro; the digest still lets one line
//! be matched with another, or with an address someone asks about.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// The log filter without `RUST_LOG`: `info`, less kube's own line for every failed API call
/// (`kube_client::client::builder: failed with status 500`, at ERROR and without the object),
/// which our own WARN line already reports with the object's name and the API server's message.
pub const DEFAULT_LOG_FILTER: &str = "info,kube_client::client::builder=off";

/// Initialises logging on standard error: `RUST_LOG` filters, default [`DEFAULT_LOG_FILTER`].
/// Text is coloured only when standard error is a terminal (and `NO_COLOR` is unset), so log
/// files and collectors never get escape codes. Email addresses are redacted.
pub fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(RedactEmails(std::io::stderr));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A [`MakeWriter`] whose writers redact email addresses from what they are given. The
/// formatter hands each event over whole, so an address is never split between two writes.
#[derive(Clone, Copy, Debug)]
pub struct RedactEmails<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactEmails<M> {
    type Writer = Redacting<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting(self.0.make_writer())
    }
}

/// A writer that redacts email addresses (see [`redact`]).
#[derive(Debug)]
pub struct Redacting<W>(W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match redact(buf) {
            None => self.0.write_all(buf)?,
            Some(redacted) => self.0.write_all(&redacted)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b)
}

fn domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// `text` with every email address replaced by `email-sha256:<16 hex digits>` (a digest of the
/// address in lower case); `None` when there is none. An address is a local part and a domain
/// with at least one dot, as mail systems write them; a Kubernetes name never has an `@`.
pub fn redact(text: &[u8]) -> Option<Vec<u8>> {
    let mut at = memchr_at(text, 0)?;
    let mut out = Vec::new();
    let mut copied = 0;
    loop {
        let start = (0..at)
            .rev()
            .take_while(|&i| local_byte(text[i]))
            .last()
            .unwrap_or(at);
        let mut end = (at + 1..text.len())
            .take_while(|&i| domain_byte(text[i]))
            .last()
            .map_or(at + 1, |i| i + 1);
        while end > at + 1 && matches!(text[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[at + 1..end];
        let dotted = domain
            .iter()
            .position(|b| *b == b'.')
            .is_some_and(|dot| dot > 0 && dot + 1 < domain.len());
        if start < at && dotted {
            out.extend_from_slice(&text[copied..start]);
            let address = text[start..end].to_ascii_lowercase();
            let sum = ring::digest::digest(&ring::digest::SHA256, &address);
            out.extend_from_slice(b"email-sha256:");
            for byte in &sum.as_ref()[..8] {
                out.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
            copied = end;
        }
        match memchr_at(text, end.max(at + 1)) {
            Some(next) => at = next,
            None => break,
        }
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&text[copied..]);
    Some(out)
}

fn memchr_at(text: &[u8], from: usize) -> Option<usize> {
    text.get(from..)?
        .iter()
        .position(|b| *b == b'@')
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn redacted(text: &str) -> String {
        String::from_utf8(redact(text.as_bytes()).unwrap_or_else(|| text.as_bytes().to_vec()))
            .unwrap()
    }

    #[test]
    fn addresses_become_digests_and_nothing_else_changes() {
        let line = redacted("to Ada.Lovelace+news@Example.COM and bob@mail.example.org.");
        assert!(!line.contains('@'), "{line}");
        assert!(line.starts_with("to email-sha256:"), "{line}");
        assert_eq!(line.matches(" and email-sha256:").count(), 1, "{line}");
        assert!(
            line.ends_with('.'),
            "the sentence's full stop stays: {line}"
        );
        // The digest is of the lower-cased address: the same person reads the same.
        assert_eq!(
            redacted("ada@example.com"),
            redacted("ADA@Example.com"),
            "case-insensitive"
        );
        assert_ne!(redacted("ada@example.com"), redacted("bob@example.com"));
        assert_eq!(
            redacted("ada@example.com").len(),
            "email-sha256:".len() + 16
        );
        for untouched in [
            "no address here",
            "user@localhost",
            "@example.com",
            "a@b.",
            "x @ y.z",
        ] {
            assert_eq!(redact(untouched.as_bytes()), None, "{untouched}");
        }
        let json = redacted(r#"{"message":"invalid: \"ada@example.com\"","to":"bob@example.org"}"#);
        assert!(!json.contains("example"), "{json}");
        assert!(
            json.starts_with(r#"{"message":"invalid: \"email-sha256:"#),
            "{json}"
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `init_logging` sets up, at every level and in both formats: no address in any line.
    #[test]
    fn no_log_line_carries_an_email_address() {
        for json in [false, true] {
            let captured = Captured::default();
            let sink = captured.clone();
            let builder = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(RedactEmails(move || sink.clone()));
            let log = || {
                let error = "422: spec.email: Duplicate value: \"ada@example.com\"";
                tracing::trace!(to = "ada@example.com", "sending");
                tracing::debug!(%error, "refused");
                tracing::info!("delivered to Ada <ada@example.com>");
                tracing::warn!(error, "not delivered");
                tracing::error!(contacts = ?["ada@example.com", "bob@example.org"], "failed");
            };
            if json {
                tracing::subscriber::with_default(builder.json().finish(), log);
            } else {
                tracing::subscriber::with_default(builder.finish(), log);
            }
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert_eq!(text.lines().count(), 5, "{text}");
            assert!(!text.contains("example.com"), "{text}");
            assert!(!text.contains("example.org"), "{text}");
            assert_eq!(text.matches("email-sha256:").count(), 6, "{text}");
        }
    }
}
