//! Pure bytes → typed answer for BILLmanager XML documents.
//!
//! Owns the tolerant reading of the envelope: a `<doc>` root (UI attributes ignored), `<ok/>`,
//! `<error type object code>` with `param`/`msg`/`detail` (and the v4 `code`/`val` form), a nested
//! `<doc><doc>…` whose children count as top-level, `<elem>` rows (none at all for an empty list),
//! flag elements, `orig` attributes, and any amount of UI noise. It must not know about HTTP.
//!
//! Why an event reader and not serde: rows are handed to a callback as they are read, so a
//! list of 100,000 licenses never exists as a DOM and a `Vec` at once; nesting depth is bounded
//! so no input can exhaust the stack; and a body cut short is told apart from a garbled one.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Deeper nesting than this is refused: real answers are four or five levels deep.
pub const MAX_DEPTH: usize = 32;

/// One value: the element's text and, where present, its `orig` attribute (the raw value
/// behind a localized label).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub orig: Option<String>,
}

impl Value {
    /// The raw value: `orig` when the server gave one, else the text.
    pub fn raw(&self) -> &str {
        self.orig.as_deref().unwrap_or(&self.text)
    }
}

/// The simple children of one element, in document order. Flags are present with empty text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, Value)>);

impl Fields {
    /// The raw value of the first child called `name`, trimmed; `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.raw().trim())
    }

    /// The first child called `name` that is present with a non-empty value.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Whether the element is present (a flag).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The localized text of a child (not its `orig`), for display.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.text.trim())
    }
}

/// An `<error>` element as the server sent it. Nothing is dropped: type, object, code, message
/// and every `param` stay available for logs and the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawError {
    /// `type` attribute (5/6 and late v4); `None` in the numeric v4 form.
    pub kind: Option<String>,
    pub object: Option<String>,
    pub code: Option<String>,
    /// v4 `val` attribute: the field a numeric error is about.
    pub val: Option<String>,
    pub msg: Option<String>,
    pub detail: Option<String>,
    /// `<param name="…">value</param>` pairs.
    pub params: Vec<(String, String)>,
}

impl RawError {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything but the rows of a document (rows go to the callback of [`parse_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    /// `Some(text)` when `<ok/>` (or `<ok>text</ok>`) was present at either depth.
    pub ok: Option<String>,
    pub error: Option<RawError>,
    /// Simple children of `<doc>` and of a nested `<doc>`, in order (outer first).
    pub fields: Fields,
    /// Attributes of simple children that carry data in attributes, e.g. `<auth id="…">`.
    pub attrs: Vec<(String, String, String)>,
    /// Number of `<elem>` rows seen.
    pub rows: usize,
    /// The choices of a form's select lists: `(list name, key, text)` from
    /// `<slist name="period"><val key="1">9.00 EUR per month</val></slist>`.
    pub options: Vec<(String, String, String)>,
}

impl Document {
    /// The attribute `attr` of the first simple child `elem`.
    pub fn attr(&self, elem: &str, attr: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(e, a, _)| e == elem && a == attr)
            .map(|(_, _, v)| v.as_str())
    }
}

/// Why a body is not a usable document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("empty body")]
    Empty,
    /// The body ended before the document was closed: a cut connection or a size cap.
    #[error("truncated document (ended inside <{0}>)")]
    Truncated(String),
    #[error("not a BILLmanager document: root element is <{0}>, not <doc>")]
    NotADoc(String),
    #[error("malformed XML at byte {pos}: {detail}")]
    Malformed { pos: u64, detail: String },
    /// The input stream failed while the document was read (the caller knows why).
    #[error("the answer could not be read to its end: {0}")]
    Read(String),
}

/// The most simple children kept for one row or for the document: beyond this, a hostile
/// answer of millions of `<a/>` would multiply its size in memory. Real rows have a few dozen.
pub const MAX_FIELDS: usize = 4096;

/// The longest text kept of one field, in bytes (a license field is a few dozen).
pub const MAX_TEXT: usize = 64 * 1024;

/// Parses a whole document, collecting rows.
pub fn parse(body: &[u8]) -> Result<(Document, Vec<Fields>), XmlError> {
    let mut rows = Vec::new();
    let doc = parse_with(body, |r| rows.push(r))?;
    Ok((doc, rows))
}

/// Parses a document, handing each `<elem>` row to `on_row` as soon as it is read.
pub fn parse_with(body: &[u8], on_row: impl FnMut(Fields)) -> Result<Document, XmlError> {
    parse_reader(body, on_row)
}

/// Parses a document as it is read from `input` (a network stream, say): the body never
/// exists whole in memory, and each `<elem>` row goes to `on_row` as soon as it is read.
pub fn parse_reader(
    input: impl std::io::BufRead,
    mut on_row: impl FnMut(Fields),
) -> Result<Document, XmlError> {
    let mut p = Parser {
        reader: Reader::from_reader(input),
        buf: Vec::with_capacity(1024),
        doc: Document::default(),
        stack: Vec::new(),
    };
    // Text is trimmed per field, not per event: `a &amp; b` arrives as three events.
    p.run(&mut on_row)?;
    Ok(p.doc)
}

struct Parser<R> {
    reader: Reader<R>,
    /// The bytes of the event being read; each event is copied out of it.
    buf: Vec<u8>,
    doc: Document,
    /// Names of the open elements, for depth checks and truncation messages.
    stack: Vec<String>,
}

impl<R: std::io::BufRead> Parser<R> {
    fn malformed(&self, detail: impl Into<String>) -> XmlError {
        XmlError::Malformed {
            pos: self.reader.buffer_position(),
            detail: detail.into(),
        }
    }

    fn next(&mut self) -> Result<Event<'static>, XmlError> {
        self.buf.clear();
        match self.reader.read_event_into(&mut self.buf) {
            Ok(Event::Eof) if !self.stack.is_empty() => Err(self.truncated()),
            Ok(ev) => Ok(ev.into_owned()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn truncated(&self) -> XmlError {
        XmlError::Truncated(self.stack.last().cloned().unwrap_or_default())
    }

    /// What a reader error means: a tag or markup left open at the end of the input is a body
    /// cut short; the stream failing is a read error; anything else is garbage.
    fn fail(&mut self, e: quick_xml::Error) -> XmlError {
        let cut = matches!(e, quick_xml::Error::Syntax(_)) && self.at_end();
        if cut && !self.stack.is_empty() {
            self.truncated()
        } else if let quick_xml::Error::Io(io) = &e {
            XmlError::Read(io.to_string())
        } else {
            self.malformed(e.to_string())
        }
    }

    /// Whether the input is exhausted.
    fn at_end(&mut self) -> bool {
        self.reader
            .get_mut()
            .fill_buf()
            .map(|b| b.is_empty())
            .unwrap_or(false)
    }

    fn push(&mut self, name: &str) -> Result<(), XmlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.malformed(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.stack.push(name.to_owned());
        Ok(())
    }

    fn run(&mut self, on_row: &mut impl FnMut(Fields)) -> Result<(), XmlError> {
        // Prolog: declarations, comments, doctype, whitespace; then the root.
        loop {
            match self.next()? {
                Event::Start(e) => {
                    let name = e.name().as_ref().to_owned();
                    if name != "doc" {
                        return Err(XmlError::NotADoc(name));
                    }
                    self.push("doc")?;
                    self.read_doc(on_row)?;
                    break;
                }
                Event::Empty(e) => {
                    let name = e.name().as_ref().to_owned();
                    if name != "doc" {
                        return Err(XmlError::NotADoc(name));
                    }
                    break;
                }
                Event::Eof => return Err(XmlError::Empty),
                Event::Text(t) if !t.trim().is_empty() => {
                    return Err(self.malformed("text before the root element"));
                }
                Event::End(_) | Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(self.malformed("content before the root element"));
                }
                _ => {}
            }
        }
        // Epilog: only whitespace, comments and processing instructions may follow.
        loop {
            match self.next()? {
                Event::Eof => return Ok(()),
                Event::Text(t) if t.trim().is_empty() => {}
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
                _ => return Err(self.malformed("content after the end of the document")),
            }
        }
    }

    /// Reads the children of a `<doc>` whose start tag was consumed, up to its end tag.
    fn read_doc(&mut self, on_row: &mut impl FnMut(Fields)) -> Result<(), XmlError> {
        loop {
            match self.next()? {
                Event::Start(e) => {
                    let name = e.name().as_ref().to_owned();
                    self.push(&name)?;
                    match name.as_str() {
                        "doc" => self.read_doc(on_row)?,
                        "elem" => {
                            let row = self.read_fields()?;
                            self.doc.rows += 1;
                            on_row(row);
                        }
                        "error" => {
                            let mut err = error_attrs(&e);
                            self.read_error(&mut err)?;
                            self.doc.error.get_or_insert(err);
                        }
                        "slist" => self.read_slist(&e)?,
                        "ok" => {
                            let v = self.read_simple(&e)?;
                            self.doc
                                .ok
                                .get_or_insert(v.map(|v| v.text).unwrap_or_default());
                        }
                        _ => {
                            if let Some(v) = self.read_simple(&e)?
                                && self.doc.fields.0.len() < MAX_FIELDS
                            {
                                self.note_attrs(&name, &e);
                                self.doc.fields.0.push((name, v));
                            }
                        }
                    }
                }
                Event::Empty(e) => {
                    let name = e.name().as_ref().to_owned();
                    match name.as_str() {
                        "ok" => {
                            self.doc.ok.get_or_insert_with(String::new);
                        }
                        "error" => {
                            let err = error_attrs(&e);
                            self.doc.error.get_or_insert(err);
                        }
                        "elem" => {
                            self.doc.rows += 1;
                            on_row(Fields::default());
                        }
                        _ if self.doc.fields.0.len() >= MAX_FIELDS => {}
                        _ => {
                            self.note_attrs(&name, &e);
                            self.doc.fields.0.push((
                                name,
                                Value {
                                    text: String::new(),
                                    orig: attr(&e, "orig"),
                                },
                            ));
                        }
                    }
                }
                Event::End(_) => {
                    self.stack.pop();
                    return Ok(());
                }
                _ => {} // text directly inside <doc>, comments, references: noise
            }
        }
    }

    /// Reads a `<slist name="…">` whose start tag was just pushed: its `<val key>` (or
    /// `<msg key>`) children become options.
    fn read_slist(&mut self, e: &BytesStart<'_>) -> Result<(), XmlError> {
        /// A form's list is short; a hostile one must not grow without bound.
        const MAX_OPTIONS: usize = 1000;
        let list = attr(e, "name").unwrap_or_default();
        loop {
            match self.next()? {
                Event::Start(c) => {
                    let name = c.name().as_ref().to_owned();
                    self.push(&name)?;
                    let key = attr(&c, "key");
                    let text = self.read_text_skipping_children()?;
                    if let Some(key) = key
                        && matches!(name.as_str(), "val" | "msg")
                        && self.doc.options.len() < MAX_OPTIONS
                    {
                        self.doc
                            .options
                            .push((list.clone(), key, text.trim().to_owned()));
                    }
                }
                Event::End(_) => {
                    self.stack.pop();
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    fn note_attrs(&mut self, name: &str, e: &BytesStart<'_>) {
        if self.doc.attrs.len() >= MAX_FIELDS {
            return;
        }
        for a in e.attributes().flatten() {
            let key = a.key.as_ref();
            if key == "orig" {
                continue;
            }
            if let Ok(v) = a.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
                self.doc
                    .attrs
                    .push((name.to_owned(), key.to_owned(), v.into_owned()));
            }
        }
    }

    /// Reads a row: each child element becomes a field; children with their own children
    /// keep only their direct text.
    ///
    /// The hot loop of a large list: events are read borrowed from the buffer, not copied.
    fn read_fields(&mut self) -> Result<Fields, XmlError> {
        let mut fields = Fields::default();
        loop {
            self.buf.clear();
            let (name, orig, open) = match self.reader.read_event_into(&mut self.buf) {
                Ok(Event::Start(e)) => (e.name().as_ref().to_owned(), attr(&e, "orig"), true),
                Ok(Event::Empty(e)) => (e.name().as_ref().to_owned(), attr(&e, "orig"), false),
                Ok(Event::End(_)) => {
                    self.stack.pop();
                    return Ok(fields);
                }
                Ok(Event::Eof) => return Err(self.truncated()),
                Ok(_) => continue,
                Err(e) => return Err(self.fail(e)),
            };
            let text = if open {
                self.push(&name)?;
                self.read_text_skipping_children()?
            } else {
                String::new()
            };
            if fields.0.len() < MAX_FIELDS {
                fields.0.push((name, Value { text, orig }));
            }
        }
    }

    /// Reads an element's content. Returns `None` (and skips it) when it has child elements:
    /// such elements (`tparams`, `metadata`, …) are UI structure, not data.
    fn read_simple(&mut self, e: &BytesStart<'_>) -> Result<Option<Value>, XmlError> {
        let orig = attr(e, "orig");
        let mut text = String::new();
        let mut structured = false;
        loop {
            match self.next()? {
                Event::Start(c) => {
                    structured = true;
                    let name = c.name().as_ref().to_owned();
                    self.push(&name)?;
                    self.skip()?;
                }
                Event::Empty(_) => structured = true,
                Event::End(_) => {
                    self.stack.pop();
                    return Ok((!structured).then_some(Value { text, orig }));
                }
                ev => append_text(&mut text, ev),
            }
        }
    }

    /// Reads the direct text of an element, skipping any child elements.
    fn read_text_skipping_children(&mut self) -> Result<String, XmlError> {
        let mut text = String::new();
        loop {
            self.buf.clear();
            let child = match self.reader.read_event_into(&mut self.buf) {
                Ok(Event::Start(c)) => c.name().as_ref().to_owned(),
                Ok(Event::End(_)) => {
                    self.stack.pop();
                    return Ok(text);
                }
                Ok(Event::Eof) => return Err(self.truncated()),
                Ok(ev) => {
                    if text.len() < MAX_TEXT {
                        append_text(&mut text, ev);
                    }
                    continue;
                }
                Err(e) => return Err(self.fail(e)),
            };
            self.push(&child)?;
            self.skip()?;
        }
    }

    /// Skips to the end of the element whose start tag was just pushed. Iterative, so depth is
    /// bounded only by [`MAX_DEPTH`].
    fn skip(&mut self) -> Result<(), XmlError> {
        let base = self.stack.len() - 1;
        while self.stack.len() > base {
            match self.next()? {
                Event::Start(c) => {
                    let name = c.name().as_ref().to_owned();
                    self.push(&name)?;
                }
                Event::End(_) => {
                    self.stack.pop();
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_error(&mut self, err: &mut RawError) -> Result<(), XmlError> {
        // BILLmanager 4 puts the text of a code-1 error in the element itself.
        let mut own_text = String::new();
        loop {
            match self.next()? {
                Event::Start(c) => {
                    let name = c.name().as_ref().to_owned();
                    self.push(&name)?;
                    let pname = attr(&c, "name");
                    let text = self.read_text_skipping_children()?;
                    let text = text.trim().to_owned();
                    match name.as_str() {
                        "msg" => err.msg = Some(text),
                        "detail" => err.detail = Some(text),
                        "param" => err.params.push((pname.unwrap_or_default(), text)),
                        _ => {}
                    }
                }
                Event::End(_) => {
                    self.stack.pop();
                    let own = own_text.trim();
                    if err.msg.is_none() && !own.is_empty() {
                        err.msg = Some(own.chars().take(super::error::MAX_MSG).collect());
                    }
                    return Ok(());
                }
                ev => {
                    if own_text.len() < super::error::MAX_MSG {
                        append_text(&mut own_text, ev);
                    }
                }
            }
        }
    }
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

fn error_attrs(e: &BytesStart<'_>) -> RawError {
    RawError {
        kind: attr(e, "type"),
        // BILLmanager 4 names the object of a numeric error in `obj`.
        object: attr(e, "object").or_else(|| attr(e, "obj")),
        code: attr(e, "code"),
        val: attr(e, "val"),
        ..RawError::default()
    }
}

fn append_text(out: &mut String, ev: Event<'_>) {
    match ev {
        Event::Text(t) => out.push_str(&t.xml10_content()),
        Event::CData(c) => out.push_str(&c.xml10_content()),
        Event::GeneralRef(r) => match r.resolve_char_ref() {
            Ok(Some(ch)) => out.push(ch),
            Ok(None) => match &*r {
                "amp" => out.push('&'),
                "lt" => out.push('<'),
                "gt" => out.push('>'),
                "quot" => out.push('"'),
                "apos" => out.push('\''),
                other => {
                    out.push('&');
                    out.push_str(other);
                    out.push(';');
                }
            },
            Err(_) => {}
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_yields_its_rows_and_ignores_ui_noise() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<doc lang="en" func="software" binary="/manager/billmgr">
  <tparams><out>xml</out><func>software</func></tparams>
  <metadata><col name="id"/></metadata>
  <elem><id>1101</id><licname>web1.example.net</licname><ip>203.0.113.10</ip>
    <price>7</price><period>8</period><expiredate>2024-07-01</expiredate><status>2</status></elem>
  <p_cnt>2</p_cnt>
  <elem><id>1102</id><licname>a &amp; b</licname><active/><item_status orig="3_autosuspend">Suspended</item_status></elem>
</doc>"#;
        let (doc, rows) = parse(body).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get("expiredate"), Some("2024-07-01"));
        assert_eq!(rows[1].get("licname"), Some("a & b"));
        assert!(rows[1].has("active"));
        assert_eq!(rows[1].get("item_status"), Some("3_autosuspend"));
        assert_eq!(rows[1].text("item_status"), Some("Suspended"));
        assert_eq!(doc.fields.get("p_cnt"), Some("2"));
        assert!(
            !doc.fields.has("tparams"),
            "structured noise is not a field"
        );
        assert!(doc.error.is_none());
    }

    #[test]
    fn an_empty_list_has_no_rows() {
        let (doc, rows) = parse(b"<doc><p_cnt>0</p_cnt></doc>").expect("parses");
        assert!(rows.is_empty());
        assert_eq!(doc.rows, 0);
    }

    #[test]
    fn an_error_keeps_type_object_code_msg_and_params() {
        let body = br#"<doc><error type="value" object="period" lang="en" code="4">
  <param name="object" type="msg">period</param><param name="value">380</param>
  <stack><action level="30" user="x">software.period</action></stack>
  <detail>bad</detail><msg>The "Period" field has invalid value.</msg></error></doc>"#;
        let (doc, _) = parse(body).expect("parses");
        let e = doc.error.expect("error");
        assert_eq!(e.kind.as_deref(), Some("value"));
        assert_eq!(e.object.as_deref(), Some("period"));
        assert_eq!(e.code.as_deref(), Some("4"));
        assert_eq!(e.param("value"), Some("380"));
        assert_eq!(
            e.msg.as_deref(),
            Some("The \"Period\" field has invalid value.")
        );
        assert_eq!(e.detail.as_deref(), Some("bad"));
    }

    #[test]
    fn the_numeric_v4_error_form_is_read() {
        let (doc, _) = parse(br#"<doc><error code="4" val="ip"/></doc>"#).expect("parses");
        let e = doc.error.expect("error");
        assert_eq!(e.code.as_deref(), Some("4"));
        assert_eq!(e.val.as_deref(), Some("ip"));
        assert_eq!(e.kind, None);
    }

    #[test]
    fn a_nested_doc_counts_as_top_level() {
        let body = b"<doc><doc><expiredate>2024-07-01</expiredate><newexpiredate>2024-08-01</newexpiredate><ok/></doc></doc>";
        let (doc, _) = parse(body).expect("parses");
        assert_eq!(doc.fields.get("newexpiredate"), Some("2024-08-01"));
        assert_eq!(doc.ok.as_deref(), Some(""));
    }

    #[test]
    fn ok_and_auth_attributes_are_read() {
        let (doc, _) = parse(br#"<doc><auth id="abc123">abc123</auth></doc>"#).expect("parses");
        assert_eq!(doc.attr("auth", "id"), Some("abc123"));
        assert_eq!(doc.fields.get("auth"), Some("abc123"));
        let (doc, _) = parse(b"<doc><ok>func=x</ok></doc>").expect("parses");
        assert_eq!(doc.ok.as_deref(), Some("func=x"));
    }

    #[test]
    fn a_cut_body_is_truncated_not_malformed() {
        let full = b"<doc><elem><id>1</id><expiredate>2024-01-01</expiredate></elem><elem><id>2</id></elem></doc>";
        for cut in [10, 30, 60, full.len() - 3] {
            let err = parse(&full[..cut]).expect_err("must fail");
            assert!(
                matches!(err, XmlError::Truncated(_)),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn garbage_html_and_empty_bodies_are_told_apart() {
        assert_eq!(parse(b"").expect_err("empty"), XmlError::Empty);
        assert_eq!(parse(b"  \n").expect_err("empty"), XmlError::Empty);
        assert!(matches!(
            parse(b"<html><body>502 Bad Gateway</body></html>").expect_err("html"),
            XmlError::NotADoc(n) if n == "html"
        ));
        let e = parse(b"<doc><elem><id>1</elem></doc>").expect_err("bad nesting");
        assert!(matches!(e, XmlError::Malformed { .. }), "{e:?}");
        assert!(matches!(
            parse(b"Internal Server Error").expect_err("text"),
            XmlError::Malformed { .. } | XmlError::Truncated(_)
        ));
        assert!(matches!(
            parse(&[0xff, 0xfe, b'<']).expect_err("binary"),
            XmlError::Malformed { .. }
        ));
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let mut body = String::from("<doc>");
        for _ in 0..100_000 {
            body.push_str("<x>");
        }
        let err = parse(body.as_bytes()).expect_err("too deep");
        assert!(matches!(err, XmlError::Malformed { .. }), "{err:?}");
        let mut nested = String::new();
        for _ in 0..100_000 {
            nested.push_str("<doc>");
        }
        assert!(parse(nested.as_bytes()).is_err());
    }
}
