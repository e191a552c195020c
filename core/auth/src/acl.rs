//! Mosquitto's ACL file format (`acl_file` in `mosquitto.conf`), with Mosquitto's semantics
//! where they are safe and stricter ones where they are not.
//!
//! ```text
//! # Lines before any `user` line apply to anonymous clients (no user name).
//! topic read $SYS/#
//!
//! user alice
//! topic readwrite home/alice/#
//! topic deny home/alice/secret
//!
//! # Pattern lines apply to every client, with %c -> client id and %u -> user name.
//! pattern write devices/%c/up
//! pattern read devices/%c/down/#
//! ```
//!
//! `topic [read|write|readwrite|deny] <filter>` (access defaults to `readwrite`) grants or denies
//! the filter to the current section; `user <name>` starts a user's section (a name that appears
//! twice continues its section); `pattern [...] <filter>` adds a rule for all clients. `#` at
//! the start of a line is a comment. The filter is the rest of the line, so it may contain
//! spaces.
//!
//! How a check is decided (deny by default once an ACL is configured):
//!
//! 1. The client's rules are its user section (or, without a user name, the anonymous section)
//!    plus every pattern.
//! 2. If any matching `deny` rule exists, access is denied. Mosquitto 2.x orders denials first
//!    within the user section and within the patterns, but a user-section grant beats a pattern
//!    denial there; here any denial wins, so `pattern deny x/#` binds every client.
//! 3. Otherwise access is allowed if a matching rule grants it: `write` for [`Access::Publish`],
//!    `read` for [`Access::Subscribe`] and [`Access::Receive`].
//!
//! What "matching" means:
//!
//! - PUBLISH and delivery: the rule, as a topic filter, matches the concrete topic name (MQTT
//!   matching; a topic starting with `$` is matched only by rules starting with `$`, as in
//!   Mosquitto, so `topic read #` does not grant `$SYS`).
//! - SUBSCRIBE: Mosquitto 2.0 grants every SUBSCRIBE and filters on delivery. We refuse a
//!   subscription no `read` rule can ever serve: the filter must be *covered* by a read rule,
//!   i.e. every topic it can match is matched by the rule (the relation of Mosquitto's
//!   `mosquitto_sub_matches_acl`: `a/#` is covered by `a/#` or `#`, not by `a/+` or `a/b/#`;
//!   `a/+` is covered by `a/+`; a `+` rule level never covers a `#`). A subscription wholly
//!   inside a `deny` rule is refused; one that only overlaps a denial is granted, and the denied
//!   topics are filtered out on delivery. So the broker MUST still check [`Access::Receive`]
//!   for every delivery, including retained messages and wills. A `$share/{group}/` prefix is
//!   removed before the check.
//!
//! Pattern substitution: Mosquitto 2.0 substitutes `%c`/`%u` anywhere in the filter text. A
//! client id or user name containing `+`, `#`, `/` or NUL, or starting with `$`, could widen a
//! pattern (`devices/%c/#` with client id `#`) or reach another client's tree (`a/b` reaching
//! into `a`'s), so such a value is never substituted: patterns using it grant nothing, and
//! `deny` patterns using it deny everything from the level where the value would go (a safe
//! over-approximation). Mosquitto instead denies such clients everything once pattern rules
//! are consulted. An empty client id, or a missing user name, makes the patterns using it
//! ignored, as in Mosquitto.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;
use uringmq_topic::{validate_topic_filter, validate_topic_name, SharedFilter};

use crate::hook::{Access, Authorizer, ClientInfo};
use crate::path_prefix;

/// What a rule grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Perm {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Perm {
    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Perm::ReadWrite, _)
                | (Perm::Write, Access::Publish)
                | (Perm::Read, Access::Subscribe | Access::Receive)
        )
    }
}

/// A piece of a pattern level: literal text or a substitution.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    ClientId,
    Username,
}

/// One level of a rule's filter, parsed once so checks do not allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    /// `+`
    Single,
    /// `#`
    Multi,
    /// A pattern level containing `%c` and/or `%u`.
    Template(Box<[Piece]>),
}

/// One `topic` or `pattern` line.
#[derive(Clone, Debug)]
struct Rule {
    perm: Perm,
    levels: Box<[Level]>,
    /// The filter text starts with `$` (only such rules match `$` topics).
    dollar: bool,
    uses_client_id: bool,
    uses_username: bool,
}

/// How a pattern rule applies to one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Substitute the client's values.
    Exact,
    /// A value is unsafe: treat the first level using it, and all after it, as `#`.
    Widened,
    /// The rule does not apply to this client.
    Skip,
}

/// A substitution value for one client.
#[derive(Clone, Copy, Debug)]
enum Var<'a> {
    Value(&'a str),
    Absent,
    Unsafe,
}

impl<'a> Var<'a> {
    fn of(value: Option<&'a str>) -> Self {
        match value {
            None | Some("") => Var::Absent,
            Some(v) if v.starts_with('$') || v.contains(['+', '#', '/', '\0']) => Var::Unsafe,
            Some(v) => Var::Value(v),
        }
    }
}

/// The substitution values of the client being checked.
#[derive(Clone, Copy, Debug)]
struct Ids<'a> {
    client_id: Var<'a>,
    username: Var<'a>,
}

impl Rule {
    fn parse(perm: Perm, filter: &str, pattern: bool) -> Result<Self, AclLineError> {
        validate_topic_filter(filter).map_err(|e| AclLineError::InvalidFilter {
            filter: filter.to_owned(),
            why: e.to_string(),
        })?;
        let mut uses_client_id = false;
        let mut uses_username = false;
        let levels = filter
            .split('/')
            .map(|level| match level {
                "+" => Level::Single,
                "#" => Level::Multi,
                _ if pattern && (level.contains("%c") || level.contains("%u")) => {
                    let pieces = template_pieces(level);
                    uses_client_id |= pieces.contains(&Piece::ClientId);
                    uses_username |= pieces.contains(&Piece::Username);
                    Level::Template(pieces.into())
                }
                _ => Level::Literal(level.into()),
            })
            .collect();
        Ok(Rule {
            perm,
            levels,
            dollar: filter.starts_with('$'),
            uses_client_id,
            uses_username,
        })
    }

    fn mode(&self, ids: &Ids<'_>) -> Mode {
        let vars = [
            (self.uses_client_id, ids.client_id),
            (self.uses_username, ids.username),
        ];
        let mut mode = Mode::Exact;
        for (used, var) in vars {
            match (used, var) {
                (false, _) | (true, Var::Value(_)) => {}
                (true, Var::Absent) => return Mode::Skip,
                (true, Var::Unsafe) => mode = Mode::Widened,
            }
        }
        mode
    }

    /// Does the rule match `target` (a topic name, or for `Subscribe` a filter it must cover)?
    fn hits(&self, access: Access, target: &str, ids: &Ids<'_>, mode: Mode) -> bool {
        if mode == Mode::Skip {
            return false;
        }
        let widened = mode == Mode::Widened;
        // Mosquitto: a `$` topic or filter is only matched by a rule starting with `$`
        // [MQTT-4.7.2-1]. A widened denial ignores this: over-approximating is its point.
        if target.starts_with('$') && !self.dollar && !widened {
            return false;
        }
        let mut parts = target.split('/');
        for level in self.levels.iter() {
            match level {
                Level::Multi => return true,
                Level::Template(_) if widened => return true,
                _ => {}
            }
            let Some(part) = parts.next() else {
                return false;
            };
            let ok = match level {
                // `+` covers any one level of a filter except `#`.
                Level::Single => !(access == Access::Subscribe && part == "#"),
                Level::Literal(text) => **text == *part,
                Level::Template(pieces) => template_matches(pieces, part, ids),
                Level::Multi => true,
            };
            if !ok {
                return false;
            }
        }
        parts.next().is_none()
    }
}

/// Splits a pattern level into text and `%c` / `%u` pieces.
fn template_pieces(level: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = level.chars().peekable();
    while let Some(ch) = chars.next() {
        let var = match (ch, chars.peek()) {
            ('%', Some('c')) => Some(Piece::ClientId),
            ('%', Some('u')) => Some(Piece::Username),
            _ => None,
        };
        match var {
            Some(var) => {
                chars.next();
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text).into()));
                }
                pieces.push(var);
            }
            None => text.push(ch),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.into()));
    }
    pieces
}

/// Whether a template level, with the client's (safe) values substituted, equals `part`.
fn template_matches(pieces: &[Piece], part: &str, ids: &Ids<'_>) -> bool {
    let mut rest = part;
    for piece in pieces {
        let value = match (piece, ids.client_id, ids.username) {
            (Piece::Text(t), _, _) => &**t,
            (Piece::ClientId, Var::Value(v), _) | (Piece::Username, _, Var::Value(v)) => v,
            // Unreachable through `mode`, but fail closed.
            _ => return false,
        };
        match rest.strip_prefix(value) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// A section's rules, denials kept apart so they are checked first.
#[derive(Clone, Debug, Default)]
struct Rules {
    deny: Vec<Rule>,
    allow: Vec<Rule>,
}

impl Rules {
    fn push(&mut self, rule: Rule) {
        if rule.perm == Perm::Deny {
            self.deny.push(rule);
        } else {
            self.allow.push(rule);
        }
    }

    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty()
    }
}

/// What is wrong with one line of an ACL file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AclLineError {
    /// `topic` or `pattern` with nothing after it.
    #[error("`{0}` needs a topic filter")]
    MissingFilter(&'static str),
    /// Access word other than read, write, readwrite or deny.
    #[error("unknown access {0:?} (expected read, write, readwrite or deny)")]
    UnknownAccess(String),
    /// `user` with nothing after it.
    #[error("`user` needs a user name")]
    MissingUsername,
    /// The filter is not a valid MQTT topic filter.
    #[error("invalid topic filter {filter:?}: {why}")]
    InvalidFilter {
        /// The filter as written.
        filter: String,
        /// The rule it breaks.
        why: String,
    },
    /// The line starts with an unknown keyword.
    #[error("unknown keyword {0:?} (expected topic, pattern or user)")]
    UnknownKeyword(String),
}

/// Errors loading an ACL file.
#[derive(Debug, Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{}line {line}: {kind}", path_prefix(path.as_deref()))]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        kind: AclLineError,
    },
}

/// A parsed Mosquitto ACL file. As an [`Authorizer`] it always has an opinion: what it does not
/// grant is denied.
#[derive(Clone, Debug, Default)]
pub struct AclFile {
    anonymous: Rules,
    users: HashMap<String, Rules>,
    patterns: Rules,
}

impl AclFile {
    /// Reads and parses the ACL file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AclError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| AclError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            AclError::Parse { line, kind, .. } => AclError::Parse {
                path: Some(path.to_owned()),
                line,
                kind,
            },
            other => other,
        })
    }

    /// Parses the text of an ACL file.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |kind| AclError::Parse {
                path: None,
                line: i + 1,
                kind,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "topic" | "pattern" => {
                    let keyword = if keyword == "topic" {
                        "topic"
                    } else {
                        "pattern"
                    };
                    let (first, after) = split_word(rest);
                    if first.is_empty() {
                        return Err(err(AclLineError::MissingFilter(keyword)));
                    }
                    // One word: it is the filter, with readwrite access (as in Mosquitto).
                    let (perm, filter) = if after.is_empty() {
                        (Perm::ReadWrite, first)
                    } else {
                        let perm = match first {
                            "read" => Perm::Read,
                            "write" => Perm::Write,
                            "readwrite" => Perm::ReadWrite,
                            "deny" => Perm::Deny,
                            other => return Err(err(AclLineError::UnknownAccess(other.into()))),
                        };
                        (perm, after)
                    };
                    let pattern = keyword == "pattern";
                    let rule = Rule::parse(perm, filter, pattern).map_err(err)?;
                    let section = match (&user, pattern) {
                        (_, true) => &mut acl.patterns,
                        (Some(u), false) => acl.users.entry(u.clone()).or_default(),
                        (None, false) => &mut acl.anonymous,
                    };
                    section.push(rule);
                }
                "user" => {
                    if rest.is_empty() {
                        return Err(err(AclLineError::MissingUsername));
                    }
                    user = Some(rest.to_owned());
                    acl.users.entry(rest.to_owned()).or_default();
                }
                other => return Err(err(AclLineError::UnknownKeyword(other.into()))),
            }
        }
        Ok(acl)
    }

    /// Whether the file has no rules at all (then every access is denied).
    pub fn is_empty(&self) -> bool {
        self.anonymous.is_empty()
            && self.patterns.is_empty()
            && self.users.values().all(Rules::is_empty)
    }

    /// The decision for one access; see the module documentation for the rules.
    pub fn check(&self, client: &ClientInfo<'_>, access: Access, topic_or_filter: &str) -> bool {
        let target = match access {
            Access::Subscribe => {
                let filter = match SharedFilter::parse(topic_or_filter) {
                    Ok(Some(shared)) => shared.filter,
                    Ok(None) => topic_or_filter,
                    Err(_) => return false,
                };
                if validate_topic_filter(filter).is_err() {
                    return false;
                }
                filter
            }
            Access::Publish | Access::Receive => {
                if validate_topic_name(topic_or_filter).is_err() {
                    return false;
                }
                topic_or_filter
            }
        };
        let section = match client.username {
            Some(u) => self.users.get(u),
            None => Some(&self.anonymous),
        };
        let ids = Ids {
            client_id: Var::of(Some(client.client_id)),
            username: Var::of(client.username),
        };
        let hits = |rule: &Rule, mode| rule.hits(access, target, &ids, mode);

        let section_denies = section.is_some_and(|s| s.deny.iter().any(|r| hits(r, Mode::Exact)));
        let pattern_denies = self.patterns.deny.iter().any(|r| hits(r, r.mode(&ids)));
        if section_denies || pattern_denies {
            return false;
        }
        let section_allows = section.is_some_and(|s| {
            s.allow
                .iter()
                .any(|r| r.perm.grants(access) && hits(r, Mode::Exact))
        });
        section_allows
            || self.patterns.allow.iter().any(|r| {
                // A widened rule must never grant.
                r.perm.grants(access) && r.mode(&ids) == Mode::Exact && hits(r, Mode::Exact)
            })
    }
}

/// Splits off the first whitespace-separated word; the rest is trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

impl Authorizer for AclFile {
    fn authorize(&self, client: &ClientInfo<'_>, access: Access, topic_or_filter: &str) -> bool {
        self.check(client, access, topic_or_filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::{Publish as P, Receive as R, Subscribe as S};

    const ACL: &str = "\
# anonymous section
topic read public/#
topic read $SYS/broker/uptime

user alice
topic readwrite home/alice/#
topic deny home/alice/secret
topic write sensors/+/temp
topic read sensors/#

user bob
topic home/bob/#
topic read home/+/shared

user carol
topic deny #

user alice
topic read extra/alice

pattern write devices/%c/up
pattern read devices/%c/down/#
pattern readwrite users/%u/#
pattern read pre-%c-post/x
pattern deny devices/%c/down/blocked
";

    fn acl() -> AclFile {
        AclFile::parse(ACL).unwrap()
    }

    fn who<'a>(client_id: &'a str, user: Option<&'a str>) -> ClientInfo<'a> {
        ClientInfo::new(client_id, user, "test")
    }

    /// Checks one client against rows of (access, topic, expected).
    fn expect(acl: &AclFile, client: ClientInfo<'_>, rows: &[(Access, &str, bool)]) {
        for &(access, topic, want) in rows {
            assert_eq!(
                acl.check(&client, access, topic),
                want,
                "{client:?} {access:?} {topic:?}"
            );
        }
    }

    #[test]
    fn matrix_of_users_topics_and_accesses() {
        let acl = acl();
        expect(
            &acl,
            who("a1", Some("alice")),
            &[
                (P, "home/alice/kitchen", true),
                (R, "home/alice/kitchen", true),
                (S, "home/alice/#", true),
                (S, "home/alice/+/x", true),
                (P, "home/alice", true), // `a/#` matches its parent `a`
                (P, "home/alice/secret", false),
                (R, "home/alice/secret", false),
                (S, "home/alice/secret", false),
                (P, "home/alice/secret/x", true), // deny is exact, not a prefix
                (P, "home/bob/x", false),
                (R, "home/bob/x", false),
                (P, "sensors/1/temp", true),
                (R, "sensors/1/temp", true), // from `read sensors/#`
                (P, "sensors/1/hum", false),
                (S, "sensors/+/temp", true), // covered by read sensors/#
                (R, "public/x", false),      // the anonymous section is not alice's
                (R, "extra/alice", true),    // a repeated `user alice` continues her section
                (S, "#", false),
                (S, "home/#", false),
            ],
        );
        expect(
            &acl,
            who("b1", Some("bob")),
            &[
                (P, "home/bob/x", true), // no access word: readwrite
                (R, "home/bob/x", true),
                (R, "home/alice/shared", true),
                (P, "home/alice/shared", false),
                (S, "home/+/shared", true),
                (S, "home/alice/shared", true),
                (S, "home/+/#", false),
                (S, "home/#", false),
            ],
        );
        expect(
            &acl,
            who("anon", None),
            &[
                (R, "public/news", true),
                (S, "public/#", true),
                (P, "public/news", false),
                (R, "$SYS/broker/uptime", true),
                (R, "$SYS/broker/load", false),
                (R, "home/alice/x", false),
            ],
        );
        // A user without a section gets patterns only.
        expect(
            &acl,
            who("d9", Some("dave")),
            &[
                (R, "public/news", false),
                (P, "users/dave/x", true),
                (P, "devices/d9/up", true),
                (R, "devices/d9/up", false),
            ],
        );
    }

    #[test]
    fn deny_takes_precedence_over_any_grant() {
        let acl = acl();
        // carol's `deny #` beats every pattern grant.
        expect(
            &acl,
            who("c1", Some("carol")),
            &[
                (P, "devices/c1/up", false),
                (P, "users/carol/x", false),
                (S, "users/carol/#", false),
            ],
        );
        // A pattern denial beats a pattern grant.
        expect(
            &acl,
            who("dev7", None),
            &[
                (R, "devices/dev7/down/cmd", true),
                (R, "devices/dev7/down/blocked", false),
                // Overlapping a denial is allowed at SUBSCRIBE; delivery is filtered.
                (S, "devices/dev7/down/#", true),
                (S, "devices/dev7/down/blocked", false),
            ],
        );
        // A pattern denial also beats a user-section grant (Mosquitto differs here).
        let acl = AclFile::parse("user u\ntopic read a/#\npattern deny a/%u/#\n").unwrap();
        expect(
            &acl,
            who("c", Some("u")),
            &[(R, "a/x", true), (R, "a/u/x", false)],
        );
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let acl = acl();
        expect(
            &acl,
            who("dev7", Some("erin")),
            &[
                (P, "devices/dev7/up", true),
                (P, "devices/dev8/up", false),
                (R, "devices/dev7/down/a/b", true),
                (S, "devices/dev7/down/#", true),
                (S, "devices/+/down/#", false),
                (P, "users/erin/x", true),
                (P, "users/erin", true),
                (P, "users/erin2/x", false),
                (R, "pre-dev7-post/x", true),
                (R, "pre-dev8-post/x", false),
                (R, "pre-dev7-post2/x", false),
            ],
        );
        // Without a user name, %u patterns do not apply.
        expect(&acl, who("dev7", None), &[(P, "users//x", false)]);
        // `%c` in a `topic` line is literal text.
        let acl = AclFile::parse("topic read lit/%c\n").unwrap();
        expect(
            &acl,
            who("x", None),
            &[(R, "lit/%c", true), (R, "lit/x", false)],
        );
    }

    #[test]
    fn wildcards_in_identities_cannot_widen_patterns() {
        let acl = acl();
        for id in ["#", "+", "a/b", "dev7/#", "$SYS", "x\0"] {
            expect(
                &acl,
                who(id, None),
                &[
                    (P, "devices/#/up", false),
                    (P, "devices/+/up", false),
                    (P, "devices/a/b/up", false),
                    (P, "devices/dev7/up", false),
                    (R, "devices/dev7/down/x", false),
                    (S, "devices/+/down/#", false),
                    (S, "devices/#", false),
                    (R, "$SYS/down/x", false),
                ],
            );
        }
        // Same through the user name.
        for user in ["#", "+", "eve/../bob", "bob/x"] {
            expect(
                &acl,
                who("ok", Some(user)),
                &[
                    (P, "users/bob/x", false),
                    (S, "users/#", false),
                    (S, "users/+/#", false),
                ],
            );
        }
        // An unsafe value widens a denial instead: `deny a/%c/x` denies all of `a/...`.
        let acl = AclFile::parse("topic read a/#\npattern deny a/%c/x\n").unwrap();
        expect(
            &acl,
            who("fine", None),
            &[(R, "a/q", true), (R, "a/fine/x", false)],
        );
        expect(
            &acl,
            who("bad/id", None),
            &[(R, "a/q", false), (R, "b", false)],
        );
    }

    #[test]
    fn subscribe_coverage_follows_mosquitto_sub_matches_acl() {
        // (rule, subscription, covered)
        let cases = [
            ("a/#", "a/#", true),
            ("a/#", "a", true),
            ("a/#", "a/b/+", true),
            ("#", "a/#", true),
            ("#", "#", true),
            ("a/+", "a/+", true),
            ("a/+", "a/b", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b/c", false),
            ("a/b/#", "a/#", false),
            ("a/b", "a/+", false),
            ("+/b", "+/b", true),
            ("+/+", "a/+", true),
            ("a/+/#", "a/b", true),
            ("a/+/#", "a", false),
            ("#", "$SYS/#", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/broker/+", true),
            ("$SYS/#", "#", false),
        ];
        for (rule, sub, want) in cases {
            let acl = AclFile::parse(&format!("topic read {rule}\n")).unwrap();
            assert_eq!(
                acl.check(&who("c", None), S, sub),
                want,
                "{rule} covers {sub}"
            );
        }
        // Shared subscriptions are checked on their filter.
        let acl = AclFile::parse("topic read a/#\n").unwrap();
        expect(
            &acl,
            who("c", None),
            &[
                (S, "$share/g/a/b", true),
                (S, "$share/g/b", false),
                (S, "$share//a", false), // malformed
            ],
        );
    }

    #[test]
    fn topic_matching_agrees_with_the_topic_crate() {
        let filters = [
            "a", "a/b", "a/+", "a/#", "#", "+", "+/+", "/+", "a//b", "$SYS/#", "+/#", "a/+/c",
        ];
        let topics = [
            "a", "a/b", "a/c", "a/b/c", "/a", "/", "a//b", "$SYS/x", "$SYS", "b",
        ];
        for filter in filters {
            let acl = AclFile::parse(&format!("topic read {filter}\n")).unwrap();
            for topic in topics {
                let want = uringmq_topic::matches(filter, topic);
                assert_eq!(
                    acl.check(&who("c", None), R, topic),
                    want,
                    "{filter} ~ {topic}"
                );
            }
        }
    }

    #[test]
    fn invalid_targets_are_denied() {
        let acl = AclFile::parse("topic readwrite #\n").unwrap();
        expect(
            &acl,
            who("c", None),
            &[
                (P, "a/+", false),
                (P, "", false),
                (R, "a/#", false),
                (S, "a/#/b", false),
                (S, "", false),
                (P, "ok", true),
            ],
        );
    }

    #[test]
    fn empty_acl_denies_everything() {
        let acl = AclFile::parse("# nothing\n\nuser x\n").unwrap();
        assert!(acl.is_empty());
        expect(
            &acl,
            who("c", Some("x")),
            &[(R, "a", false), (S, "#", false)],
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases = [
            ("topic\n", 1, "needs a topic filter"),
            ("# c\ntopic sometimes a/b\n", 2, "unknown access"),
            ("\n\nuser\n", 3, "needs a user name"),
            ("topic read a/#/b\n", 1, "[MQTT-4.7.1-2]"),
            ("pattern read a+\n", 1, "[MQTT-4.7.1-3]"),
            ("topic read a\nallow a\n", 2, "unknown keyword"),
        ];
        for (text, line, needle) in cases {
            let msg = AclFile::parse(text).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("line {line}: ")), "{msg}");
            assert!(msg.contains(needle), "{msg} should mention {needle}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl");
        fs::write(&path, "topic read ok\nbogus\n").unwrap();
        let msg = AclFile::load(&path).unwrap_err().to_string();
        assert!(msg.contains("acl: line 2: unknown keyword"), "{msg}");
        assert!(matches!(
            AclFile::load(dir.path().join("none")),
            Err(AclError::Io { .. })
        ));
    }

    #[test]
    fn whitespace_and_spaces_in_topics() {
        let acl = AclFile::parse("  topic\tread   a b/c  \nuser  two words \ntopic x\n").unwrap();
        expect(&acl, who("c", None), &[(R, "a b/c", true), (R, "a", false)]);
        expect(&acl, who("c", Some("two words")), &[(P, "x", true)]);
        // A single word after `topic` is the filter, even if it reads like an access word.
        let acl = AclFile::parse("topic read\n").unwrap();
        expect(&acl, who("c", None), &[(P, "read", true)]);
    }
}
