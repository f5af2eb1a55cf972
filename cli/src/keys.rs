//! Keys for remote providers, offline: from `--jwks NAME=FILE`, or fetched once from the provider's
//! URI (http directly, https through `curl`), following discovery as the filter does. The config is
//! then rewritten so each remote provider carries its key set inline, and the engine runs on it.

use jwt_guard::config::{Config, JwksSource, Provider, RemoteJwks};
use jwt_guard::fetcher;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where a provider's keys came from, for the explanation.
#[derive(Debug, Clone)]
pub struct KeySource {
    pub provider: String,
    /// `inline`, `file PATH` or `fetched URI`.
    pub from: String,
}

/// The key set text of every remote provider: from `files` (provider name → (path, text)) or
/// fetched. `Err` names the provider and says how to give its keys.
pub fn resolve(
    config: &Config,
    files: &[(String, String, String)],
) -> Result<Vec<(usize, String, KeySource)>, String> {
    for (name, _, _) in files {
        if !config.providers.iter().any(|p| &p.name == name) {
            return Err(format!("--jwks {name}=…: no provider is named {name:?}"));
        }
    }
    let mut out = Vec::new();
    for (i, p) in config.providers.iter().enumerate() {
        let JwksSource::Remote(remote) = &p.jwks else {
            continue;
        };
        if let Some((_, path, text)) = files.iter().find(|(name, _, _)| *name == p.name) {
            out.push((
                i,
                text.clone(),
                KeySource {
                    provider: p.name.clone(),
                    from: format!("file {path}"),
                },
            ));
            continue;
        }
        let (uri, text) = fetch_keys(p, remote).map_err(|e| {
            format!(
                "provider {}: its keys are fetched ({e}); pass --jwks {}=FILE to explain offline",
                p.name, p.name
            )
        })?;
        out.push((
            i,
            text,
            KeySource {
                provider: p.name.clone(),
                from: format!("fetched {uri}"),
            },
        ));
    }
    Ok(out)
}

fn uri(https: bool, authority: &str, path: &str) -> String {
    format!(
        "{}://{authority}{path}",
        if https { "https" } else { "http" }
    )
}

/// Fetches the provider's key set once, through discovery when configured (the document's
/// `issuer` must match, as in the filter). Returns the JWKS URI and its text.
fn fetch_keys(provider: &Provider, remote: &RemoteJwks) -> Result<(String, String), String> {
    let first = uri(remote.https, &remote.authority, &remote.path);
    let headers = &remote.request_headers;
    let body = get(&first, headers)?;
    if !remote.discovery {
        return Ok((first, body));
    }
    let fits = |found: &str| provider.discovery_issuer_fits(found);
    let (authority, path) =
        fetcher::jwks_location_for(body.as_bytes(), &provider.issuer, &fits, remote.https)
            .map_err(|e| format!("discovery document {first}: {}", e.message))?;
    let jwks_uri = uri(remote.https, &authority, &path);
    let body = get(&jwks_uri, headers)?;
    Ok((jwks_uri, body))
}

/// One GET with the provider's request headers: plain HTTP/1.0 over TCP for `http://`, `curl`
/// for `https://`.
fn get(uri: &str, headers: &[(String, String)]) -> Result<String, String> {
    if uri.starts_with("https://") {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-fsS", "--max-time", "10", "-H", "accept: application/json"]);
        for (n, v) in headers {
            cmd.args(["-H", &format!("{n}: {v}")]);
        }
        let out = cmd
            .arg(uri)
            .output()
            .map_err(|e| format!("{uri} needs curl for https: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{uri}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        return String::from_utf8(out.stdout).map_err(|_| format!("{uri}: not UTF-8"));
    }
    let (authority, path) =
        jwt_guard::units::split_uri(uri).ok_or_else(|| format!("{uri}: not an http URI"))?;
    let target = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("{uri}: cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{uri}: {authority} has no address"))?;
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{uri}: cannot connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let request = format!(
        "GET {path} HTTP/1.0\r\nhost: {authority}\r\naccept: application/json\r\n{extra}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{uri}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{uri}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{uri}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("{uri} answered {status}"));
    }
    Ok(body.to_owned())
}

/// The plugin config with each resolved provider's `remote_jwks` replaced by its key set inline.
pub fn inline(raw: &Value, config: &Config, keys: &[(usize, String, KeySource)]) -> Value {
    let mut out = raw.clone();
    for (i, text, _) in keys {
        let Some(name) = config.providers.get(*i).map(|p| p.name.as_str()) else {
            continue;
        };
        if let Some(p) = out
            .get_mut("providers")
            .and_then(|ps| ps.get_mut(name))
            .and_then(Value::as_object_mut)
        {
            p.remove("remote_jwks");
            p.insert(
                "local_jwks".to_owned(),
                serde_json::json!({"inline_string": text}),
            );
        }
    }
    out
}
