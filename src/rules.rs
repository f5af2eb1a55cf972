//! Rule matching: the first rule whose matcher fits the request wins; otherwise the configured
//! default rule, otherwise none (the filter then denies). A matcher checks the path (prefix, exact or
//! template; the query string is ignored), the method, the host (port ignored, `*.` wildcards) and
//! Envoy's route name. Every criterion that is set must fit.

use crate::config::{Config, Matcher, PathMatch, Rule, Segment};

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

fn host_without_port(authority: &[u8]) -> &[u8] {
    // IPv6 literals keep their brackets; only a trailing :port is dropped.
    match authority.iter().rposition(|b| *b == b':') {
        Some(i) if !authority[i..].contains(&b']') => &authority[..i],
        _ => authority,
    }
}

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

impl Matcher {
    pub fn matches(&self, req: &RequestInfo) -> bool {
        if let Some(p) = &self.path {
            if !p.matches(path_without_query(&req.path)) {
                return false;
            }
        }
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.as_bytes() == req.method.as_slice())
        {
            return false;
        }
        if !self.hosts.is_empty() {
            let host = host_without_port(&req.authority).to_ascii_lowercase();
            let fits = |h: &String| match h.strip_prefix("*.") {
                Some(domain) => {
                    host.len() > domain.len() + 1
                        && host.ends_with(domain.as_bytes())
                        && host[host.len() - domain.len() - 1] == b'.'
                }
                None => host == h.as_bytes(),
            };
            if !self.hosts.iter().any(fits) {
                return false;
            }
        }
        if let Some(name) = &self.route_name {
            if req.route_name.as_deref() != Some(name.as_bytes()) {
                return false;
            }
        }
        true
    }
}

/// The rule for a request: the first that matches, else the default rule, else `None`.
pub fn find<'a>(config: &'a Config, req: &RequestInfo) -> Option<&'a Rule> {
    config
        .rules
        .iter()
        .find(|r| r.matcher.matches(req))
        .or(config.default_rule.as_ref())
}

/// A CORS preflight (Fetch standard): `OPTIONS` carrying both `Origin` and
/// `Access-Control-Request-Method`. An `OPTIONS` without them, or another method with them, is not one.
pub fn is_cors_preflight(method: &[u8], has_origin: bool, has_request_method: bool) -> bool {
    method == b"OPTIONS" && has_origin && has_request_method
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(m.matches(&req("GET", "/", "api.example.com:8443")));
        assert!(m.matches(&req("HEAD", "/", "API.example.com")));
        assert!(m.matches(&req("GET", "/", "a.b.corp.example")));
        assert!(!m.matches(&req("GET", "/", "corp.example")));
        assert!(!m.matches(&req("GET", "/", "evilcorp.example")));
        assert!(!m.matches(&req("POST", "/", "api.example.com")));
        let r = Matcher {
            route_name: Some("admin".into()),
            ..Matcher::default()
        };
        let mut q = req("GET", "/", "x");
        assert!(!r.matches(&q));
        q.route_name = Some(b"admin".to_vec());
        assert!(r.matches(&q));
    }

    #[test]
    fn preflight() {
        assert!(is_cors_preflight(b"OPTIONS", true, true));
        assert!(!is_cors_preflight(b"OPTIONS", true, false));
        assert!(!is_cors_preflight(b"OPTIONS", false, true));
        assert!(!is_cors_preflight(b"GET", true, true));
    }
}
