//! Minimal raw HTTP/1.1 client over `TcpStream`. Header values are arbitrary bytes (non-UTF-8 allowed),
//! every request is sent with `Connection: close`, and Content-Length / chunked / read-to-EOF bodies are handled.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a request may take before the client gives up.
pub const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Response headers in order; names as sent by the server.
    pub headers: Vec<(String, String)>,
    /// Body (lossily decoded as UTF-8).
    pub body: String,
}

impl Response {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body parsed as JSON (panics with the body on failure).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status, self.body
            )
        })
    }
}

/// GET `path` on 127.0.0.1:`port`. Panics (with a useful message) on I/O or protocol errors.
pub fn http_get(port: u16, path: &str, headers: &[(&str, Vec<u8>)]) -> Response {
    http_request(port, "GET", path, headers)
}

/// Send `method path` to 127.0.0.1:`port` with the given headers (plus Host, unless given, and
/// `Connection: close`). Panics (with a useful message) on I/O or protocol errors.
pub fn http_request(port: u16, method: &str, path: &str, headers: &[(&str, Vec<u8>)]) -> Response {
    try_http_request(port, method, path, headers, &[])
        .unwrap_or_else(|e| panic!("HTTP {method} 127.0.0.1:{port}{path}: {e}"))
}

/// Fallible form of [`http_request`], with an optional request body (Content-Length added when non-empty).
pub fn try_http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, Vec<u8>)],
    body: &[u8],
) -> Result<Response, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;

    let mut req: Vec<u8> = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.extend_from_slice(format!("Host: 127.0.0.1:{port}\r\n").as_bytes());
    }
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    req.extend_from_slice(body);
    stream.write_all(&req).map_err(|e| format!("write: {e}"))?;

    // Read until the response is complete by its own framing (Content-Length or the last chunk),
    // like a real client; waiting for EOF would measure Envoy's delayed close (1 s after a local reply).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if is_framed_and_complete(&raw) {
                    break;
                }
            }
            Err(e) => {
                // A reset after a complete response is fine; otherwise report it.
                if raw.is_empty() {
                    return Err(format!("read: {e}"));
                }
                break;
            }
        }
    }
    parse_response(&raw)
}

/// Parse a complete HTTP/1.1 response (skipping 1xx interim responses).
pub fn parse_response(mut raw: &[u8]) -> Result<Response, String> {
    loop {
        let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| {
            format!(
                "no end of headers in response: {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let rest = &raw[head_end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            dechunk(rest)?
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad content-length {len:?}"))?;
            if rest.len() < len {
                return Err(format!(
                    "body truncated: content-length {len}, got {}",
                    rest.len()
                ));
            }
            rest[..len].to_vec()
        } else {
            rest.to_vec()
        };
        return Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
}

/// True when `raw` holds a whole final response delimited by Content-Length or chunked encoding.
fn is_framed_and_complete(raw: &[u8]) -> bool {
    let Ok(r) = parse_response(raw) else {
        return false;
    };
    if r.header("content-length").is_some() {
        return true;
    }
    r.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("chunked body: missing chunk-size line")?;
        let size_line = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("chunked body: bad size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("chunked body truncated".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}
