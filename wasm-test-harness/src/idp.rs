//! Mock identity provider: serves GET /jwks.json (with controllable failure modes) and GET /mint.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::{HttpServer, Reply, Request};
use crate::tokens;

/// How the IdP answers GET /jwks.json.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// 200 with the current JWKS.
    Normal,
    /// Answer with this status (body: a short text message).
    Status(u16),
    /// Sleep this long, then answer normally.
    Delay(Duration),
    /// 200 application/json whose body is not JSON.
    Garbage,
    /// 200 with a valid JWKS padded past the filter's 256 KiB limit.
    Oversized,
}

struct State {
    jwks: Value,
    behavior: Behavior,
    discovery_issuer: String,
    discovery_requests: usize,
    jwks_requests: usize,
    requests: Vec<String>,
    user_agents: Vec<Option<String>>,
}

/// A running mock IdP on 127.0.0.1:<free port>. Stops when dropped.
pub struct MockIdp {
    state: Arc<Mutex<State>>,
    port: u16,
    /// `None` while the port is closed (`close` .. `reopen`).
    server: Mutex<Option<HttpServer>>,
}

impl MockIdp {
    /// Start on a free port, publishing [`crate::keys::jwks()`].
    pub fn start() -> MockIdp {
        MockIdp::start_on(0).unwrap_or_else(|e| panic!("MockIdp: cannot bind 127.0.0.1:0: {e}"))
    }

    /// Start on a given port (0 = free port).
    pub fn start_on(port: u16) -> std::io::Result<MockIdp> {
        let state = Arc::new(Mutex::new(State {
            jwks: crate::keys::jwks(),
            behavior: Behavior::Normal,
            discovery_issuer: tokens::ISSUER.to_owned(),
            discovery_requests: 0,
            jwks_requests: 0,
            requests: Vec::new(),
            user_agents: Vec::new(),
        }));
        let server = serve(&state, port)?;
        Ok(MockIdp {
            state,
            port: server.port(),
            server: Mutex::new(Some(server)),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops listening: connections to the port are refused (and open ones close) until `reopen`,
    /// as when the IdP is down.
    pub fn close(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(server);
    }

    /// Listens on the same port again, with the same state, after `close`.
    pub fn reopen(&self) -> std::io::Result<()> {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if server.is_none() {
            *server = Some(serve(&self.state, self.port)?);
        }
        Ok(())
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// Replace the JWKS served from now on.
    pub fn set_jwks(&self, jwks: Value) {
        self.lock().jwks = jwks;
    }

    /// The JWKS currently served.
    pub fn current_jwks(&self) -> Value {
        self.lock().jwks.clone()
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        self.lock().behavior = behavior;
    }

    /// The `issuer` the discovery document claims (default: the real one).
    pub fn set_discovery_issuer(&self, issuer: &str) {
        self.lock().discovery_issuer = issuer.to_owned();
    }

    /// Number of GET /.well-known/openid-configuration requests so far.
    pub fn discovery_requests(&self) -> usize {
        self.lock().discovery_requests
    }

    /// Number of GET /jwks.json requests received so far (whatever the behavior).
    pub fn jwks_requests(&self) -> usize {
        self.lock().jwks_requests
    }

    /// Every request target received so far ("GET /jwks.json", ...), in order.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The `user-agent` of every request so far, in order (`None` where there was none).
    pub fn user_agents(&self) -> Vec<Option<String>> {
        self.lock().user_agents.clone()
    }

    /// Wait until at least `n` JWKS requests have been seen; false on timeout.
    pub fn wait_for_jwks_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.jwks_requests() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.jwks_requests() >= n
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn serve(state: &Arc<Mutex<State>>, port: u16) -> std::io::Result<HttpServer> {
    let st = state.clone();
    HttpServer::start(port, Arc::new(move |req: &Request| handle(&st, req)))
}

fn handle(state: &Mutex<State>, req: &Request) -> Reply {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    {
        let mut s = lock();
        s.requests.push(format!("{} {}", req.method, req.target));
        let user_agent = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        s.user_agents.push(user_agent);
    }
    match (req.method.as_str(), req.path()) {
        ("GET", "/jwks.json") => {
            let (behavior, jwks) = {
                let mut s = lock();
                s.jwks_requests += 1;
                (s.behavior.clone(), s.jwks.clone())
            };
            let ok = || Reply::new(200, "application/json", jwks.to_string());
            match behavior {
                Behavior::Normal => ok(),
                Behavior::Status(code) => {
                    Reply::new(code, "text/plain", format!("mock idp: status {code}\n"))
                }
                Behavior::Delay(d) => {
                    std::thread::sleep(d);
                    ok()
                }
                Behavior::Garbage => {
                    Reply::new(200, "application/json", "<html>this is { not json")
                }
                Behavior::Oversized => {
                    let mut big = jwks.clone();
                    big["padding"] = Value::String("x".repeat(300 * 1024));
                    Reply::new(200, "application/json", big.to_string())
                }
            }
        }
        ("GET", "/.well-known/openid-configuration") => {
            let issuer = {
                let mut s = lock();
                s.discovery_requests += 1;
                s.discovery_issuer.clone()
            };
            // The filter fetches jwks_uri through its configured cluster, so the host here is only
            // the :authority of that call.
            let doc = json!({"issuer": issuer, "jwks_uri": "https://idp.demo.local/jwks.json"});
            Reply::new(200, "application/json", doc.to_string())
        }
        ("GET", "/mint") => mint(req),
        _ => Reply::new(404, "text/plain", "not found\n"),
    }
}

/// GET /mint?sub=&alg=&scope=&claim.NAME=&exp_in=… -> token as text (`tokens::MINT_PARAMS`); an
/// unknown parameter or a bad value is a 400 that lists the parameters.
fn mint(req: &Request) -> Reply {
    let query = req.query();
    if query.iter().any(|(n, _)| n == "help") {
        let help = format!("GET /mint parameters:\n{}", tokens::mint_help());
        return Reply::new(200, "text/plain", help);
    }
    match tokens::mint_request(&query) {
        Ok((alg, kid, claims)) => {
            let token = tokens::mint(&alg, kid.as_deref(), &claims);
            Reply::new(200, "text/plain", format!("{token}\n"))
        }
        Err(e) => Reply::new(
            400,
            "text/plain",
            format!("{e}\n\nGET /mint parameters:\n{}", tokens::mint_help()),
        ),
    }
}
