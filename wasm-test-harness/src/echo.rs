//! Echo upstream: answers every request 200 with JSON {"method","path","headers"} and records it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::server::{HttpServer, Reply, Request};

/// One request the upstream received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Request target (path and query) as received.
    pub path: String,
    /// (lowercased name, value) in arrival order; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The same headers with raw value bytes.
    pub raw_headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Running echo upstream on 127.0.0.1:<free port>. Stops when dropped.
pub struct EchoUpstream {
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    server: HttpServer,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        EchoUpstream::start_on(0)
            .unwrap_or_else(|e| panic!("EchoUpstream: cannot bind 127.0.0.1:0: {e}"))
    }

    /// Start on a given port (0 = free port).
    pub fn start_on(port: u16) -> std::io::Result<EchoUpstream> {
        let requests: Arc<Mutex<Vec<RecordedRequest>>> = Arc::default();
        let rec = requests.clone();
        let server = HttpServer::start(
            port,
            Arc::new(move |req: &Request| {
                let raw_headers: Vec<(String, Vec<u8>)> = req
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                    .collect();
                let headers: Vec<(String, String)> = raw_headers
                    .iter()
                    .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect();
                // Repeated headers are joined with ", " in the JSON map.
                let mut map: BTreeMap<String, String> = BTreeMap::new();
                for (n, v) in &headers {
                    map.entry(n.clone())
                        .and_modify(|e| {
                            e.push_str(", ");
                            e.push_str(v);
                        })
                        .or_insert_with(|| v.clone());
                }
                let body = json!({ "method": req.method, "path": req.target, "headers": map });
                rec.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(RecordedRequest {
                        method: req.method.clone(),
                        path: req.target.clone(),
                        headers,
                        raw_headers,
                        body: req.body.clone(),
                    });
                Reply::new(200, "application/json", body.to_string())
            }),
        )?;
        Ok(EchoUpstream { requests, server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// All requests received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
    }

    pub fn count(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
