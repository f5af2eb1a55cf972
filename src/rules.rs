//! Rule matching: the first rule whose matcher fits the request path (query string ignored) wins.

use crate::config::{Config, PathMatch, Rule};

pub fn path_without_query(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(path.len());
    &path[..end]
}

impl PathMatch {
    pub fn matches(&self, path: &[u8]) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
            PathMatch::Exact(p) => path == p.as_bytes(),
        }
    }
}

/// Index and rule for a request path, or `None` when no rule matches (the filter then denies).
pub fn find<'a>(config: &'a Config, path: &[u8]) -> Option<(usize, &'a Rule)> {
    let path = path_without_query(path);
    config
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.matcher.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_exact_and_query() {
        let p = PathMatch::Prefix("/api".into());
        assert!(p.matches(path_without_query(b"/api/x?y=1")));
        assert!(!p.matches(path_without_query(b"/ap?i")));
        let e = PathMatch::Exact("/healthz".into());
        assert!(e.matches(path_without_query(b"/healthz?verbose")));
        assert!(!e.matches(path_without_query(b"/healthz/")));
    }
}
