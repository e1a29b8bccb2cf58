//! XML *generation* for the simulator: the `<doc>` envelope, rows, error documents.
//!
//! Owns: turning simulator answers into BILLmanager-shaped bytes, with every text and
//! attribute escaped and characters that XML 1.0 forbids replaced, so a hostile `licname`
//! can never break the document. Must not: parse XML (the simulator never reads XML, so it
//! cannot share a parsing bug with the client) or know about HTTP.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::SimApi;

/// The `host` a BILLmanager 5/6 root element names (UI noise; the simulator's own address is
/// not known to the state, and a client must ignore the attribute anyway).
pub(crate) const V5_HOST: &str = "https://billing.example.invalid";

/// Escapes `s` for use as element text or a double-quoted attribute value.
pub(crate) fn esc(s: &str) -> Cow<'_, str> {
    if s.chars().all(is_xml_char) {
        quick_xml::escape::escape(s)
    } else {
        let cleaned: String = s
            .chars()
            .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
            .collect();
        Cow::Owned(quick_xml::escape::escape(cleaned.as_str()).into_owned())
    }
}

/// Characters allowed in an XML 1.0 document.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A `<doc>` being written into one growing `String` (lists of 100,000 rows stay one buffer).
pub(crate) struct Doc {
    buf: String,
    /// Written just before `</doc>` (the 5/6 `<tparams>` come last).
    tail: String,
}

impl Doc {
    /// Opens `<doc>` with the UI attributes and the `<tparams>` echo a real server adds.
    /// `username` is echoed only when the caller is authenticated; passwords, `authinfo` and
    /// session ids are never echoed.
    pub(crate) fn open(func: &str, username: Option<&str>, capacity: usize) -> Doc {
        let mut buf = String::with_capacity(capacity.max(256));
        buf.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = write!(
            buf,
            "<doc lang=\"en\" func=\"{}\" binary=\"billmgr\">",
            esc(func)
        );
        buf.push_str("<tparams><out>xml</out>");
        let _ = write!(buf, "<func>{}</func>", esc(func));
        if let Some(u) = username {
            let _ = write!(buf, "<username>{}</username>", esc(u));
        }
        buf.push_str("</tparams>");
        Doc {
            buf,
            tail: String::new(),
        }
    }

    /// Opens a BILLmanager 5/6 `<doc>`: the root decorated with `lang`, `func`, `binary`,
    /// `host` and `theme`, and a `<tparams>` echo of `echo` (request parameters the caller
    /// picked: never `authinfo`, `password` or `auth`) plus `username`, written last.
    /// Every `echo` key must be a literal tag name.
    pub(crate) fn open_v5(
        func: &str,
        username: Option<&str>,
        echo: &[(&str, &str)],
        capacity: usize,
    ) -> Doc {
        let mut buf = String::with_capacity(capacity.max(512));
        buf.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = write!(
            buf,
            "<doc lang=\"en\" func=\"{}\" binary=\"/billmgr\" host=\"{V5_HOST}\" theme=\"orion\" \
             css=\"main.css\" features=\"d7ce6a0b91e7e2a5\" notify=\"\" level=\"16\">",
            esc(func)
        );
        let mut tail = String::from("<tparams>");
        for (k, v) in echo {
            let _ = write!(tail, "<{k}>{}</{k}>", esc(v));
        }
        if let Some(u) = username {
            let _ = write!(tail, "<username>{}</username>", esc(u));
        }
        tail.push_str("</tparams>");
        Doc { buf, tail }
    }

    /// [`Doc::open`] or [`Doc::open_v5`] by API generation (`echo` is ignored for v4).
    pub(crate) fn open_for(
        api: SimApi,
        func: &str,
        username: Option<&str>,
        echo: &[(&str, &str)],
        capacity: usize,
    ) -> Doc {
        match api {
            SimApi::Billmgr4 => Doc::open(func, username, capacity),
            SimApi::Billmgr5 => Doc::open_v5(func, username, echo, capacity),
        }
    }

    /// `<name>text</name>`; `name` must be a literal tag name.
    pub(crate) fn field(&mut self, name: &str, text: impl std::fmt::Display) -> &mut Self {
        let text = text.to_string();
        let _ = write!(self.buf, "<{name}>{}</{name}>", esc(&text));
        self
    }

    /// Trusted markup written as is (only literals from this module's callers).
    pub(crate) fn raw(&mut self, markup: &str) -> &mut Self {
        self.buf.push_str(markup);
        self
    }

    /// `<ok/>`.
    pub(crate) fn ok(&mut self) -> &mut Self {
        self.raw("<ok/>")
    }

    /// Closes the document.
    pub(crate) fn finish(mut self) -> String {
        self.buf.push_str(&self.tail);
        self.buf.push_str("</doc>\n");
        self.buf
    }

    /// Mutable access for row writers that format many fields in one go.
    pub(crate) fn buf(&mut self) -> &mut String {
        &mut self.buf
    }
}

/// A BILLmanager `<error>`: `type`, optional `object`, optional `value` param and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) kind: String,
    pub(crate) object: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) msg: String,
    /// Extra attributes some errors carry (`code="1"` on the bad-password answer).
    pub(crate) code: Option<String>,
}

impl ApiError {
    pub(crate) fn new(
        kind: &str,
        object: Option<&str>,
        value: Option<&str>,
        msg: impl Into<String>,
    ) -> ApiError {
        ApiError {
            kind: kind.to_owned(),
            object: object.map(str::to_owned),
            value: value.map(str::to_owned),
            msg: msg.into(),
            code: None,
        }
    }

    /// The answer to an expired, unknown or missing session or credentials.
    pub(crate) fn access() -> ApiError {
        ApiError::new(
            "access",
            None,
            None,
            "Insufficient privileges to perform this function",
        )
    }

    /// `type="missed"` for an object that does not exist.
    pub(crate) fn missed(object: &str, value: &str) -> ApiError {
        let msg = match object {
            "func" => format!("Function '{value}' not found"),
            _ => format!("The object '{value}' of type '{object}' is missing"),
        };
        ApiError::new("missed", Some(object), Some(value), msg)
    }

    /// `type="value"` for a field with an invalid value.
    pub(crate) fn value(object: &str, value: &str) -> ApiError {
        let label = match object {
            "period" => "Period",
            "price" => "Product",
            "ip" => "IP address",
            "licname" => "License name",
            "expires" => "Expires from",
            "expiree" => "Expires to",
            other => other,
        };
        ApiError::new(
            "value",
            Some(object),
            Some(value),
            format!("The \"{label}\" field has invalid value."),
        )
    }

    /// Writes the `<error>` element into `doc`.
    pub(crate) fn write_into(&self, doc: &mut Doc) {
        let b = doc.buf();
        // An empty type is written as no `type` at all: real answers without one exist (the
        // "Request in process, please wait" refusal of a busy server).
        b.push_str("<error");
        if !self.kind.is_empty() {
            let _ = write!(b, " type=\"{}\"", esc(&self.kind));
        }
        if let Some(o) = &self.object {
            let _ = write!(b, " object=\"{}\"", esc(o));
        }
        b.push_str(" lang=\"en\"");
        if let Some(c) = &self.code {
            let _ = write!(b, " code=\"{}\"", esc(c));
        }
        b.push('>');
        if let Some(o) = &self.object {
            let _ = write!(b, "<param name=\"object\" type=\"msg\">{}</param>", esc(o));
        }
        if let Some(v) = &self.value {
            let _ = write!(b, "<param name=\"value\">{}</param>", esc(v));
        }
        if self.kind == "auth" {
            let _ = write!(b, "<detail>{}</detail>", esc(&self.msg));
        }
        let _ = write!(b, "<msg>{}</msg></error>", esc(&self.msg));
    }

    /// A whole error document in the envelope of `api`.
    pub(crate) fn to_doc_for(
        &self,
        api: SimApi,
        func: &str,
        username: Option<&str>,
        echo: &[(&str, &str)],
    ) -> String {
        let mut d = Doc::open_for(api, func, username, echo, 512);
        self.write_into(&mut d);
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut d = Doc::open("a\"<b>&", Some("<me>"), 0);
        d.field("licname", "x<y>&'\"z");
        let s = d.finish();
        assert!(s.contains("func=\"a&quot;&lt;b&gt;&amp;\""), "{s}");
        assert!(s.contains("<username>&lt;me&gt;</username>"), "{s}");
        assert!(
            s.contains("<licname>x&lt;y&gt;&amp;&apos;&quot;z</licname>"),
            "{s}"
        );
    }

    #[test]
    fn a_v5_doc_is_decorated_and_echoes_tparams_last() {
        let mut d = Doc::open_v5(
            "soft",
            Some("demo"),
            &[("p_num", "2"), ("licname", "<x>")],
            0,
        );
        d.field("id", 1);
        let s = d.finish();
        assert!(
            s.contains("<doc lang=\"en\" func=\"soft\" binary=\"/billmgr\" host=\""),
            "{s}"
        );
        assert!(s.contains("theme=\""), "{s}");
        assert!(
            s.ends_with(
                "<id>1</id><tparams><p_num>2</p_num><licname>&lt;x&gt;</licname>\
                 <username>demo</username></tparams></doc>\n"
            ),
            "{s}"
        );
    }

    #[test]
    fn characters_xml_forbids_are_replaced() {
        assert_eq!(esc("a\u{0}b\u{1b}c"), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(esc("tab\tok"), "tab\tok");
    }

    #[test]
    fn an_error_document_carries_type_object_value_and_msg() {
        let s = ApiError::value("period", "380").to_doc_for(
            SimApi::Billmgr4,
            "software.period",
            Some("demo"),
            &[],
        );
        assert!(
            s.contains("<error type=\"value\" object=\"period\" lang=\"en\">"),
            "{s}"
        );
        assert!(s.contains("<param name=\"value\">380</param>"), "{s}");
        assert!(
            s.contains("<msg>The &quot;Period&quot; field has invalid value.</msg>"),
            "{s}"
        );
        assert!(s.starts_with("<?xml"));
        assert!(s.trim_end().ends_with("</doc>"));
    }
}
