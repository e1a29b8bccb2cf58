//! The errors of the BILLmanager boundary: transport, HTTP, body and API-level refusals.
//!
//! Every error says which function (and elid) failed. None of them ever carries a URL with
//! credentials, a session id, a password or a raw body: transport errors are rendered without
//! their URL, and API errors keep only the parsed type/object/code/msg/params.

use super::xml::{RawError, XmlError};
use std::time::Duration;

/// An error of one API call.
#[derive(Debug, thiserror::Error)]
#[error("{func}{}: {kind}", elid.map(|e| format!(" (elid {e})")).unwrap_or_default())]
pub struct Error {
    pub func: String,
    pub elid: Option<i64>,
    pub kind: ErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// No connection was made, so the request never left: safe to send again.
    #[error("could not connect: {0}")]
    Connect(String),
    /// No answer within the timeout, from the host named.
    #[error("no answer within {0:?} from {1}")]
    Timeout(Duration, String),
    /// The connection failed after the request may have been sent.
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("HTTP status {status}")]
    Http { status: u16 },
    #[error("HTTP redirect {status} (redirects are not followed: check billmgr.url)")]
    Redirect { status: u16 },
    #[error("answer larger than the {0}-byte cap")]
    TooLarge(u64),
    #[error("unreadable answer: {0}")]
    Xml(#[from] XmlError),
    /// The server answered with an `<error>` document: it refused and changed nothing.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// An answer to a change that says both yes (`<ok/>` or a new expiry) and no (`<error>`):
    /// whether it was applied is unknown, so it is neither a success nor a refusal.
    #[error("contradictory answer (success and {0} in one document)")]
    Contradictory(Box<ApiError>),
    /// A well-formed document that is neither the data asked for nor `<ok/>`.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// Refused locally before any request (bad argument).
    #[error("{0}")]
    Invalid(String),
}

/// What a failed call means for money: did the server refuse, was nothing sent, or is it
/// unknown whether a change was applied?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Certainty {
    /// Nothing left this machine.
    NotSent,
    /// The server answered with an `<error>`: nothing was applied.
    Refused,
    /// The request may have reached the server and been applied.
    Unknown,
}

impl Error {
    pub fn new(func: &str, elid: Option<i64>, kind: ErrorKind) -> Error {
        Error {
            func: func.to_owned(),
            elid,
            kind,
        }
    }

    pub fn certainty(&self) -> Certainty {
        match &self.kind {
            ErrorKind::Connect(_) | ErrorKind::Invalid(_) => Certainty::NotSent,
            ErrorKind::Api(_) => Certainty::Refused,
            // A redirect is answered by a proxy or a misconfigured URL before BILLmanager ran:
            // still, the request was delivered to *something*, so stay honest.
            _ => Certainty::Unknown,
        }
    }

    /// The server's refusal, when it answered a plain `<error>`.
    pub fn api(&self) -> Option<&ApiError> {
        match &self.kind {
            ErrorKind::Api(e) => Some(e.as_ref()),
            _ => None,
        }
    }

    /// The `<error>` of the answer, refusal or not (a contradictory answer carries one too).
    pub fn api_detail(&self) -> Option<&ApiError> {
        match &self.kind {
            ErrorKind::Api(e) | ErrorKind::Contradictory(e) => Some(e.as_ref()),
            _ => None,
        }
    }

    /// `missed`: the object (license) does not exist, or no longer.
    pub fn is_missed(&self) -> bool {
        self.api().is_some_and(|e| e.kind == "missed")
    }

    /// A refusal because the server is busy with another request ("request in process"):
    /// nothing was applied, and the same request may succeed a moment later.
    pub fn is_busy(&self) -> bool {
        self.api().is_some_and(ApiError::is_busy)
    }

    /// A login refusal (`auth`): bad password, IP not allowed, lockout. Never retried.
    pub fn is_auth(&self) -> bool {
        self.api().is_some_and(|e| e.kind == "auth")
    }

    /// `access`: no right, or an expired session.
    pub fn is_access(&self) -> bool {
        self.api().is_some_and(|e| e.kind == "access")
    }

    /// Whether a read may be tried again after this error.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            ErrorKind::Connect(_) | ErrorKind::Timeout(..) | ErrorKind::Transport(_) => true,
            ErrorKind::Http { status } => *status >= 500 || *status == 429,
            ErrorKind::Xml(XmlError::Empty | XmlError::Truncated(_)) => true,
            _ => false,
        }
    }

    /// A short machine-readable class for logs, metrics and the journal.
    pub fn class(&self) -> &'static str {
        match &self.kind {
            ErrorKind::Connect(_) => "connect",
            ErrorKind::Timeout(..) => "timeout",
            ErrorKind::Transport(_) => "transport",
            ErrorKind::Http { .. } => "http",
            ErrorKind::Redirect { .. } => "redirect",
            ErrorKind::TooLarge(_) => "too_large",
            ErrorKind::Xml(XmlError::Empty) => "empty_body",
            ErrorKind::Xml(XmlError::Truncated(_)) => "truncated",
            ErrorKind::Xml(_) => "malformed",
            ErrorKind::Api(_) => "api",
            ErrorKind::Contradictory(_) => "contradictory",
            ErrorKind::Unexpected(_) => "unexpected",
            ErrorKind::Invalid(_) => "invalid",
        }
    }
}

/// An `<error>` document, reduced to what an admin and the journal need.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApiError {
    /// The `type` attribute (`auth`, `access`, `value`, `missed`, `exists`, …). For the numeric
    /// v4 form, the loosely mapped type, or `code N` when there is none.
    pub kind: String,
    pub object: Option<String>,
    pub code: Option<String>,
    /// `msg`, else `detail`, with `__name__` placeholders filled from the params.
    pub msg: Option<String>,
    /// The `value` param: the offending value, or the date of "renew only after DATE".
    pub value: Option<String>,
    pub params: Vec<(String, String)>,
}

impl ApiError {
    pub fn from_raw(raw: RawError) -> ApiError {
        let kind = match (&raw.kind, raw.code.as_deref()) {
            (Some(k), _) if !k.is_empty() => k.clone(),
            (_, Some("2")) => "exists".into(),
            (_, Some("3")) => "missed".into(),
            (_, Some("4")) => "value".into(),
            (_, Some("6")) => "access".into(),
            (_, Some(c)) => format!("code {c}"),
            (_, None) => "unknown".into(),
        };
        let object = raw
            .object
            .clone()
            .or_else(|| raw.val.clone())
            .or_else(|| raw.param("object").map(str::to_owned))
            .filter(|o| !o.is_empty());
        let msg = raw
            .msg
            .clone()
            .or_else(|| raw.detail.clone())
            .filter(|m| !m.is_empty())
            .map(|m| fill_placeholders(&m, &raw.params));
        ApiError {
            kind,
            object,
            code: raw.code.clone(),
            msg,
            value: raw.param("value").map(str::to_owned),
            params: raw.params,
        }
    }
}

impl ApiError {
    /// Whether this refusal says the server is busy with another request. The type of such an
    /// error is not documented (billmgr-api.md §9), so both a type and the message's wording
    /// are accepted.
    pub fn is_busy(&self) -> bool {
        const TYPES: &[&str] = &["busy", "inprocess", "in_process", "locked", "too_many"];
        const WORDS: &[&str] = &[
            "in process",
            "in progress",
            "busy",
            "try again later",
            "выполняется",
        ];
        let kind = self.kind.to_ascii_lowercase();
        let msg = self.msg.as_deref().unwrap_or_default().to_lowercase();
        TYPES.contains(&kind.as_str()) || WORDS.iter().any(|w| msg.contains(w))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "API error type={}", self.kind)?;
        if let Some(o) = &self.object {
            write!(f, " object={o}")?;
        }
        if let Some(c) = &self.code {
            write!(f, " code={c}")?;
        }
        if let Some(v) = &self.value {
            write!(f, " value={v:?}")?;
        }
        if let Some(m) = &self.msg {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

/// The longest message kept, in bytes. A message is for a human; and an answer that names one
/// placeholder thousands of times, with a long value, must not multiply into gigabytes.
pub const MAX_MSG: usize = 8 * 1024;

/// Fills `__name__` placeholders of a message from the error's params, in one pass (a value is
/// never searched for placeholders again), and cuts the result at [`MAX_MSG`] bytes.
fn fill_placeholders(msg: &str, params: &[(String, String)]) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_MSG));
    let mut rest = msg;
    while out.len() <= MAX_MSG {
        let Some(start) = rest.find("__") else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let filled = after.find("__").and_then(|end| {
            let name = &after[..end];
            let (_, value) = params.iter().find(|(k, _)| !k.is_empty() && k == name)?;
            Some((value, end))
        });
        match filled {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("__");
                rest = after;
            }
        }
    }
    if out.len() > MAX_MSG {
        let mut cut = MAX_MSG;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Renders a reqwest error and its causes without the URL it carries.
pub(crate) fn describe_transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_fill_placeholders_and_map_v4_codes() {
        let raw = RawError {
            kind: None,
            code: Some("4".into()),
            val: Some("ip".into()),
            msg: Some("Bad __value__ for __object__".into()),
            params: vec![
                ("value".into(), "1.2.3.4".into()),
                ("object".into(), "ip".into()),
            ],
            ..RawError::default()
        };
        let e = ApiError::from_raw(raw);
        assert_eq!(e.kind, "value");
        assert_eq!(e.object.as_deref(), Some("ip"));
        assert_eq!(e.msg.as_deref(), Some("Bad 1.2.3.4 for ip"));
        assert_eq!(
            e.to_string(),
            "API error type=value object=ip code=4 value=\"1.2.3.4\": Bad 1.2.3.4 for ip"
        );
    }

    #[test]
    fn placeholders_are_filled_once_and_the_message_stays_bounded() {
        let params = vec![
            ("a".to_owned(), "x".repeat(2000)),
            ("b".to_owned(), "__a____a__".to_owned()),
            ("c".to_owned(), "C".to_owned()),
        ];

        let bomb = fill_placeholders(&"__a____b__".repeat(2000), &params);
        let plain = fill_placeholders("__init__ of __c__, __c____unknown__ ✓", &params);

        assert!(bomb.len() <= MAX_MSG + '…'.len_utf8(), "{}", bomb.len());
        assert!(bomb.ends_with('…') && bomb.starts_with("xxx"));
        assert_eq!(plain, "__init__ of C, C__unknown__ ✓");
        assert_eq!(
            fill_placeholders("__b__", &params),
            "__a____a__",
            "values are not refilled"
        );
    }

    #[test]
    fn errors_name_the_function_and_elid() {
        let e = Error::new(
            "software.period",
            Some(334673),
            ErrorKind::Http { status: 502 },
        );
        assert_eq!(
            e.to_string(),
            "software.period (elid 334673): HTTP status 502"
        );
        assert_eq!(e.certainty(), Certainty::Unknown);
        assert!(e.is_transient());
    }
}
