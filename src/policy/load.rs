//! Policy files: `policies.d/*.toml` → validated [`Policies`].
//!
//! Every problem is a [`PolicyError`] naming the file and, where the TOML spans allow, the line.
//! Validation is strict on purpose: a policy that is accepted is one the planner can follow
//! without guessing, because guessing here spends money.

use crate::catalog::{Catalog, PeriodKind, Product};
use crate::domain::License;
use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// `before` when a policy does not say: renew a week ahead of expiry.
pub const DEFAULT_BEFORE: Duration = Duration::from_secs(7 * 86_400);

/// A policy file that cannot be used. Display: `FILE:LINE: message`, or `FILE: message` when no
/// line is known.
#[derive(Debug, Default, thiserror::Error)]
#[error("{}", self.render())]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based line of the offending key or table, when known.
    pub line: Option<usize>,
    pub msg: String,
    /// More problems found in the same load (every file is read; `check` names them all).
    pub also: Vec<PolicyError>,
}

impl PolicyError {
    /// Every problem: this one and those found with it.
    pub fn each(&self) -> impl Iterator<Item = &PolicyError> {
        std::iter::once(self).chain(self.also.iter())
    }

    fn render(&self) -> String {
        self.each()
            .map(|e| {
                format!(
                    "{}{}: {}",
                    e.file.display(),
                    e.line.map(|l| format!(":{l}")).unwrap_or_default(),
                    e.msg
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn all(mut errors: Vec<PolicyError>) -> PolicyError {
        let mut first = errors.remove(0);
        first.also.extend(errors);
        first
    }
}

/// The renewal policy of one product, as loaded from one file.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The file it came from (the journal records it with each renewal).
    pub file: PathBuf,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub hash: String,
    /// The product id (`price`) this policy governs.
    pub product: i64,
    /// The product's catalog name, for messages.
    pub product_name: String,
    /// Whether licenses of this product are renewed (excepts may override per license).
    pub renew: bool,
    /// Catalog period id to renew for; never a trial, always one of the product's periods.
    pub period: Option<i64>,
    /// Renew when the license expires within this time (past-due included).
    pub before: Duration,
    /// Whether a license currently on a trial period may be renewed (onto `period`).
    pub renew_trials: bool,
    /// Renew even licenses whose server-side autoprolong is on (BILLmanager 5/6). Default
    /// false: the billing charges for those by itself, and renewing too would pay twice.
    pub override_autoprolong: bool,
    excepts: Vec<Except>,
}

/// The policies of `s`, checked before any network call: against the catalog of the pinned
/// generation, or under `api = "auto"` against either (a product that exists only in one
/// generation, such as BILLmanager 4's DSmanager, loads; an error is one under both, and the
/// first generation's is reported). Once the generation is detected they are loaded again
/// against its catalog.
pub fn load_offline(s: &crate::config::Settings) -> Result<Policies, PolicyError> {
    use crate::config::Api;
    if s.billmgr.api.is_some() {
        return Policies::load_dir(&s.policies_dir, &s.catalog);
    }
    match Policies::load_dir(&s.policies_dir, &s.catalog_all.for_api(Api::Billmgr5)) {
        Ok(p) => Ok(p),
        Err(e5) => Policies::load_dir(&s.policies_dir, &s.catalog_all.for_api(Api::Billmgr4))
            .map_err(|_| e5),
    }
}

/// One `[[except]]` entry: matchers (AND-ed) and the overrides they bring.
#[derive(Clone, Debug)]
struct Except {
    licname: Option<GlobMatcher>,
    elid: Option<i64>,
    ip: Option<IpAddr>,
    renew: Option<bool>,
    period: Option<i64>,
    before: Option<Duration>,
}

impl Except {
    fn matches(&self, license: &License) -> bool {
        self.licname
            .as_ref()
            .is_none_or(|g| g.is_match(&license.licname))
            && self.elid.is_none_or(|e| e == license.elid)
            && self
                .ip
                .is_none_or(|ip| license.ip.trim().parse::<IpAddr>() == Ok(ip))
    }
}

/// What a policy says about one license, after its excepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub renew: bool,
    pub period: Option<i64>,
    pub before: Duration,
    /// `"policy"` for the top level, `"except #N"` (1-based) for the first matching except.
    pub source: String,
}

impl Policy {
    /// Whether it renews anything: at its top level or in one of its excepts.
    pub fn renews_any(&self) -> bool {
        self.renew || self.excepts.iter().any(|e| e.renew == Some(true))
    }

    /// The longest `before` it or any of its excepts says (what the sync window must cover).
    pub fn longest_before(&self) -> Duration {
        self.excepts
            .iter()
            .filter_map(|e| e.before)
            .fold(self.before, Duration::max)
    }

    /// The rule for `license`: the first matching except, its missing keys inherited from the
    /// top level; the top level when none matches.
    pub fn rule_for(&self, license: &License) -> Rule {
        match self
            .excepts
            .iter()
            .enumerate()
            .find(|(_, e)| e.matches(license))
        {
            Some((i, e)) => Rule {
                renew: e.renew.unwrap_or(self.renew),
                period: e.period.or(self.period),
                before: e.before.unwrap_or(self.before),
                source: format!("except #{}", i + 1),
            },
            None => Rule {
                renew: self.renew,
                period: self.period,
                before: self.before,
                source: "policy".into(),
            },
        }
    }

    /// How many `[[except]]` entries the file holds.
    pub fn except_count(&self) -> usize {
        self.excepts.len()
    }
}

/// All loaded policies, at most one per product, in file-name order.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    list: Vec<Policy>,
    /// Entries of the folder that are not policies (other names, dotfiles): listed by `check`.
    ignored: Vec<PathBuf>,
}

/// The largest policy file accepted, in bytes.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

impl Policies {
    /// Loads every `*.toml` file of `dir` (sorted by name; other files and dotfiles ignored).
    /// A missing folder is an error; an empty one gives no policies (and so no renewals).
    pub fn load_dir(dir: &Path, catalog: &Catalog) -> Result<Policies, PolicyError> {
        let folder_err = |msg: String| PolicyError {
            file: dir.to_owned(),
            line: None,
            msg,
            ..Default::default()
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| folder_err(format!("cannot read the policy folder: {e}")))?;
        let mut paths = Vec::new();
        let mut ignored = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| folder_err(format!("cannot read the policy folder: {e}")))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Dotfiles are editor leftovers (`.#lite.toml` is even a dangling symlink), never
            // policies; other names (`x.toml.bak`, `x.dpkg-old`, `README`) are not policies
            // either. Both are only listed by `check`.
            if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".toml") {
                ignored.push(path);
                continue;
            }
            paths.push(path);
        }
        paths.sort();
        ignored.sort();
        // Every file is read and parsed, so one run names every mistake.
        let mut errors = Vec::new();
        let mut sources = Vec::with_capacity(paths.len());
        for path in paths {
            // Every `*.toml` (any case) must be a policy that can be read: a file that cannot
            // be is refused by name, never skipped (a skipped policy silently renews nothing).
            let bytes = match crate::files::read_regular_file(&path, MAX_POLICY_BYTES) {
                Ok(b) => b,
                Err(msg) => {
                    errors.push(PolicyError {
                        file: path.clone(),
                        msg,
                        ..Default::default()
                    });
                    continue;
                }
            };
            let hash = sha256_hex(&bytes);
            match String::from_utf8(bytes) {
                Ok(text) => sources.push((path, text, hash)),
                Err(_) => errors.push(PolicyError {
                    file: path.clone(),
                    msg: "not UTF-8 text".into(),
                    ..Default::default()
                }),
            }
        }
        let built = Policies::build(sources, catalog);
        if !errors.is_empty() {
            if let Err(mut e) = built {
                let also = std::mem::take(&mut e.also);
                errors.push(e);
                errors.extend(also);
            }
            return Err(PolicyError::all(errors));
        }
        let mut policies = built?;
        policies.ignored = ignored;
        Ok(policies)
    }

    /// Folder entries that were not read as policies.
    pub fn ignored(&self) -> &[PathBuf] {
        &self.ignored
    }

    /// Builds policies from in-memory files, in the order given (for tests and tools).
    pub fn from_sources(
        sources: &[(PathBuf, String)],
        catalog: &Catalog,
    ) -> Result<Policies, PolicyError> {
        let sources = sources
            .iter()
            .map(|(p, t)| (p.clone(), t.clone(), sha256_hex(t.as_bytes())))
            .collect();
        Policies::build(sources, catalog)
    }

    fn build(
        sources: Vec<(PathBuf, String, String)>,
        catalog: &Catalog,
    ) -> Result<Policies, PolicyError> {
        let mut list: Vec<Policy> = Vec::with_capacity(sources.len());
        let mut errors = Vec::new();
        for (file, text, hash) in sources {
            let (policy, product_line) = match parse(file, &text, hash, catalog) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Some(first) = list.iter().find(|p| p.product == policy.product) {
                errors.push(PolicyError {
                    msg: format!(
                        "{} already has a policy in {} (one file per product)",
                        policy.product_name,
                        first.file.display()
                    ),
                    file: policy.file,
                    line: Some(product_line),
                    ..Default::default()
                });
                continue;
            }
            list.push(policy);
        }
        if !errors.is_empty() {
            return Err(PolicyError::all(errors));
        }
        Ok(Policies {
            list,
            ignored: Vec::new(),
        })
    }

    /// Policies as given, unvalidated: lets planner tests hand it what no file could say.
    #[cfg(test)]
    pub(crate) fn from_list_for_tests(list: Vec<Policy>) -> Policies {
        Policies {
            list,
            ignored: Vec::new(),
        }
    }

    /// The policy of a product id (`License::product`), if any.
    pub fn for_product(&self, product: i64) -> Option<&Policy> {
        self.list.iter().find(|p| p.product == product)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// Raw shape of a file.

/// A product or period as written: a name/label, or an id as a number or a string.
struct NameOrId(String);

impl<'de> Deserialize<'de> for NameOrId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NameOrId, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NameOrId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name or a numeric id")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NameOrId, E> {
                Ok(NameOrId(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NameOrId, E> {
                Ok(NameOrId(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NameOrId, E> {
                Ok(NameOrId(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    product: Spanned<NameOrId>,
    renew: Spanned<bool>,
    period: Option<Spanned<NameOrId>>,
    before: Option<Spanned<String>>,
    #[serde(default)]
    renew_trials: bool,
    #[serde(default)]
    override_autoprolong: bool,
    #[serde(default)]
    except: Vec<Spanned<RawExcept>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExcept {
    licname: Option<Spanned<String>>,
    elid: Option<i64>,
    ip: Option<Spanned<String>>,
    renew: Option<bool>,
    period: Option<Spanned<NameOrId>>,
    before: Option<Spanned<String>>,
}

/// One file being validated: turns spans into `FILE:LINE` errors.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Option<Range<usize>>, msg: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.to_owned(),
            line: span.map(|s| self.line(&s)),
            msg: msg.into(),
            ..Default::default()
        }
    }

    fn period(
        &self,
        catalog: &Catalog,
        product: &Product,
        raw: &Spanned<NameOrId>,
    ) -> Result<(i64, PeriodKind), PolicyError> {
        let query = &raw.get_ref().0;
        let (_, period) = catalog
            .period_for(&product.price.to_string(), query)
            .map_err(|e| self.err(Some(raw.span()), e.to_string()))?;
        if period.kind.is_trial() {
            return Err(self.err(
                Some(raw.span()),
                format!(
                    "period {query:?} is the trial of {}: a trial is never a renewal period",
                    product.name
                ),
            ));
        }
        Ok((period.id, period.kind))
    }

    fn before(&self, raw: &Spanned<String>) -> Result<Duration, PolicyError> {
        humantime::parse_duration(raw.get_ref().trim()).map_err(|e| {
            self.err(
                Some(raw.span()),
                format!(
                    "before = {:?}: {e} (write a duration such as \"7d\" or \"36h\")",
                    raw.get_ref()
                ),
            )
        })
    }
}

/// Whole days of `before`, rounded up: the planner renews on `expiry - days`.
pub(crate) fn ceil_days(before: Duration) -> u64 {
    let secs = before
        .as_secs()
        .saturating_add(u64::from(before.subsec_nanos() > 0));
    secs.div_ceil(86_400)
}

/// The shortest length a renewal period can add, in days (`None`: it never runs out).
fn shortest_days(kind: PeriodKind) -> Option<u64> {
    match kind {
        PeriodKind::Months(n) => Some(28 * u64::from(n)),
        PeriodKind::Year => Some(365),
        PeriodKind::Lifetime | PeriodKind::Trial => None,
    }
}

/// Refuses a `before` as long as the period itself. A suspended license is extended from the
/// payment date, so with such a `before` it would be due again right after its renewal and be
/// paid for again on every cycle.
fn check_before_fits(
    src: &Source<'_>,
    span: Option<Range<usize>>,
    before: Duration,
    kind: PeriodKind,
    scope: &str,
) -> Result<(), PolicyError> {
    let days = ceil_days(before);
    match shortest_days(kind) {
        Some(len) if days >= len => Err(src.err(
            span,
            format!(
                "{scope}before ({days} days) is not shorter than the renewal period ({}, {len} \
                 days at least): a renewed license would be due again at once and paid for twice",
                kind.describe()
            ),
        )),
        _ => Ok(()),
    }
}

fn parse(
    file: PathBuf,
    text: &str,
    hash: String,
    catalog: &Catalog,
) -> Result<(Policy, usize), PolicyError> {
    let src = Source { file: &file, text };
    let raw: RawPolicy =
        toml::from_str(text).map_err(|e| src.err(e.span(), e.message().trim().to_owned()))?;

    let product_span = raw.product.span();
    let query = &raw.product.get_ref().0;
    let product = catalog.product(query).ok_or_else(|| {
        src.err(
            Some(product_span.clone()),
            format!("unknown product {query:?} (see `licrenew catalog`)"),
        )
    })?;

    let period = raw
        .period
        .as_ref()
        .map(|p| src.period(catalog, &product, p))
        .transpose()?;
    let before = match &raw.before {
        Some(b) => src.before(b)?,
        None => DEFAULT_BEFORE,
    };
    let renew = *raw.renew.get_ref();
    if renew {
        let Some((_, kind)) = period else {
            return Err(src.err(
                Some(raw.renew.span()),
                "renew = true needs a period (for example period = \"1 month\")",
            ));
        };
        let span = raw.before.as_ref().map(Spanned::span);
        check_before_fits(&src, span.or(Some(raw.renew.span())), before, kind, "")?;
    }

    let mut excepts = Vec::with_capacity(raw.except.len());
    for (i, spanned) in raw.except.iter().enumerate() {
        let n = i + 1;
        let span = spanned.span();
        let e = spanned.get_ref();
        if e.licname.is_none() && e.elid.is_none() && e.ip.is_none() {
            return Err(src.err(
                Some(span),
                format!("except #{n} has no matcher: give licname, elid or ip"),
            ));
        }
        let licname = e
            .licname
            .as_ref()
            .map(|g| {
                GlobBuilder::new(g.get_ref())
                    .case_insensitive(true)
                    .build()
                    .map(|glob| glob.compile_matcher())
                    .map_err(|err| {
                        src.err(
                            Some(g.span()),
                            format!("except #{n}: licname = {:?}: bad glob: {err}", g.get_ref()),
                        )
                    })
            })
            .transpose()?;
        // A mistyped IP would silently never match, and an unmatched "renew = false" except
        // means money spent: refuse it instead.
        let ip =
            e.ip.as_ref()
                .map(|ip| {
                    ip.get_ref().trim().parse::<IpAddr>().map_err(|_| {
                        src.err(
                            Some(ip.span()),
                            format!("except #{n}: ip = {:?} is not an IP address", ip.get_ref()),
                        )
                    })
                })
                .transpose()?;
        let own_period = e
            .period
            .as_ref()
            .map(|p| src.period(catalog, &product, p))
            .transpose()
            .map_err(|mut err| {
                err.msg = format!("except #{n}: {}", err.msg);
                err
            })?;
        let own_before = e
            .before
            .as_ref()
            .map(|b| src.before(b))
            .transpose()
            .map_err(|mut err| {
                err.msg = format!("except #{n}: {}", err.msg);
                err
            })?;
        if e.renew.unwrap_or(renew) {
            let Some((_, kind)) = own_period.or(period) else {
                return Err(src.err(
                    Some(span),
                    format!(
                        "except #{n} renews but no period is given, neither in it nor at the top \
                         level"
                    ),
                ));
            };
            let before_span = e
                .before
                .as_ref()
                .or(raw.before.as_ref())
                .map(Spanned::span)
                .unwrap_or(span);
            check_before_fits(
                &src,
                Some(before_span),
                own_before.unwrap_or(before),
                kind,
                &format!("except #{n}: "),
            )?;
        }
        excepts.push(Except {
            licname,
            elid: e.elid,
            ip,
            renew: e.renew,
            period: own_period.map(|(id, _)| id),
            before: own_before,
        });
    }

    let product_line = src.line(&product_span);
    let policy = Policy {
        hash,
        product: product.price,
        product_name: product.name.clone(),
        renew,
        period: period.map(|(id, _)| id),
        before,
        renew_trials: raw.renew_trials,
        override_autoprolong: raw.override_autoprolong,
        excepts,
        file,
    };
    Ok((policy, product_line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;
    use chrono::NaiveDate;

    fn load(text: &str) -> Result<Policies, PolicyError> {
        Policies::from_sources(
            &[(PathBuf::from("p.d/lite.toml"), text.to_owned())],
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
    }

    fn load_one(text: &str) -> Policy {
        let policies = load(text).expect("valid policy");
        policies.iter().next().cloned().expect("one policy")
    }

    fn load_err(text: &str) -> PolicyError {
        load(text).expect_err("an invalid policy")
    }

    fn license(elid: i64, licname: &str, ip: &str) -> License {
        License {
            elid,
            licname: licname.into(),
            ip: ip.into(),
            product: 7,
            period: Some(8),
            expiry: NaiveDate::from_ymd_opt(2025, 3, 1).expect("date"),
            status: Status::Active,
            autoprolong: false,
            special: None,
            cost: None,
            pricelist_label: None,
        }
    }

    fn assert_err(err: &PolicyError, line: Option<usize>, needle: &str) {
        assert_eq!(err.file, PathBuf::from("p.d/lite.toml"), "{err}");
        assert_eq!(err.line, line, "{err}");
        assert!(
            err.msg.contains(needle),
            "{err:?} should mention {needle:?}"
        );
        let shown = err.to_string();
        let prefix = match line {
            Some(l) => format!("p.d/lite.toml:{l}: "),
            None => "p.d/lite.toml: ".into(),
        };
        assert!(shown.starts_with(&prefix), "{shown}");
    }

    #[test]
    fn a_minimal_policy_resolves_names_and_takes_the_default_before() {
        // Arrange
        let text = "product = \"lite\"\nrenew = true\nperiod = \"1 MONTH\"\n";

        // Act
        let p = load_one(text);

        // Assert
        assert_eq!(p.product, 7);
        assert_eq!(p.product_name, "ISPmanager Lite");
        assert!(p.renew);
        assert_eq!(p.period, Some(8));
        assert_eq!(p.before, Duration::from_secs(7 * 86_400));
        assert!(!p.renew_trials);
        assert_eq!(p.except_count(), 0);
        assert_eq!(p.file, PathBuf::from("p.d/lite.toml"));
    }

    #[test]
    fn products_and_periods_may_be_given_as_ids_numbers_or_strings() {
        // Arrange
        let numbers = "product = 432\nrenew = true\nperiod = 381\nbefore = \"30d\"\n";
        let strings = "product = \"432\"\nrenew = true\nperiod = \"381\"\n";

        // Act
        let a = load_one(numbers);
        let b = load_one(strings);

        // Assert
        assert_eq!((a.product, a.period), (432, Some(381)));
        assert_eq!(a.before, Duration::from_secs(30 * 86_400));
        assert_eq!((b.product, b.period), (432, Some(381)));
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_file_bytes() {
        // Arrange
        let text = "product = 7\nrenew = false\n";

        // Act
        let p = load_one(text);

        // Assert
        assert_eq!(p.hash, format!("{:x}", Sha256::digest(text.as_bytes())));
        assert_eq!(p.hash.len(), 64);
    }

    #[test]
    fn renew_false_needs_no_period() {
        // Arrange
        let text = "product = \"DNSmanager\"\nrenew = false\n";

        // Act
        let p = load_one(text);

        // Assert
        assert!(!p.renew);
        assert_eq!(p.period, None);
    }

    #[test]
    fn a_toml_syntax_error_names_file_and_line() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = \"1 month\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(3), "");
    }

    #[test]
    fn an_unknown_key_names_file_and_line() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = 8\nautoprolong = true\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(4), "unknown field `autoprolong`");
    }

    #[test]
    fn an_unknown_key_inside_an_except_names_its_line() {
        // Arrange
        let text =
            "product = 7\nrenew = true\nperiod = 8\n\n[[except]]\nelid = 1\nrenew_trials = true\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(7), "unknown field `renew_trials`");
    }

    #[test]
    fn a_wrong_type_names_file_and_line() {
        // Arrange
        let text = "product = 7\nrenew = \"yes\"\nperiod = 8\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(2), "invalid type");
    }

    #[test]
    fn a_missing_renew_is_refused() {
        // Arrange
        let text = "product = 7\nperiod = 8\n";

        // Act
        let err = load_err(text);

        // Assert
        assert!(err.msg.contains("missing field `renew`"), "{err}");
        assert_eq!(err.file, PathBuf::from("p.d/lite.toml"));
    }

    #[test]
    fn billmgr5_policies_name_products_like_billmgr4_and_may_name_any_tariff_id_in_months() {
        let v5 = Catalog::builtin().for_api(crate::config::Api::Billmgr5);
        let load5 = |text: &str| {
            Policies::from_sources(&[(PathBuf::from("p.d/x.toml"), text.to_owned())], &v5)
        };

        let by_name = load5("product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\n")
            .expect("a name of both generations");
        let by_id =
            load5("product = 77777\nrenew = true\nperiod = 12\noverride_autoprolong = true\n")
                .expect("an unknown tariff id");
        let trial = load5("product = 77777\nrenew = true\nperiod = -100\n").expect_err("trial");
        let daily = load5("product = 77777\nrenew = true\nperiod = -7\n").expect_err("daily");

        let p = by_name.iter().next().expect("policy");
        assert_eq!((p.product, p.period), (55227, Some(1)));
        let p = by_id.iter().next().expect("policy");
        assert_eq!(
            (p.product, p.period, p.override_autoprolong),
            (77777, Some(12), true)
        );
        assert!(trial.msg.contains("trial"), "{trial}");
        assert!(daily.msg.contains("-7"), "{daily}");
    }

    #[test]
    fn an_unknown_product_names_file_and_line() {
        // Arrange
        let text = "renew = true\nproduct = \"ISPmanager Ultra\"\nperiod = 8\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(2), "unknown product \"ISPmanager Ultra\"");
    }

    #[test]
    fn an_unknown_period_names_file_and_line() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = \"2 years\"\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(
            &err,
            Some(3),
            "unknown period \"2 years\" for ISPmanager Lite",
        );
    }

    #[test]
    fn a_period_of_another_product_uses_the_catalog_wording() {
        // Arrange
        let text = "product = \"ISPmanager Pro\"\nrenew = true\nperiod = 8\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(
            &err,
            Some(3),
            "period 8 belongs to ISPmanager Lite, not to ISPmanager Pro",
        );
    }

    #[test]
    fn a_trial_period_is_refused_by_label_and_by_id() {
        // Arrange
        let by_label = "product = 7\nrenew = true\nperiod = \"trial\"\n";
        let by_id =
            "product = 7\nrenew = false\n\n[[except]]\nelid = 5\nrenew = true\nperiod = 7\n";

        // Act
        let a = load_err(by_label);
        let b = load_err(by_id);

        // Assert
        assert_err(&a, Some(3), "a trial is never a renewal period");
        assert_err(&b, Some(7), "except #1: period \"7\" is the trial");
    }

    #[test]
    fn a_bad_duration_names_file_and_line() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = 8\nbefore = \"a week\"\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(4), "before = \"a week\"");
    }

    #[test]
    fn a_bad_duration_in_an_except_names_the_except() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = 8\n[[except]]\nelid = 1\nbefore = \"7 fortnights\"\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(6), "except #1: before = \"7 fortnights\"");
    }

    #[test]
    fn a_before_as_long_as_the_period_is_refused() {
        // Arrange
        let monthly = "product = 7\nrenew = true\nperiod = 8\nbefore = \"28d\"\n";
        let yearly = "product = 432\nrenew = true\nperiod = \"1 year\"\nbefore = \"364d\"\n";
        let lifetime = "product = 7\nrenew = true\nperiod = \"lifetime\"\nbefore = \"400d\"\n";

        // Act
        let err = load_err(monthly);

        // Assert
        assert_err(
            &err,
            Some(4),
            "not shorter than the renewal period (1 month",
        );
        assert_eq!(load_one(yearly).period, Some(381));
        assert_eq!(load_one(lifetime).period, Some(9));
    }

    #[test]
    fn an_except_inheriting_a_too_long_before_is_refused() {
        // Arrange
        let text = "product = 432\nrenew = false\nbefore = \"60d\"\nperiod = \"1 year\"\n\n\
                    [[except]]\nlicname = \"short-*\"\nrenew = true\nperiod = \"1 month\"\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(3), "except #1: before (60 days) is not shorter");
    }

    #[test]
    fn an_except_without_a_matcher_names_its_line() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = 8\n\n[[except]]\nelid = 1\nrenew = false\n\n[[except]]\nrenew = false\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(9), "except #2 has no matcher");
    }

    #[test]
    fn a_bad_glob_names_file_and_line() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = 8\n[[except]]\nlicname = \"test-[\"\nrenew = false\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(5), "except #1: licname = \"test-[\": bad glob");
    }

    #[test]
    fn an_except_ip_that_is_not_an_ip_is_refused() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = 8\n[[except]]\nip = \"203.0.113.1O\"\nrenew = false\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(5), "is not an IP address");
    }

    #[test]
    fn renew_true_without_a_period_is_refused() {
        // Arrange
        let text = "product = 7\nrenew = true\nbefore = \"3d\"\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(2), "renew = true needs a period");
    }

    #[test]
    fn an_except_that_renews_without_any_period_is_refused() {
        // Arrange
        let text = "product = 7\nrenew = false\n\n[[except]]\nelid = 12\nrenew = true\n";

        // Act
        let err = load_err(text);

        // Assert
        assert_err(&err, Some(4), "except #1 renews but no period is given");
    }

    #[test]
    fn two_files_for_one_product_name_both_files() {
        // Arrange
        let sources = [
            (
                PathBuf::from("p.d/a.toml"),
                "product = 7\nrenew = false\n".to_owned(),
            ),
            (
                PathBuf::from("p.d/b.toml"),
                "# same product by alias\nproduct = \"ispmanager-lite\"\nrenew = false\n"
                    .to_owned(),
            ),
        ];

        // Act
        let err = Policies::from_sources(
            &sources,
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect_err("duplicate");

        // Assert
        assert_eq!(err.file, PathBuf::from("p.d/b.toml"));
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().contains("p.d/a.toml"), "{err}");
        assert!(err.to_string().starts_with("p.d/b.toml:2: "), "{err}");
    }

    #[test]
    fn excepts_match_first_wins_and_inherit_what_they_do_not_say() {
        // Arrange
        let text = r#"
product = "ISPmanager Lite"
renew = true
period = "1 month"
before = "10d"

[[except]]
licname = "TEST-*"
renew = false

[[except]]
elid = 334673
ip = "203.0.113.10"
period = "lifetime"

[[except]]
elid = 334673
before = "2d"
"#;
        let p = load_one(text);

        // Act
        let plain = p.rule_for(&license(1, "www", "198.51.100.1"));
        let test = p.rule_for(&license(334673, "test-box", "203.0.113.10"));
        let both = p.rule_for(&license(334673, "prod", " 203.0.113.10 "));
        let elid_only = p.rule_for(&license(334673, "prod", "203.0.113.11"));

        // Assert
        let ten = Duration::from_secs(10 * 86_400);
        assert_eq!(
            plain,
            Rule {
                renew: true,
                period: Some(8),
                before: ten,
                source: "policy".into()
            }
        );
        assert_eq!(
            test,
            Rule {
                renew: false,
                period: Some(8),
                before: ten,
                source: "except #1".into()
            }
        );
        assert_eq!(
            both,
            Rule {
                renew: true,
                period: Some(9),
                before: ten,
                source: "except #2".into()
            }
        );
        assert_eq!(
            elid_only,
            Rule {
                renew: true,
                period: Some(8),
                before: Duration::from_secs(2 * 86_400),
                source: "except #3".into()
            }
        );
    }

    #[test]
    fn an_ipv6_except_matches_any_spelling_of_the_address() {
        // Arrange
        let text = "product = 7\nrenew = true\nperiod = 8\n[[except]]\nip = \"2001:DB8:0::1\"\nrenew = false\n";
        let p = load_one(text);

        // Act
        let rule = p.rule_for(&license(1, "x", "2001:db8::1"));

        // Assert
        assert_eq!(rule.source, "except #1");
        assert!(!rule.renew);
    }

    #[test]
    fn load_dir_reads_only_toml_files_sorted_by_name() {
        // Arrange
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write");
        };
        write("b-pro.toml", "product = 11\nrenew = true\nperiod = 16\n");
        write("a-lite.toml", "product = 7\nrenew = false\n");
        write("README.md", "not a policy");
        write("lite.toml.bak", "garbage = [");
        write(".#a-lite.toml", "garbage = [");
        write("lite.dpkg-old", "garbage = [");

        // Act
        let policies = Policies::load_dir(
            dir.path(),
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect("loads");

        // Assert
        let files: Vec<PathBuf> = policies.iter().map(|p| p.file.clone()).collect();
        assert_eq!(
            files,
            vec![
                dir.path().join("a-lite.toml"),
                dir.path().join("b-pro.toml")
            ]
        );
        assert_eq!(policies.for_product(11).map(|p| p.period), Some(Some(16)));
        assert!(policies.for_product(432).is_none());
        let ignored: Vec<String> = policies
            .ignored()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            ignored,
            vec![
                ".#a-lite.toml",
                "README.md",
                "lite.dpkg-old",
                "lite.toml.bak"
            ]
        );
    }

    #[test]
    fn a_toml_entry_that_is_not_a_readable_regular_file_is_refused_by_name() {
        let catalog = Catalog::builtin().for_api(crate::config::Api::Billmgr4);
        type Make = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Make, &str)> = vec![
            (
                "dangling.toml",
                Box::new(|p| std::os::unix::fs::symlink("/nonexistent/x", p).expect("link")),
                "symlink",
            ),
            (
                "zero.toml",
                Box::new(|p| std::os::unix::fs::symlink("/dev/zero", p).expect("link")),
                "a device",
            ),
            (
                "dir.toml",
                Box::new(|p| std::fs::create_dir(p).expect("mkdir")),
                "a directory",
            ),
            (
                "fifo.toml",
                Box::new(|p| {
                    let ok = std::process::Command::new("mkfifo")
                        .arg(p)
                        .status()
                        .expect("mkfifo");
                    assert!(ok.success());
                }),
                "a FIFO",
            ),
            (
                "huge.toml",
                Box::new(|p| {
                    std::fs::write(p, vec![b'#'; MAX_POLICY_BYTES as usize + 1]).expect("write")
                }),
                "limit",
            ),
            (
                "UPPER.TOML",
                Box::new(|p| std::fs::write(p, "garbage = [").expect("write")),
                "",
            ),
        ];
        for (name, make, want) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("lite.toml"), "product = 7\nrenew = false\n")
                .expect("write");
            let path = dir.path().join(name);
            make(&path);

            let err = Policies::load_dir(dir.path(), &catalog).expect_err(name);

            assert_eq!(err.file, path, "{name}: {err}");
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn load_dir_accepts_an_empty_folder_and_refuses_a_missing_one() {
        // Arrange
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");

        // Act
        let empty = Policies::load_dir(
            dir.path(),
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect("empty is valid");
        let err = Policies::load_dir(
            &missing,
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect_err("missing");

        // Assert
        assert!(empty.is_empty());
        assert_eq!(err.file, missing);
        assert_eq!(err.line, None);
        assert!(
            err.to_string().contains("cannot read the policy folder"),
            "{err}"
        );
    }

    #[test]
    fn load_dir_names_the_file_of_an_error_and_hashes_the_bytes() {
        // Arrange
        let dir = tempfile::tempdir().expect("tempdir");
        let good = "product = 7\nrenew = false\n";
        std::fs::write(dir.path().join("lite.toml"), good).expect("write");
        std::fs::write(dir.path().join("pro.toml"), "product = 11\nrenew = true\n").expect("write");

        // Act
        let err = Policies::load_dir(
            dir.path(),
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect_err("pro is bad");
        std::fs::remove_file(dir.path().join("pro.toml")).expect("rm");
        let ok = Policies::load_dir(
            dir.path(),
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect("loads");

        // Assert
        assert_eq!(err.file, dir.path().join("pro.toml"));
        assert_eq!(err.line, Some(2));
        let hash = ok.for_product(7).map(|p| p.hash.clone());
        assert_eq!(hash, Some(format!("{:x}", Sha256::digest(good.as_bytes()))));
    }

    #[test]
    fn the_example_policy_folder_loads_with_the_builtin_catalog() {
        // Arrange
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies.example.d");

        // Act
        let policies = Policies::load_dir(
            &dir,
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect("examples load");

        // Assert
        let lite = policies.for_product(7).expect("ISPmanager Lite example");
        assert!(lite.renew && lite.except_count() > 0);
        let bill = policies
            .for_product(432)
            .expect("BILLmanager Standard example");
        assert_eq!(bill.period, Some(381));
        let dns = policies.for_product(17).expect("DNSmanager example");
        assert!(!dns.renew);
    }

    #[test]
    fn ceil_days_rounds_partial_days_up() {
        // Arrange
        let cases = [
            (Duration::ZERO, 0),
            (Duration::from_secs(1), 1),
            (Duration::from_secs(86_400), 1),
            (Duration::from_secs(86_401), 2),
            (Duration::from_secs(36 * 3600), 2),
            (Duration::new(86_399, 1), 1),
            (Duration::new(86_400, 1), 2),
        ];

        // Act
        let got: Vec<u64> = cases.iter().map(|(d, _)| ceil_days(*d)).collect();

        // Assert
        let want: Vec<u64> = cases.iter().map(|(_, n)| *n).collect();
        assert_eq!(got, want);
    }
}
