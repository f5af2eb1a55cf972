//! A tiny thread-backed HTTP/1.1 server (keep-alive, raw header bytes) shared by the mock IdP and
//! the echo upstream. Raw sockets rather than an HTTP library so that any header bytes Envoy forwards
//! (including non-UTF-8) are seen as-is.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A parsed request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Request target as sent (path plus query).
    pub target: String,
    /// Header names as sent, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Path without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Decoded query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// A response to send.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Listening server; stops accepting (and idle connections close) when dropped.
pub struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Bind 127.0.0.1:`port` (0 = any free port) and serve `handler` on background threads.
    pub fn start(port: u16, handler: Handler) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept_thread = std::thread::Builder::new()
            .name(format!("http-{port}"))
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (h, s) = (handler.clone(), stop2.clone());
                            let _ = std::thread::Builder::new()
                                .name(format!("http-{port}-conn"))
                                .spawn(move || serve_connection(stream, h, s));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })?;
        Ok(HttpServer {
            port,
            stop,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(mut stream: TcpStream, handler: Handler, stop: Arc<AtomicBool>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse_request(&buf) {
            Err(e) => {
                let reply = Reply::new(400, "text/plain", format!("bad request: {e}\n"));
                let _ = write_reply(&mut stream, &reply, true);
                return;
            }
            Ok(Some((req, used))) => {
                buf.drain(..used);
                let close = req
                    .header("connection")
                    .is_some_and(|c| c.eq_ignore_ascii_case("close"));
                let reply = handler(&req);
                if write_reply(&mut stream, &reply, close).is_err() || close {
                    return;
                }
                continue;
            }
            Ok(None) => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn write_reply(stream: &mut TcpStream, reply: &Reply, close: bool) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).into_bytes();
    for (n, v) in &reply.headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n", reply.body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&reply.body);
    stream.write_all(&out)?;
    stream.flush()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Ok(None) = need more bytes; Ok(Some((request, bytes consumed))).
fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 1 << 20 {
            Err("headers too large".into())
        } else {
            Ok(None)
        };
    };
    let head = &buf[..head_end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!("bad request line {request_line:?}"));
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "bad header line {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
        let value = line[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    let body_start = head_end + 4;
    let rest = &buf[body_start..];
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        let mut pos = 0;
        let mut body = Vec::new();
        loop {
            let Some(le) = find(&rest[pos..], b"\r\n") else {
                return Ok(None);
            };
            let size_line = String::from_utf8_lossy(&rest[pos..pos + le]).into_owned();
            let size_hex = size_line.split(';').next().unwrap_or("").trim().to_string();
            let size = usize::from_str_radix(&size_hex, 16)
                .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
            pos += le + 2;
            if size == 0 {
                // Skip trailers up to the empty line.
                let Some(te) = find(&rest[pos..], b"\r\n") else {
                    return Ok(None);
                };
                if te == 0 {
                    pos += 2;
                } else {
                    let Some(end) = find(&rest[pos..], b"\r\n\r\n") else {
                        return Ok(None);
                    };
                    pos += end + 4;
                }
                req.body = body;
                return Ok(Some((req, body_start + pos)));
            }
            if rest.len() < pos + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
    }
    let len: usize = match req.header("content-length") {
        Some(l) => l
            .trim()
            .parse()
            .map_err(|_| format!("bad content-length {l:?}"))?,
        None => 0,
    };
    if rest.len() < len {
        return Ok(None);
    }
    req.body = rest[..len].to_vec();
    Ok(Some((req, body_start + len)))
}

pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
