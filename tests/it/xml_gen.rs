//! A generator of hostile BILLmanager answers for the XML parser, shared by the property test
//! (`xml_fuzz`, a few hundred cases in `cargo test`) and the time-boxed fuzz run
//! (`benches/fuzz_xml.rs`, which includes this file by path). No `crate::` imports here.
//!
//! Three sources: arbitrary bytes; a soup of XML tokens; and real answers (a list, a view,
//! `<ok/>`, both error forms, a login, a nested prolong answer, an HTML page) mutated one to
//! six times: cut, a range duplicated or swapped, a byte flipped, a hostile piece injected
//! (tags, entities, CDATA, comments, DOCTYPEs, invalid UTF-8), deep nesting, a huge attribute,
//! or an error whose `__placeholders__` multiply when filled.

#![allow(dead_code)]

use licrenew::billmgr::ApiError;
use licrenew::billmgr::dialect::Dialect;
use licrenew::config::Api;
use proptest::prelude::*;

/// Real answers, shaped as the API guide and the simulator shape them.
pub const SEEDS: &[&str] = &[
    r#"<?xml version="1.0" encoding="UTF-8"?>
<doc lang="en" func="software" binary="/manager/billmgr"><tparams><out>xml</out><func>software</func><username>reseller</username></tparams>
<metadata name="software" type="list" key="id"><coldata><col name="licname" type="data" sort="alpha"/></coldata></metadata>
<elem><id>1101</id><licname>web1.example.net</licname><ip>203.0.113.10</ip><price>7</price><period>8</period><expiredate>2024-07-01</expiredate><status>2</status></elem>
<p_cnt>1000</p_cnt>
<elem><id>1102</id><licname>a &amp; b</licname><ip>203.0.113.11</ip><price>11</price><period>15</period><expiredate>2024-06-20</expiredate><status>3</status><item_status orig="3_autosuspend">Suspended</item_status><active/></elem>
<p_elems>2</p_elems></doc>"#,
    r#"<?xml version="1.0" encoding="UTF-8"?>
<doc lang="en" func="software.edit"><tparams><out>xml</out></tparams><id>1101</id><licname>web1</licname><ip>203.0.113.10</ip><price>7</price><period>8</period><expiredate>2024-07-01</expiredate><status>2</status></doc>"#,
    "<doc><ok/></doc>",
    r#"<doc><error type="value" object="period" lang="en" code="4">
  <param name="object" type="msg">period</param><param name="value">380</param>
  <stack><action level="30" user="x">software.period</action></stack>
  <detail>bad</detail><msg>The "__object__" field has invalid value __value__.</msg></error></doc>"#,
    r#"<doc><error code="4" val="ip"/></doc>"#,
    r#"<doc><error type="auth" object="badpassword" lang="en" code="1"><param name="object" type="msg">badpassword</param><detail>Invalid username or password</detail><msg>Invalid username or password</msg></error></doc>"#,
    r#"<doc><auth id="0123456789abcdef" level="16">0123456789abcdef</auth></doc>"#,
    "<doc><doc><expiredate>2024-07-01</expiredate><newexpiredate>2024-08-01</newexpiredate><ok/></doc></doc>",
    "<doc><ok/><id>4242</id></doc>",
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>",
];

/// Pieces a mutation injects.
pub const PIECES: &[&[u8]] = &[
    b"<elem>",
    b"</elem>",
    b"<doc>",
    b"</doc>",
    b"<ok/>",
    b"<ok>",
    b"<error type=\"x\">",
    b"</error>",
    b"<error/>",
    b"<param name=\"value\">",
    b"</param>",
    b"<expiredate>2024-02-30</expiredate>",
    b"<expiredate>",
    b"<id>-9223372036854775809</id>",
    b"<id>\xd9\xa1</id>",
    b"<status>5_processing</status>",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?xml version=\"1.0\"?>",
    b"<?pi stuff?>",
    b"<!DOCTYPE doc [<!ENTITY a \"&b;&b;&b;&b;\"><!ENTITY b \"&c;&c;&c;\">]>",
    b"&amp;",
    b"&lt;&gt;&quot;&apos;",
    b"&#0;",
    b"&#x0;",
    b"&#xD800;",
    b"&#1114112;",
    b"&#xFFFFFFFFFF;",
    b"&unknown;",
    b"&a;",
    b"&",
    b"<",
    b">",
    b"\"",
    b" orig=\"",
    b" a=\"1\" a=\"2\"",
    b"\x00",
    b"\x80",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf0\x28\x8c\xbc",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"</",
    b"<a:b xmlns:a=\"u\">",
    b"<elem><elem><elem>",
];

/// One change to a document; positions are taken modulo its length when applied.
#[derive(Clone, Debug)]
pub enum Mutation {
    Cut(u32),
    Duplicate { from: u32, len: u16, to: u32 },
    Swap { a: u32, b: u32, len: u16 },
    Flip { at: u32, byte: u8 },
    Insert { at: u32, piece: usize },
    Nest { at: u32, depth: u16, close: bool },
    HugeAttr { at: u32, len: u32 },
    Placeholders { copies: u16, value_len: u16 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<u32>().prop_map(Mutation::Cut),
        2 => (any::<u32>(), any::<u16>(), any::<u32>())
            .prop_map(|(from, len, to)| Mutation::Duplicate { from, len: len % 512, to }),
        2 => (any::<u32>(), any::<u32>(), any::<u16>())
            .prop_map(|(a, b, len)| Mutation::Swap { a, b, len: len % 64 + 1 }),
        3 => (any::<u32>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        4 => (any::<u32>(), 0..PIECES.len()).prop_map(|(at, piece)| Mutation::Insert { at, piece }),
        1 => (any::<u32>(), 1u16..2000, any::<bool>())
            .prop_map(|(at, depth, close)| Mutation::Nest { at, depth, close }),
        1 => (any::<u32>(), 1u32..200_000).prop_map(|(at, len)| Mutation::HugeAttr { at, len }),
        1 => (1u16..2000, 1u16..2000)
            .prop_map(|(copies, value_len)| Mutation::Placeholders { copies, value_len }),
    ]
}

fn pos(at: u32, len: usize) -> usize {
    if len == 0 { 0 } else { at as usize % (len + 1) }
}

/// Applies one mutation.
pub fn apply(doc: &mut Vec<u8>, m: &Mutation) {
    let n = doc.len();
    match *m {
        Mutation::Cut(at) => doc.truncate(pos(at, n)),
        Mutation::Duplicate { from, len, to } => {
            let a = pos(from, n);
            let b = (a + len as usize).min(n);
            let piece = doc[a..b].to_vec();
            let at = pos(to, n);
            doc.splice(at..at, piece);
        }
        Mutation::Swap { a, b, len } => {
            if n < 2 {
                return;
            }
            let len = (len as usize).min(n / 2);
            let (x, y) = (pos(a, n - len), pos(b, n - len));
            let (x, y) = (x.min(y), x.max(y));
            if x + len <= y {
                for i in 0..len {
                    doc.swap(x + i, y + i);
                }
            }
        }
        Mutation::Flip { at, byte } => {
            if n > 0 {
                let i = at as usize % n;
                doc[i] = byte;
            }
        }
        Mutation::Insert { at, piece } => {
            let at = pos(at, n);
            doc.splice(at..at, PIECES[piece].iter().copied());
        }
        Mutation::Nest { at, depth, close } => {
            let at = pos(at, n);
            let mut piece = b"<x>".repeat(depth as usize);
            if close {
                piece.extend(b"</x>".repeat(depth as usize));
            }
            doc.splice(at..at, piece);
        }
        Mutation::HugeAttr { at, len } => {
            // Right after a tag name when there is one, else anywhere.
            let start = pos(at, n);
            let at = doc[start..]
                .iter()
                .position(|&c| c == b'>' || c == b'/')
                .map_or(start, |i| start + i);
            let mut piece = b" orig=\"".to_vec();
            piece.extend(std::iter::repeat_n(b'v', len as usize));
            piece.push(b'"');
            doc.splice(at..at, piece);
        }
        Mutation::Placeholders { copies, value_len } => {
            // An error whose message names a placeholder many times, with a long value, and a
            // second param whose value holds the first placeholder again.
            let msg = "__a____b__".repeat(copies as usize);
            let value = "x".repeat(value_len as usize);
            let extra = format!(
                "<error type=\"value\"><param name=\"b\">__a____a__</param><param name=\"a\">{value}</param><msg>{msg}</msg></error>"
            );
            let at = doc
                .windows(5)
                .position(|w| w == b"<doc>")
                .map_or(0, |i| i + 5);
            doc.splice(at..at, extra.into_bytes());
        }
    }
}

/// A token soup: tags, text and pieces in any order.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        (0..PIECES.len()).prop_map(|i| PIECES[i].to_vec()),
        "[a-z_]{1,8}".prop_map(|n| format!("<{n}>").into_bytes()),
        "[a-z_]{1,8}".prop_map(|n| format!("</{n}>").into_bytes()),
        "[ -~]{0,16}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..64).prop_map(|ts| {
        let mut out = b"<doc>".to_vec();
        for t in ts {
            out.extend(t);
        }
        out
    })
}

/// Any hostile answer.
pub fn answer() -> impl Strategy<Value = Vec<u8>> {
    let mutated =
        (0..SEEDS.len(), proptest::collection::vec(mutation(), 1..7)).prop_map(|(seed, muts)| {
            let mut doc = SEEDS[seed].as_bytes().to_vec();
            for m in &muts {
                apply(&mut doc, m);
            }
            doc
        });
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..1024),
        2 => soup(),
        7 => mutated,
    ]
}

/// What the client does with an answer: parse it, turn rows and top-level fields into licenses,
/// and errors into `ApiError` text. Returns the number of rows. Must never panic.
pub fn exercise(body: &[u8]) -> usize {
    let dialect = Dialect(Api::Billmgr4);
    let mut rows = 0usize;
    let parsed = licrenew::billmgr::xml::parse_with(body, |row| {
        rows += 1;
        if let Some(licrenew::domain::Row::Bad(e)) = dialect.license(&row) {
            std::hint::black_box(e.to_string());
        }
    });
    match parsed {
        Ok(doc) => {
            std::hint::black_box(dialect.license(&doc.fields));
            std::hint::black_box(dialect.ordered_id(&doc));
            std::hint::black_box(doc.attr("auth", "id"));
            if let Some(raw) = doc.error {
                std::hint::black_box(ApiError::from_raw(raw).to_string());
            }
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
    rows
}
