//! The one redaction point for text that comes from a server answer.
//!
//! Owns the list of secrets an answer may echo back (the password, `username:password`, the
//! session id) in every spelling a server could use (as sent, URL-encoded, XML-escaped), and
//! the function that blanks them out. The client passes every field, attribute, option, error
//! and parser message of every answer through it before anything else sees them, so nothing
//! downstream (logs, the database, stdout, alerts) can carry a secret the server echoed. Must
//! not log what it redacts.

use aho_corasick::{AhoCorasick, MatchKind};
use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Blanks out known secrets. Cheap to ask (one automaton over all spellings).
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
}

/// The spellings of `secret` a server might echo: as is, form/URL-encoded (`+` and `%20` for a
/// space), and XML-escaped.
fn spellings(secret: &str, out: &mut Vec<String>) {
    if secret.is_empty() {
        return;
    }
    out.push(secret.to_owned());
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    out.push(form.replace('+', "%20"));
    out.push(form);
    let xml = secret
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;");
    out.push(xml);
}

impl Redactor {
    /// A redactor for these secrets (empty ones are ignored). Longer spellings win, so
    /// `user:pass` is blanked whole rather than leaving `user:`.
    pub fn new(secrets: &[&str]) -> Redactor {
        let mut needles = Vec::new();
        for s in secrets {
            spellings(s, &mut needles);
        }
        needles.sort();
        needles.dedup();
        needles.retain(|n| !n.is_empty());
        let matcher = (!needles.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&needles)
                    .ok()
            })
            .flatten();
        Redactor { matcher }
    }

    /// The text with every secret replaced by [`REDACTED`]; borrowed when there was none.
    pub fn clean<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => Cow::Owned(replace(m, text)),
            _ => Cow::Borrowed(text),
        }
    }

    /// [`Redactor::clean`] in place.
    pub fn clean_in_place(&self, text: &mut String) {
        if let Some(m) = &self.matcher
            && m.is_match(text.as_str())
        {
            *text = replace(m, text);
        }
    }

    pub fn clean_opt(&self, text: &mut Option<String>) {
        if let Some(t) = text.as_mut() {
            self.clean_in_place(t);
        }
    }
}

fn replace(m: &AhoCorasick, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    m.replace_all_with(text, &mut out, |_, _, dst| {
        dst.push_str(REDACTED);
        true
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_every_secret_is_blanked_and_the_rest_is_kept() {
        let r = Redactor::new(&["p&w d<x>", "reseller:p&w d<x>", "", "sid123"]);

        let cases = [
            ("plain p&w d<x> here", "plain [redacted] here"),
            ("authinfo=reseller:p&w d<x>", "authinfo=[redacted]"),
            ("form p%26w+d%3Cx%3E end", "form [redacted] end"),
            ("url p%26w%20d%3Cx%3E end", "url [redacted] end"),
            ("xml p&amp;w d&lt;x&gt; end", "xml [redacted] end"),
            ("session sid123", "session [redacted]"),
            ("nothing secret", "nothing secret"),
        ];
        for (input, want) in cases {
            assert_eq!(r.clean(input), want, "{input}");
        }
        assert!(matches!(r.clean("clean"), Cow::Borrowed(_)));
        let none = Redactor::new(&[""]);
        assert_eq!(none.clean("p&w d<x>"), "p&w d<x>");
    }
}
