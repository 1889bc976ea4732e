//! L7 matchers, compiled once: methods, paths, headers, gRPC.
//!
//! Allow rules match exactly; deny rules match conservatively, so that a backend that
//! reads a request more loosely than RFC 9110 cannot be reached around a deny: methods
//! and paths compare ASCII-case-insensitively (IIS, ASP.NET Core and Windows file systems
//! ignore case; Werkzeug upper-cases methods), and a path matches with or without one
//! trailing slash (Express, and Spring MVC before 6, route `/admin/` to `/admin`) and
//! with a format extension on its last segment (Rails and older Spring route
//! `/admin.json` to `/admin`).
//! docs/path-contract.md has the reasons.

use globset::{GlobBuilder, GlobMatcher};
use http::{HeaderMap, HeaderName};
use regex::Regex;

use crate::{
    error::PolicyError,
    model::{HeaderMatch, HttpMatch, PathMatch},
};

/// The L7 attributes of a request, as the proxy will forward it.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Normalised path without query (see the proxy's path normalisation).
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// A compiled [`HttpMatch`].
#[derive(Debug)]
pub(crate) struct CompiledHttp {
    /// A deny rule's matcher: compares conservatively (see the module docs).
    conservative: bool,
    methods: Vec<Box<str>>,
    paths: Vec<CompiledPath>,
    headers: Vec<CompiledHeader>,
}

#[derive(Debug)]
enum CompiledPath {
    Exact(Box<str>),
    Prefix(Box<str>),
    Glob(GlobMatcher),
}

/// Whether what follows a deny rule's path is nothing or a format extension in the last
/// segment (`.json`): Rails (`.:format`) and Spring MVC before 5.3 (suffix patterns)
/// route `/admin.json` to `/admin`.
fn format_suffix(rest: &str) -> bool {
    rest.is_empty() || (rest.starts_with('.') && !rest.contains('/'))
}

/// Whether `path` starts with `prefix`, ASCII-case-insensitively.
fn starts_with_folded(path: &str, prefix: &str) -> bool {
    path.len() >= prefix.len()
        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[derive(Debug)]
struct CompiledHeader {
    name: HeaderName,
    cond: HeaderCond,
}

#[derive(Debug)]
enum HeaderCond {
    Exact(Box<str>),
    Regex(Regex),
    Present(bool),
}

impl CompiledHttp {
    /// Compiles `m`; `deny` makes it match conservatively (module docs).
    pub(crate) fn compile(m: &HttpMatch, at: &str, deny: bool) -> Result<Self, PolicyError> {
        let bad = |what: String| PolicyError::Invalid {
            at: at.to_owned(),
            what,
        };
        let mut methods = Vec::with_capacity(m.methods.len());
        for method in &m.methods {
            let ok = !method.is_empty()
                && method
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
            if !ok {
                return Err(bad(format!(
                    "method {method:?} must be an uppercase HTTP method"
                )));
            }
            methods.push(method.as_str().into());
        }
        let mut paths = Vec::new();
        for p in &m.paths {
            paths.push(compile_path(p, deny).map_err(bad)?);
        }
        for g in &m.grpc {
            let valid = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
            };
            if !valid(&g.service)
                || g.method
                    .as_deref()
                    .is_some_and(|m| !valid(m) || m.contains('.'))
            {
                return Err(bad(format!(
                    "gRPC service/method {:?}/{:?} is not a valid name",
                    g.service, g.method
                )));
            }
            paths.push(match &g.method {
                Some(method) => CompiledPath::Exact(format!("/{}/{method}", g.service).into()),
                None => CompiledPath::Prefix(format!("/{}/", g.service).into()),
            });
        }
        let mut headers = Vec::with_capacity(m.headers.len());
        for h in &m.headers {
            headers.push(compile_header(h).map_err(bad)?);
        }
        Ok(Self {
            conservative: deny,
            methods,
            paths,
            headers,
        })
    }

    pub(crate) fn matches(&self, req: &HttpRequest<'_>) -> bool {
        let method = |m: &str| match self.conservative {
            true => m.eq_ignore_ascii_case(req.method),
            false => m == req.method,
        };
        let path = |p: &CompiledPath| match self.conservative {
            true => p.matches_conservatively(req.path),
            false => p.matches(req.path),
        };
        (self.methods.is_empty() || self.methods.iter().any(|m| method(m)))
            && (self.paths.is_empty() || self.paths.iter().any(path))
            && self.headers.iter().all(|h| h.matches(req.headers))
    }
}

impl CompiledPath {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == &**p,
            Self::Prefix(p) if p.ends_with('/') => path.starts_with(&**p),
            Self::Prefix(p) => path
                .strip_prefix(&**p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Self::Glob(g) => g.is_match(path),
        }
    }

    /// A deny rule's match: ASCII case ignored (a deny glob is compiled
    /// case-insensitive), with or without one trailing slash, and (exact and prefix) with
    /// a format extension.
    fn matches_conservatively(&self, path: &str) -> bool {
        let bare = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        match self {
            Self::Exact(p) => {
                let p = p.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(p);
                starts_with_folded(bare, p) && bare.get(p.len()..).is_some_and(format_suffix)
            }
            Self::Prefix(p) => {
                let p = p.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(p);
                starts_with_folded(path, p)
                    && (p.ends_with('/')
                        || path.as_bytes().get(p.len()) == Some(&b'/')
                        || bare.get(p.len()..).is_some_and(format_suffix))
            }
            Self::Glob(g) => g.is_match(path) || g.is_match(bare) || g.is_match(format!("{bare}/")),
        }
    }
}

impl CompiledHeader {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let cond = match &self.cond {
            HeaderCond::Present(want) => return values.next().is_some() == *want,
            cond => cond,
        };
        let Some(first) = values.next() else {
            return false;
        };
        // Several copies are judged as their comma-joined value (as proxies and many
        // servers treat them), so a duplicate cannot satisfy or dodge the rule.
        let joined;
        let value = match values.next() {
            None => match first.to_str() {
                Ok(v) => v,
                Err(_) => return false,
            },
            Some(second) => {
                let mut all = vec![first, second];
                all.extend(values);
                let parts: Result<Vec<&str>, _> = all.iter().map(|v| v.to_str()).collect();
                let Ok(parts) = parts else { return false };
                joined = parts.join(",");
                &joined
            }
        };
        match cond {
            HeaderCond::Exact(want) => value == &**want,
            HeaderCond::Regex(re) => re.is_match(value),
            HeaderCond::Present(_) => true,
        }
    }
}

fn compile_path(p: &PathMatch, deny: bool) -> Result<CompiledPath, String> {
    let text = match p {
        PathMatch::Exact(s) | PathMatch::Prefix(s) | PathMatch::Glob(s) => s,
    };
    if !text.starts_with('/') {
        return Err(format!("path {text:?} must start with `/`"));
    }
    if text.contains(['?', '#']) || text.contains('%') {
        return Err(format!(
            "path {text:?} must be a normalised path without query, fragment or percent-encoding"
        ));
    }
    // A path the proxy would forward in another form could never match: a policy that
    // names one is wrong (an allow that never allows, a deny that never denies).
    let normal = |s: &str| match crate::path::normalize(s) {
        Ok(n) if n == s => Ok(()),
        Ok(n) => Err(format!(
            "path {s:?} is not in normal form: the proxy forwards it as {n:?} (docs/path-contract.md)"
        )),
        Err(e) => Err(format!("path {s:?} is refused by the proxy: {e}")),
    };
    match p {
        PathMatch::Exact(s) | PathMatch::Prefix(s) => normal(s)?,
        PathMatch::Glob(s) => {
            if s.split('/').skip(1).any(|seg| matches!(seg, "." | "..")) || s.contains("//") {
                return Err(format!(
                    "glob {s:?} has a dot segment or `//`, which no normalised path has"
                ));
            }
        }
    }
    Ok(match p {
        PathMatch::Exact(s) => CompiledPath::Exact(s.as_str().into()),
        PathMatch::Prefix(s) => CompiledPath::Prefix(s.as_str().into()),
        PathMatch::Glob(s) => CompiledPath::Glob(
            GlobBuilder::new(s)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(deny)
                .build()
                .map_err(|e| format!("glob {s:?}: {e}"))?
                .compile_matcher(),
        ),
    })
}

fn compile_header(h: &HeaderMatch) -> Result<CompiledHeader, String> {
    let name = HeaderName::try_from(h.name.as_str())
        .map_err(|_| format!("header name {:?} is invalid", h.name))?;
    let cond = match (&h.exact, &h.regex, h.present) {
        (Some(v), None, None) => HeaderCond::Exact(v.as_str().into()),
        (None, Some(re), None) => HeaderCond::Regex(
            Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| format!("header {:?} regex: {e}", h.name))?,
        ),
        (None, None, Some(p)) => HeaderCond::Present(p),
        _ => {
            return Err(format!(
                "header {:?} needs exactly one of exact, regex, present",
                h.name
            ));
        }
    };
    Ok(CompiledHeader { name, cond })
}
