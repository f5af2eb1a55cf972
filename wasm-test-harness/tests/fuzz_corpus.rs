//! Writes the seed corpus of jwt-guard's bounded fuzz tests (`tests/fuzz.rs` at the repository root)
//! into `tests/fuzz/corpus/<target>/` from real material: tokens signed with the fixture keys for every
//! algorithm (plus the usual wrong ones), the mock IdP's JWKS and discovery document, and the plugin
//! configs shipped in `envoy/` and `examples/`. Run once, review, commit:
//!
//! ```sh
//! make fuzz-corpus   # cargo test -p wasm-test-harness --test fuzz_corpus -- --ignored
//! ```
//!
//! Tokens carry fixed times (`NOW` below, the `now` the fuzz tests use), so they never expire. PSS and
//! ECDSA signatures are randomised, so a re-run changes those files' bytes, not their meaning.
//! `regressions/` folders are never touched here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jwt_guard::jwks::KeySet;
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_test_harness::keys::{jwk_of, jwks, jwks_of, k1_jwk, KeyName, K1_KID};
use wasm_test_harness::repo_root;
use wasm_test_harness::tokens::{
    default_kid, encode_parts, key_for_alg, sign_raw, sign_raw_as, signing_input,
    with_changes as with, ALGS, AUDIENCE, ISSUER,
};

/// The fuzz tests' clock (tests/fuzz.rs `NOW` is this + 60 s).
const NOW: u64 = 1_700_000_000;

fn corpus() -> PathBuf {
    repo_root().join("tests/fuzz/corpus")
}

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = corpus().join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes.as_ref()).unwrap();
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW, "exp": NOW + 3600})
}

fn header(alg: &str, kid: Option<&str>) -> Value {
    let mut h = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        h["kid"] = json!(kid);
    }
    h
}

fn std_token(alg: &str) -> String {
    sign_raw(
        &header(alg, default_kid(alg)),
        &claims(),
        key_for_alg(alg).unwrap(),
    )
}

fn tokens() {
    // Valid: every algorithm, and a few more shapes. The fuzz tests require exactly these `valid-*`
    // files to be allowed, and every other input to be denied.
    for alg in ALGS {
        write("token", &format!("valid-{alg}.jwt"), std_token(alg));
    }
    write(
        "token",
        "valid-RS256-rsa-2.jwt",
        sign_raw(&header("RS256", Some("rsa-2")), &claims(), KeyName::Rsa2),
    );
    write(
        "token",
        "valid-ES256-no-kid.jwt",
        sign_raw(&header("ES256", None), &claims(), KeyName::Ec1),
    );
    let rich = with(
        claims(),
        json!({
            "aud": ["other-api", AUDIENCE],
            "nbf": NOW - 10,
            "scope": "read:items write:items",
            "scp": ["admin", "reports:read"],
            "tenant": "acme",
            "org": {"id": "o-42", "roles": ["owner", 7, true, null, {"deep": [1.5e3]}]},
            "sub": "ålice ☃ \u{1F512}",
            "jti": "3f1c0f1e-2d5b-4c1a-9d7e-6e0a5b8c9d10",
            "big": 18446744073709551615u64,
            "neg": -1,
            "float": 0.000001,
        }),
    );
    write(
        "token",
        "valid-EdDSA-rich-claims.jwt",
        sign_raw(&header("EdDSA", Some("ed-1")), &rich, KeyName::Ed1),
    );
    write(
        "token",
        "valid-PS256-rich-claims.jwt",
        sign_raw(&header("PS256", Some("rsa-1")), &rich, KeyName::Rsa1),
    );

    // Denied: one file per reason, each a good starting point for mutations.
    let es = |name: &str, h: Value, c: Value| write("token", name, sign_raw(&h, &c, KeyName::Ec1));
    let ec1 = || header("ES256", Some("ec-1"));
    es(
        "expired.jwt",
        ec1(),
        with(claims(), json!({"exp": NOW - 3600})),
    );
    es(
        "not-yet-valid.jwt",
        ec1(),
        with(claims(), json!({"nbf": NOW + 3600})),
    );
    es(
        "missing-exp.jwt",
        ec1(),
        with(claims(), json!({"exp": null})),
    );
    es(
        "wrong-aud.jwt",
        ec1(),
        with(claims(), json!({"aud": "other-api"})),
    );
    es(
        "wrong-aud-array.jwt",
        ec1(),
        with(claims(), json!({"aud": ["a", "b", 3]})),
    );
    es(
        "wrong-iss.jwt",
        ec1(),
        with(claims(), json!({"iss": "https://evil.example"})),
    );
    es("no-iss.jwt", ec1(), with(claims(), json!({"iss": null})));
    es(
        "exp-string.jwt",
        ec1(),
        with(claims(), json!({"exp": (NOW + 3600).to_string()})),
    );
    // Valid: NumericDate may be a non-integer, and may be far away (RFC 7519 §2).
    es(
        "valid-ES256-exp-float.jwt",
        ec1(),
        with(claims(), json!({"exp": (NOW + 3600) as f64 + 0.5})),
    );
    es(
        "valid-ES256-exp-huge.jwt",
        ec1(),
        with(claims(), json!({"exp": 1e300, "nbf": -1e300})),
    );
    es("aud-number.jwt", ec1(), with(claims(), json!({"aud": 42})));
    es(
        "iss-array.jwt",
        ec1(),
        with(claims(), json!({"iss": [ISSUER]})),
    );
    es(
        "unknown-kid.jwt",
        header("ES256", Some("no-such-key")),
        claims(),
    );
    es("enc-key-kid.jwt", header("ES256", Some("enc-1")), claims());
    // ES256 naming the P-384 key: a usable key of another curve (key mismatch).
    es("p384-kid.jwt", header("ES256", Some("ec-384")), claims());
    // ES256 naming the secp256k1 key, which the filter skips (unsupported curve): an unknown kid.
    es("k1-kid.jwt", header("ES256", Some(K1_KID)), claims());
    es(
        "kid-number.jwt",
        json!({"alg": "ES256", "kid": 1}),
        claims(),
    );
    for (name, extra) in [
        ("jku.jwt", json!({"jku": "https://evil.example/jwks"})),
        ("jwk.jwt", json!({"jwk": jwk_of(KeyName::Ec1)})),
        ("x5u.jwt", json!({"x5u": "https://evil.example/cert"})),
        ("x5c.jwt", json!({"x5c": ["MIIB"]})),
        ("crit.jwt", json!({"crit": ["exp"], "exp": NOW})),
    ] {
        es(name, with(ec1(), extra), claims());
    }
    // A nested-JWT header (being made a rejection); forged, so it is denied before and after.
    write(
        "token",
        "cty-jwt-forged.jwt",
        sign_raw_as(
            &json!({"alg": "RS256", "kid": "rsa-1", "cty": "JWT"}),
            &claims(),
            KeyName::RsaRogue,
            "RS256",
        ),
    );
    write(
        "token",
        "key-mismatch.jwt",
        sign_raw_as(
            &header("RS256", Some("ec-1")),
            &claims(),
            KeyName::Rsa1,
            "RS256",
        ),
    );
    write(
        "token",
        "forged-rogue-key.jwt",
        sign_raw_as(
            &header("RS256", Some("rsa-1")),
            &claims(),
            KeyName::RsaRogue,
            "RS256",
        ),
    );
    write(
        "token",
        "hs256-key-confusion.jwt",
        sign_raw(&header("HS256", Some("rsa-1")), &claims(), KeyName::Rsa1),
    );
    for (name, alg) in [
        ("alg-none.jwt", "none"),
        ("alg-None.jwt", "None"),
        ("alg-NONE.jwt", "NONE"),
    ] {
        write(
            "token",
            name,
            format!(
                "{}.",
                signing_input(&to_vec(&header(alg, None)), &to_vec(&claims()))
            ),
        );
    }
    write(
        "token",
        "alg-rs256-lowercase.jwt",
        sign_raw_as(
            &header("rs256", Some("rsa-1")),
            &claims(),
            KeyName::Rsa1,
            "RS256",
        ),
    );
    // ES256 signed, then re-encoded: DER signature, padding, the standard alphabet, whitespace.
    let valid_es = std_token("ES256");
    let (input, sig) = valid_es.rsplit_once('.').unwrap();
    let raw_sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    write(
        "token",
        "sig-der.jwt",
        format!("{input}.{}", b64url(&der(&raw_sig))),
    );
    write("token", "sig-padded.jwt", format!("{input}.{sig}=="));
    write(
        "token",
        "sig-std-alphabet.jwt",
        format!("{input}.{}", STANDARD.encode(&raw_sig)),
    );
    write("token", "trailing-newline.jwt", format!("{valid_es}\n"));
    write("token", "trailing-dot.jwt", format!("{valid_es}."));
    write(
        "token",
        "oversized.jwt",
        sign_raw(
            &ec1(),
            &with(claims(), json!({"pad": "x".repeat(9000)})),
            KeyName::Ec1,
        ),
    );
    write(
        "token",
        "jwe-five-segments.jwt",
        format!(
            "{}.{}.{}.{}.{}",
            b64url(br#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}"#),
            b64url(&[7; 256]),
            b64url(&[1; 12]),
            b64url(b"ciphertext"),
            b64url(&[2; 16])
        ),
    );
    write(
        "token",
        "payload-not-utf8.jwt",
        encode_parts(
            br#"{"alg":"ES256","kid":"ec-1"}"#,
            &[0xff, 0xfe, b'{', 0x80],
            &[0; 64],
        ),
    );
    write(
        "token",
        "payload-array.jwt",
        encode_parts(br#"{"alg":"ES256","kid":"ec-1"}"#, b"[1,2,3]", &[0; 64]),
    );
    write(
        "token",
        "header-not-json.jwt",
        encode_parts(b"alg=ES256", &to_vec(&claims()), &[0; 64]),
    );
    // Raw bytes outside ASCII (as a header value could carry them).
    let mut non_ascii = valid_es.clone().into_bytes();
    non_ascii.insert(10, 0xc3);
    non_ascii.insert(11, 0xa9);
    write("token", "non-ascii.bin", non_ascii);
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// ECDSA r || s as an ASN.1 DER SEQUENCE of two INTEGERs.
fn der(rs: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let x: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
        let mut v = vec![0x02];
        let pad = x.first().is_some_and(|b| b & 0x80 != 0);
        v.push((x.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend(x);
        v
    };
    let body: Vec<u8> = [int(&rs[..32]), int(&rs[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

fn jwks_docs() {
    write("jwks", "idp.json", pretty(&jwks()));
    write(
        "jwks",
        "single-rsa.json",
        pretty(&jwks_of(&[KeyName::Rsa1])),
    );
    write("jwks", "single-ec.json", pretty(&jwks_of(&[KeyName::Ec1])));
    write("jwks", "single-ed.json", pretty(&jwks_of(&[KeyName::Ed1])));
    // Keys bound to algorithms and operations, as some IdPs publish them.
    let mut bound = Vec::new();
    for (key, alg) in [
        (KeyName::Rsa1, "RS256"),
        (KeyName::Rsa2, "PS512"),
        (KeyName::Ec1, "ES256"),
        (KeyName::Ec384, "ES384"),
        (KeyName::Ec521, "ES512"),
        (KeyName::Ed1, "EdDSA"),
    ] {
        let mut jwk = jwk_of(key);
        jwk["alg"] = json!(alg);
        jwk["key_ops"] = json!(["verify"]);
        bound.push(jwk);
    }
    write("jwks", "alg-bound.json", pretty(&json!({"keys": bound})));
    let mut mixed = jwks();
    let keys = mixed["keys"].as_array_mut().unwrap();
    keys.push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
    let mut ops = jwk_of(KeyName::Rsa2);
    ops["kid"] = json!("sign-only");
    ops["key_ops"] = json!(["sign"]);
    keys.push(ops);
    let mut wrong = jwk_of(KeyName::Ec1);
    wrong["kid"] = json!("alg-mismatch");
    wrong["alg"] = json!("RS256");
    keys.push(wrong);
    let mut no_kid = jwk_of(KeyName::Ed1);
    no_kid.as_object_mut().unwrap().remove("kid");
    keys.push(no_kid);
    write("jwks", "mixed-skips.json", pretty(&mixed));
    write(
        "jwks",
        "only-unusable.json",
        pretty(
            &json!({"keys": [{"kty": "oct", "k": "AA"}, {"kty": "EC", "crv": "P-521"}, k1_jwk()]}),
        ),
    );
    write("jwks", "empty-keys.json", "{\"keys\":[]}\n");
    write("jwks", "no-keys.json", "{\"keys\":{}}\n");
    // What the mock IdP's garbage mode serves.
    write("jwks", "garbage.bin", "<html>this is { not json");
    // The shared-data form: current keys plus a retired one with its deadline.
    let previous = KeySet::parse(&to_vec(&jwks_of(&[KeyName::Rsa1, KeyName::RsaRogue]))).unwrap();
    let mut current = KeySet::parse(&to_vec(&jwks())).unwrap();
    current.retire_from(&previous, NOW * 1000, 600_000);
    let (stored, _) = current
        .to_stored_within(jwt_guard::jwks::MAX_STORED_BYTES)
        .unwrap();
    write("jwks", "stored-with-retired.json", stored);
}

fn discovery_docs() {
    // What the mock IdP serves.
    write(
        "discovery",
        "idp.json",
        to_vec(&json!({"issuer": ISSUER, "jwks_uri": "https://idp.demo.local/jwks.json"})),
    );
    // The shape of a real provider's document (fields as OpenID Connect Discovery 1.0 §3 lists them).
    let full = json!({
        "issuer": "https://login.example.com/",
        "authorization_endpoint": "https://login.example.com/oauth2/v1/authorize",
        "token_endpoint": "https://login.example.com/oauth2/v1/token",
        "userinfo_endpoint": "https://login.example.com/oauth2/v1/userinfo",
        "registration_endpoint": "https://login.example.com/oauth2/v1/clients",
        "jwks_uri": "https://login.example.com/oauth2/v1/keys?client_id=0oa1",
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": ["authorization_code", "implicit", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "scopes_supported": ["openid", "email", "profile", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "email", "name"],
        "code_challenge_methods_supported": ["S256"],
        "request_parameter_supported": true,
        "frontchannel_logout_supported": false,
    });
    write("discovery", "full.json", pretty(&full));
    let set = |extra: Value| pretty(&with(full.clone(), extra));
    write(
        "discovery",
        "issuer-mismatch.json",
        set(json!({"issuer": "https://login.example.com"})),
    );
    write(
        "discovery",
        "jwks-uri-http.json",
        set(json!({"jwks_uri": "http://login.example.com/keys"})),
    );
    write(
        "discovery",
        "jwks-uri-missing.json",
        set(json!({"jwks_uri": null})),
    );
    write(
        "discovery",
        "jwks-uri-not-url.json",
        set(json!({"jwks_uri": "file:///etc/passwd"})),
    );
    write("discovery", "issuer-number.json", set(json!({"issuer": 1})));
    write(
        "discovery",
        "array.json",
        "[{\"issuer\":\"https://login.example.com/\"}]\n",
    );
}

/// Every JSON string that a YAML file carries in a `configuration: {value: ...}` (Envoy's
/// StringValue), and every Istio `pluginConfig`, as JSON text.
fn plugin_configs_in_yaml(path: &Path) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(s)) = m.get("configuration").and_then(|c| c.get("value"))
                {
                    out.push(s.clone());
                }
                if let Some(pc) = m.get("pluginConfig") {
                    out.push(serde_json::to_string_pretty(pc).unwrap() + "\n");
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let doc = serde_yaml::Value::deserialize(de).unwrap();
        walk(&serde_json::to_value(doc).unwrap(), &mut out);
    }
    out
}

fn configs() {
    let root = repo_root();
    write(
        "config",
        "envoy-plugin-config.json",
        std::fs::read(root.join("envoy/plugin-config.json")).unwrap(),
    );
    for rel in [
        "examples/envoy/envoy.yaml",
        "examples/envoy/listener.yaml",
        "examples/istio/wasmplugin.yaml",
    ] {
        let found = plugin_configs_in_yaml(&root.join(rel));
        assert!(!found.is_empty(), "no plugin config in {rel}");
        for (i, text) in found.iter().enumerate() {
            let stem = rel.trim_start_matches("examples/").replace(['/', '.'], "-");
            write("config", &format!("{stem}-{i}.json"), text);
        }
    }
    let inline = json!({
        "realm": "demo",
        "providers": {"demo": {
            "issuer": ISSUER, "audiences": [AUDIENCE], "local_jwks": {"inline": jwks()},
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}],
    });
    write("config", "local-inline.json", pretty(&inline));
    let mut string = inline.clone();
    string["providers"]["demo"]["local_jwks"] = json!({"inline_string": jwks().to_string()});
    write("config", "local-inline-string.json", pretty(&string));
    // Every field the README documents, set.
    let full = json!({
        "realm": "portal",
        "jwks_wait_timeout": "2.5s",
        "allow_cors_preflight": false,
        "strip_header_prefixes": ["x-user-", "x-tenant-", "x-auth-", "x-internal-"],
        "max_header_value_bytes": 2048,
        "token_cache_size": 512,
        "audit": {"filter_state": true, "log": true, "allow_sample_rate": 0.25, "tenant_claim": "org.id"},
        "providers": {
            "corp": {
                "issuer": "https://login.example.com/",
                "audiences": ["api://portal", "portal"],
                "remote_jwks": {
                    "discovery": {"cluster": "idp", "timeout": "1500ms"},
                    "cache_duration": "300s", "max_stale": "900s", "rotation_grace": "600s",
                    "unknown_kid_refetch_interval": "30s"
                },
                "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
                "clock_skew_seconds": 30,
                "require_expiration": true,
                "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "},
                                 {"name": "x-jwt"}],
                "from_params": ["access_token"],
                "from_cookies": ["session"],
                "max_token_bytes": 4096,
                "claim_to_headers": [{"claim": "sub", "header": "x-user-sub"},
                                     {"claim": "org.id", "header": "x-tenant-id"},
                                     {"claim": "scope", "header": "x-user-scope"}],
                "forward_token": false
            },
            "partner": {
                "issuer": "partner-idp",
                "remote_jwks": {"http_uri": {"uri": "https://keys.partner.example/jwks.json",
                                             "cluster": "partner", "timeout": "3s"}}
            },
            "local": {"issuer": ISSUER, "local_jwks": {"inline": jwks_of(&[KeyName::Ec1])}}
        },
        "rules": [
            {"name": "health", "match": {"path": "/healthz"}},
            {"name": "read", "match": {"template": "/items/{id}/**", "methods": ["GET", "head"]},
             "requires": {"provider_name": "corp", "scopes": ["read:items"]}},
            {"name": "admin", "match": {"prefix": "/admin/", "hosts": ["*.example.com", "portal.example.com"]},
             "requires": {"requires_any": {"requirements": [{"provider_name": "corp"}, {"provider_name": "partner"}]},
                          "any_scopes": ["admin", "root"], "audiences": ["admin-api"],
                          "claims": [{"name": "tenant", "values": ["acme"]}, {"name": "email_verified"}]}},
            {"name": "reports", "match": {"prefix": "/reports/", "route_name": "reports-route"},
             "mode": "shadow", "on_keys_unavailable": "degraded",
             "requires": {"provider_name": "local", "allow_missing": true}},
            {"name": "public", "match": {"prefix": "/static/"}, "mode": "off"}
        ],
        "default": {"requires": {"provider_name": "corp"}, "mode": "enforce", "on_keys_unavailable": "fail_closed"}
    });
    write("config", "every-field.json", pretty(&full));
    write(
        "config",
        "rejected-hs256.json",
        pretty(&with(
            inline.clone(),
            json!({"providers": {"demo": {"issuer": ISSUER, "local_jwks": {"inline": jwks()},
                                          "algorithms": ["HS256"]}}}),
        )),
    );
    write(
        "config",
        "rejected-typo.json",
        pretty(&with(inline, json!({"rulez": []}))),
    );
}

#[test]
#[ignore = "writes tests/fuzz/corpus; run with `make fuzz-corpus`"]
fn generate() {
    for target in ["token", "jwks", "discovery", "config"] {
        let dir = corpus().join(target);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries {
                let p = e.unwrap().path();
                if p.is_file() {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
    }
    tokens();
    jwks_docs();
    discovery_docs();
    configs();
    eprintln!("corpus written to {}", corpus().display());
}
