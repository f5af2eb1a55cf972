//! Mock IdP, echo upstream and the raw HTTP client (no Envoy needed).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasm_test_harness::client::parse_response;
use wasm_test_harness::{http_get, http_request, keys, Behavior, EchoUpstream, MockIdp};

#[test]
fn idp_serves_jwks_and_counts_requests() {
    let idp = MockIdp::start();
    assert_ne!(idp.port(), 0);
    assert_eq!(idp.jwks_requests(), 0);
    let r = http_get(idp.port(), "/jwks.json", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.json(), keys::jwks());
    http_get(idp.port(), "/jwks.json", &[]);
    assert_eq!(idp.jwks_requests(), 2);
    // Other paths are 404 and not counted.
    assert_eq!(http_get(idp.port(), "/other", &[]).status, 404);
    assert_eq!(idp.jwks_requests(), 2);

    let replacement = keys::jwks_of(&[keys::KeyName::Rsa2]);
    idp.set_jwks(replacement.clone());
    assert_eq!(http_get(idp.port(), "/jwks.json", &[]).json(), replacement);
    assert_eq!(idp.jwks_requests(), 3);
    assert!(idp.wait_for_jwks_requests(3, Duration::from_millis(10)));
}

#[test]
fn idp_behaviors() {
    let idp = MockIdp::start();
    idp.set_behavior(Behavior::Status(503));
    assert_eq!(http_get(idp.port(), "/jwks.json", &[]).status, 503);

    idp.set_behavior(Behavior::Garbage);
    let r = http_get(idp.port(), "/jwks.json", &[]);
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "garbage body parsed as JSON: {}",
        r.body
    );

    idp.set_behavior(Behavior::Delay(Duration::from_millis(400)));
    let t = Instant::now();
    let r = http_get(idp.port(), "/jwks.json", &[]);
    assert!(t.elapsed() >= Duration::from_millis(400));
    assert_eq!(r.json(), keys::jwks());

    idp.set_behavior(Behavior::Normal);
    assert_eq!(http_get(idp.port(), "/jwks.json", &[]).status, 200);
    assert_eq!(idp.jwks_requests(), 4);
}

#[test]
fn idp_keep_alive_serves_several_requests_per_connection() {
    let idp = MockIdp::start();
    let mut s = TcpStream::connect(("127.0.0.1", idp.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = b"GET /jwks.json HTTP/1.1\r\nHost: idp\r\n\r\n";
    s.write_all(req).unwrap();
    s.write_all(req).unwrap();
    s.write_all(b"GET /jwks.json HTTP/1.1\r\nHost: idp\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    assert_eq!(idp.jwks_requests(), 3);
}

#[test]
fn idp_mint_endpoint() {
    let idp = MockIdp::start();
    let r = http_get(idp.port(), "/mint", &[]);
    assert_eq!(r.status, 200);
    let token = r.body.trim();
    let (h, p, _) = wasm_test_harness::tokens::decode_parts(token).unwrap();
    let h: Value = serde_json::from_slice(&h).unwrap();
    let p: Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(
        (h["alg"].as_str(), h["kid"].as_str()),
        (Some("ES256"), Some("ec-1"))
    );
    assert_eq!(
        (p["sub"].as_str(), p["aud"].as_str()),
        (Some("alice"), Some("demo-api"))
    );
    assert_eq!(p["iss"], "https://idp.demo.local");
    assert_eq!(
        p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(),
        3600
    );

    let r = http_get(
        idp.port(),
        "/mint?sub=bob%20b&alg=RS256&aud=other&ttl=-60&iss=https%3A%2F%2Fx&kid=zzz",
        &[],
    );
    let (h, p, _) = wasm_test_harness::tokens::decode_parts(r.body.trim()).unwrap();
    let h: Value = serde_json::from_slice(&h).unwrap();
    let p: Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(
        (h["alg"].as_str(), h["kid"].as_str()),
        (Some("RS256"), Some("zzz"))
    );
    assert_eq!(p["sub"], "bob b");
    assert_eq!(p["aud"], "other");
    assert_eq!(p["iss"], "https://x");
    assert_eq!(p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(), -60);

    assert_eq!(http_get(idp.port(), "/mint?alg=HS256", &[]).status, 400);

    // Any claim, scopes, times; iat/exp can be left out.
    let claims = |q: &str| {
        let r = http_get(idp.port(), &format!("/mint?{q}"), &[]);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let (_, p, _) = wasm_test_harness::tokens::decode_parts(r.body.trim()).unwrap();
        serde_json::from_slice::<Value>(&p).unwrap()
    };
    let p = claims(
        "scope=read:items+admin&scp=a,b&claim.tenant=acme&claim.level=7&claim.groups=%5B%22x%22%5D\
         &claim.https://example.com/roles=r&aud=a1&aud=a2&exp_in=-120&nbf_in=30",
    );
    assert_eq!(p["scope"], "read:items admin");
    assert_eq!(p["scp"], json!(["a", "b"]));
    assert_eq!(p["tenant"], "acme");
    assert_eq!(p["level"], 7);
    assert_eq!(p["groups"], json!(["x"]));
    assert_eq!(p["https://example.com/roles"], "r");
    assert_eq!(p["aud"], json!(["a1", "a2"]));
    let iat = p["iat"].as_i64().unwrap();
    assert_eq!(p["exp"].as_i64().unwrap() - iat, -120);
    assert_eq!(p["nbf"].as_i64().unwrap() - iat, 30);
    let p = claims("exp=none&iat=none&nbf=1700000000");
    assert!(p.get("exp").is_none() && p.get("iat").is_none(), "{p}");
    assert_eq!(p["nbf"], 1_700_000_000);

    // Unknown parameters and bad values are refused, naming every known parameter.
    for q in ["foo=1", "claim.=x", "exp_in=soon", "nbf=later"] {
        let r = http_get(idp.port(), &format!("/mint?{q}"), &[]);
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        for (name, _) in wasm_test_harness::tokens::MINT_PARAMS {
            assert!(r.body.contains(name), "{q}: {name} not listed");
        }
    }
    let help = http_get(idp.port(), "/mint?help=1", &[]);
    assert_eq!(help.status, 200);
    assert!(help.body.contains("claim.NAME"));
    assert_eq!(idp.jwks_requests(), 0);
}

#[test]
fn idp_stops_on_drop() {
    let port = {
        let idp = MockIdp::start();
        idp.port()
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepting"
    );
}

#[test]
fn echo_upstream_reports_and_records_headers() {
    let up = EchoUpstream::start();
    let r = http_get(
        up.port(),
        "/hello?x=1",
        &[
            ("X-Custom", b"Value 1".to_vec()),
            ("X-Bytes", vec![b'a', 0xff, 0xfe, b'z']),
        ],
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(v["headers"]["x-custom"], "Value 1");
    assert!(v["headers"]["host"].is_string());

    let r = http_request(up.port(), "DELETE", "/thing", &[]);
    assert_eq!(r.json()["method"], "DELETE");

    assert_eq!(up.count(), 2);
    let reqs = up.requests();
    assert_eq!(reqs[0].path, "/hello?x=1");
    assert_eq!(reqs[0].header("x-custom"), Some("Value 1"));
    assert_eq!(reqs[0].header("X-CUSTOM"), Some("Value 1"));
    let raw = reqs[0]
        .raw_headers
        .iter()
        .find(|(n, _)| n == "x-bytes")
        .unwrap();
    assert_eq!(raw.1, vec![b'a', 0xff, 0xfe, b'z']);
    assert_eq!(reqs[1].method, "DELETE");
    assert_eq!(up.last().unwrap().path, "/thing");
    up.clear();
    assert_eq!(up.count(), 0);
}

#[test]
fn client_parses_chunked_and_content_length() {
    let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n").unwrap();
    assert_eq!(
        (r.status, r.body.as_str(), r.header("x-a")),
        (200, "hello world", Some("b"))
    );
    let r = parse_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnopeEXTRA").unwrap();
    assert_eq!((r.status, r.body.as_str()), (401, "nope"));
    let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert!(parse_response(b"garbage").is_err());
}

#[test]
fn client_sends_arbitrary_header_bytes_and_body() {
    let up = EchoUpstream::start();
    let r = wasm_test_harness::client::try_http_request(
        up.port(),
        "POST",
        "/p",
        &[("Authorization", b"Bearer \xc3\x28".to_vec())],
        b"body!",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let rec = up.last().unwrap();
    assert_eq!(rec.body, b"body!");
    let auth = rec
        .raw_headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap();
    assert_eq!(auth.1, b"Bearer \xc3\x28");
    assert_eq!(json!(rec.method), json!("POST"));
}
