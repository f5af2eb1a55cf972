//! Rule matching: the first rule whose matcher fits the request wins; otherwise the configured
//! default rule, otherwise none (the filter then denies). A matcher checks the path (prefix, exact or
//! template; the query string is ignored), the method, the host (`normalize_host`, `*.` wildcards)
//! and Envoy's route name. Every criterion that is set must fit.
//!
//! Hosts are compared in one normal form, computed once per request: lowercase, port removed, one
//! trailing dot removed (`admin.example.test.:443` is `admin.example.test`, as DNS and Envoy's
//! `strip_trailing_host_dot` read it). A `Host` that has no such form (an empty label, a second
//! trailing dot, bytes no host name has) cannot be matched against a host rule, so reaching one
//! with it is `invalid_request` rather than a fall-through to a later, maybe public, rule.

use crate::config::{Config, Matcher, PathMatch, Rule, Segment};
use crate::error::Denial;

/// What the matchers look at, read once per request.
#[derive(Debug, Default, Clone)]
pub struct RequestInfo {
    pub path: Vec<u8>,
    pub method: Vec<u8>,
    pub authority: Vec<u8>,
    /// Envoy's `xds.route_name`, read only when some rule matches on it.
    pub route_name: Option<Vec<u8>>,
}

pub fn path_without_query(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(path.len());
    &path[..end]
}

pub use crate::spelling::normalize_host;

impl PathMatch {
    pub fn matches(&self, path: &[u8]) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
            PathMatch::Exact(p) => path == p.as_bytes(),
            PathMatch::Template(segments) => template_matches(segments, path),
        }
    }
}

fn template_matches(segments: &[Segment], path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|b| *b == b'/').collect();
    let mut i = 0;
    for seg in segments {
        match seg {
            Segment::Rest => return true,
            Segment::One => {
                if parts.get(i).is_none_or(|p| p.is_empty()) {
                    return false;
                }
            }
            Segment::Literal(l) => {
                if parts.get(i) != Some(&l.as_bytes()) {
                    return false;
                }
            }
        }
        i += 1;
    }
    i == parts.len()
}

/// The first criterion of a matcher a request does not fit, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    Path,
    Method,
    RouteName,
    Host,
    /// The host criterion cannot be decided: the request's `Host` is not a host name.
    NotAHostName,
}

impl Matcher {
    /// Whether the request fits; `host` is its `normalize_host` form. `Err` when every other
    /// criterion fits but the host criterion cannot be decided, because the host is not a host name.
    fn matches(&self, req: &RequestInfo, host: Option<&[u8]>) -> Result<bool, ()> {
        match self.first_miss(req, host) {
            None => Ok(true),
            Some(Miss::NotAHostName) => Err(()),
            Some(_) => Ok(false),
        }
    }

    /// The first criterion the request does not fit (`None`: it matches). `NotAHostName` only when
    /// every other criterion fits.
    pub fn first_miss(&self, req: &RequestInfo, host: Option<&[u8]>) -> Option<Miss> {
        if let Some(p) = &self.path {
            if !p.matches(path_without_query(&req.path)) {
                return Some(Miss::Path);
            }
        }
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.as_bytes() == req.method.as_slice())
        {
            return Some(Miss::Method);
        }
        if let Some(name) = &self.route_name {
            if req.route_name.as_deref() != Some(name.as_bytes()) {
                return Some(Miss::RouteName);
            }
        }
        if !self.hosts.is_empty() {
            let Some(host) = host else {
                return Some(Miss::NotAHostName);
            };
            let fits = |h: &String| match h.strip_prefix("*.") {
                Some(domain) => {
                    host.len() > domain.len() + 1
                        && host.ends_with(domain.as_bytes())
                        && host[host.len() - domain.len() - 1] == b'.'
                }
                None => host == h.as_bytes(),
            };
            if !self.hosts.iter().any(fits) {
                return Some(Miss::Host);
            }
        }
        None
    }
}

/// The rule for a request: the first that matches, else the default rule, else `None`. A request
/// whose `Host` is not a host name, reaching a rule that would otherwise match it and decides by
/// host, is `invalid_request`: it must not fall through to a later rule.
pub fn find<'a>(config: &'a Config, req: &RequestInfo) -> Result<Option<&'a Rule>, Denial> {
    let host = if config.uses_hosts {
        normalize_host(&req.authority)
    } else {
        None
    };
    for rule in &config.rules {
        match rule.matcher.matches(req, host.as_deref()) {
            Ok(true) => return Ok(Some(rule)),
            Ok(false) => {}
            Err(()) => return Err(Denial::InvalidRequest("Host is not a valid host name")),
        }
    }
    Ok(config.default_rule.as_ref())
}

/// A CORS preflight (Fetch standard): `OPTIONS` carrying both `Origin` and
/// `Access-Control-Request-Method`. An `OPTIONS` without them, or another method with them, is not one.
pub fn is_cors_preflight(method: &[u8], has_origin: bool, has_request_method: bool) -> bool {
    method == b"OPTIONS" && has_origin && has_request_method
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Matcher {
        /// As `find` sees it: the host normalised, an undecidable host criterion not a match.
        fn fits(&self, req: &RequestInfo) -> bool {
            let host = normalize_host(&req.authority);
            self.matches(req, host.as_deref()).unwrap_or(false)
        }
    }

    fn req(method: &str, path: &str, authority: &str) -> RequestInfo {
        RequestInfo {
            path: path.into(),
            method: method.into(),
            authority: authority.into(),
            route_name: None,
        }
    }

    #[test]
    fn prefix_exact_and_query() {
        let p = PathMatch::Prefix("/api".into());
        assert!(p.matches(path_without_query(b"/api/x?y=1")));
        assert!(!p.matches(path_without_query(b"/ap?i")));
        let e = PathMatch::Exact("/healthz".into());
        assert!(e.matches(path_without_query(b"/healthz?verbose")));
        assert!(!e.matches(path_without_query(b"/healthz/")));
    }

    #[test]
    fn templates() {
        use Segment::*;
        let t = PathMatch::Template(vec![Literal("items".into()), One, Literal("edit".into())]);
        assert!(t.matches(b"/items/42/edit"));
        assert!(!t.matches(b"/items//edit"));
        assert!(!t.matches(b"/items/42/edit/x"));
        assert!(!t.matches(b"/items/42"));
        let rest = PathMatch::Template(vec![Literal("files".into()), Rest]);
        assert!(rest.matches(b"/files/a/b/c"));
        assert!(rest.matches(b"/files/"));
        assert!(!rest.matches(b"/filesx/a"));
    }

    #[test]
    fn methods_hosts_route_names() {
        let m = Matcher {
            path: None,
            methods: vec!["GET".into(), "HEAD".into()],
            hosts: vec!["api.example.com".into(), "*.corp.example".into()],
            route_name: None,
        };
        assert!(m.fits(&req("GET", "/", "api.example.com:8443")));
        // One normal form: case, port, one trailing dot; wildcards too.
        for spelling in [
            "api.example.com.",
            "api.example.com.:443",
            "API.EXAMPLE.COM.",
            "Api.Example.Com:8443",
            "x.corp.example.",
            "X.Corp.Example.:1",
        ] {
            assert!(m.fits(&req("GET", "/", spelling)), "{spelling}");
        }
        for bad in [
            "api.example.com..",
            ".api.example.com",
            "api..example.com",
            "api.example.com:",
            "api.example.com:x",
            "",
            "a b",
            "api.example.com%2e",
        ] {
            assert!(!m.fits(&req("GET", "/", bad)), "{bad:?}");
        }
        assert!(m.fits(&req("HEAD", "/", "API.example.com")));
        assert!(m.fits(&req("GET", "/", "a.b.corp.example")));
        assert!(!m.fits(&req("GET", "/", "corp.example")));
        assert!(!m.fits(&req("GET", "/", "evilcorp.example")));
        assert!(!m.fits(&req("POST", "/", "api.example.com")));
        let r = Matcher {
            route_name: Some("admin".into()),
            ..Matcher::default()
        };
        let mut q = req("GET", "/", "x");
        assert!(!r.fits(&q));
        q.route_name = Some(b"admin".to_vec());
        assert!(r.fits(&q));
    }

    #[test]
    fn host_normal_form() {
        let n = |a: &str| normalize_host(a.as_bytes()).map(|h| String::from_utf8(h).unwrap());
        assert_eq!(
            n("Admin.Example.Test.:443").as_deref(),
            Some("admin.example.test")
        );
        assert_eq!(
            n("admin.example.test").as_deref(),
            Some("admin.example.test")
        );
        assert_eq!(n("127.0.0.1:10000").as_deref(), Some("127.0.0.1"));
        assert_eq!(n("[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(n("[::1]").as_deref(), Some("[::1]"));
        for bad in [
            "", ".", "a..b", "a.b..", ":443", "a:b:c", "[::1", "[zz]", "a/b", "a@b", "a.b:",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn preflight() {
        assert!(is_cors_preflight(b"OPTIONS", true, true));
        assert!(!is_cors_preflight(b"OPTIONS", true, false));
        assert!(!is_cors_preflight(b"OPTIONS", false, true));
        assert!(!is_cors_preflight(b"GET", true, true));
    }
}
