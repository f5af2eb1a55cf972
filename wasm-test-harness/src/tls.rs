//! TLS for the end-to-end tests of mTLS-bound tokens (RFC 8705): a throwaway PKI made with the
//! `openssl` command line (a CA, a server certificate for 127.0.0.1/localhost, two client
//! certificates of that CA), a bootstrap template whose listeners terminate TLS and ask for client
//! certificates, and HTTPS requests through the `curl` command line (the harness's own client speaks
//! plain HTTP only). Both commands must be installed: a missing one is an error, never a skip.
//!
//! The template names the PKI's files by absolute path, in the PKI's own temp dir (where the
//! template itself is written): a local Envoy reads them, and an Envoy in a container
//! (`ENVOY_CONTAINER`) gets that directory mounted read-only at the same path (`EnvoyOptions::mounts`,
//! set by `Stack::with_template`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::client::{parse_response, Response};
use crate::keys::pem_to_der;

/// A certificate and its private key (PEM files).
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The certificate's DER (the PEM body).
    pub fn der(&self) -> Vec<u8> {
        let pem = fs::read_to_string(&self.cert)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.cert.display()));
        pem_to_der(&pem)
    }
}

/// The test PKI, in its own temp dir (removed on drop unless the thread panics or
/// `KEEP_ENVOY_TMP` is set).
pub struct TestPki {
    pub dir: PathBuf,
    /// The CA certificate (PEM): Envoy's `trusted_ca` and curl's `--cacert`.
    pub ca: PathBuf,
    /// For 127.0.0.1 and localhost (subjectAltName), serverAuth.
    pub server: CertFiles,
    /// The client certificate tokens are bound to (CN good-client), clientAuth.
    pub good_client: CertFiles,
    /// Another client certificate of the same CA (CN other-client), clientAuth.
    pub other_client: CertFiles,
    /// A self-signed client certificate (CN rogue-client): no CA Envoy trusts issued it.
    pub rogue_client: CertFiles,
}

/// Runs `openssl args` in `dir`; an error with its output unless it succeeds.
fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!("cannot run `openssl` ({e}): the mTLS tests need the openssl command line")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl TestPki {
    /// Generates the CA, its three certificates and the rogue one (P-256 keys, valid for a day).
    pub fn generate() -> Result<TestPki, String> {
        let dir = crate::envoy::make_temp_dir("jwt-guard-pki")?;
        TestPki::generate_in(dir.clone()).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })
    }

    fn generate_in(dir: PathBuf) -> Result<TestPki, String> {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca_args = vec!["req", "-x509"];
        ca_args.extend(ec);
        ca_args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=jwt-guard test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&dir, &ca_args)?;
        let leaf = |name: &str, cn: &str, ext: &str| -> Result<CertFiles, String> {
            let ext_file = format!("{name}.ext");
            fs::write(dir.join(&ext_file), ext)
                .map_err(|e| format!("cannot write {ext_file}: {e}"))?;
            let (key, csr, cert) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subj = format!("/CN={cn}");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(&dir, &req)?;
            let serial = format!("0x{:016x}", rand::random::<u64>() >> 1);
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    &serial,
                    "-days",
                    "1",
                    "-sha256",
                    "-extfile",
                    &ext_file,
                    "-out",
                    &cert,
                ],
            )?;
            Ok(CertFiles {
                cert: dir.join(cert),
                key: dir.join(key),
            })
        };
        let client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                          extendedKeyUsage=clientAuth\n";
        let mut rogue = vec!["req", "-x509"];
        rogue.extend(ec);
        rogue.extend([
            "-keyout",
            "rogue-client.key",
            "-out",
            "rogue-client.pem",
            "-days",
            "1",
            "-subj",
            "/CN=rogue-client",
            "-addext",
            "extendedKeyUsage=clientAuth",
        ]);
        openssl(&dir, &rogue)?;
        let pki = TestPki {
            rogue_client: CertFiles {
                cert: dir.join("rogue-client.pem"),
                key: dir.join("rogue-client.key"),
            },
            ca: dir.join("ca.pem"),
            server: leaf(
                "server",
                "localhost",
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
            )?,
            good_client: leaf("good-client", "good-client", client_ext)?,
            other_client: leaf("other-client", "other-client", client_ext)?,
            dir,
        };
        Ok(pki)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("KEEP_ENVOY_TMP").is_some() {
            eprintln!("[harness] test PKI kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A listener of [`tls_bootstrap`]: its name and whether the TLS handshake demands a client
/// certificate (`false`: one is asked for and verified when sent, but a client may send none).
#[derive(Clone, Copy, Debug)]
pub struct TlsListener<'a> {
    pub name: &'a str,
    pub require_client_certificate: bool,
}

/// A bootstrap template made from `template_text` (e.g. envoy/envoy.yaml) whose one listener
/// (`- name: main`, up to `  clusters:`) becomes one TLS listener per entry of `listeners`, all on
/// {{LISTEN_PORT}} (port 0: each binds its own ephemeral port), each with a `DownstreamTlsContext`
/// serving `pki.server` and verifying client certificates against `pki.ca`. The first listener should be
/// named `main`: the harness reports its port as the Envoy's listen port
/// ([`Envoy::listener_port`](crate::envoy::Envoy::listener_port) finds the others).
pub fn tls_bootstrap(
    template_text: &str,
    pki: &TestPki,
    listeners: &[TlsListener<'_>],
) -> Result<String, String> {
    const START: &str = "  - name: main\n";
    const END: &str = "  clusters:\n";
    const CHAIN: &str = "    filter_chains:\n    - filters:\n";
    let start = template_text
        .find(START)
        .ok_or_else(|| format!("template has no `{}` listener", START.trim()))?;
    let end = template_text[start..]
        .find(END)
        .map(|i| start + i)
        .ok_or("template has no `clusters:` after its listener")?;
    let listener = &template_text[start..end];
    if !listener.contains(CHAIN) {
        return Err(format!(
            "the listener has no `{}` to put a transport socket on",
            CHAIN.trim()
        ));
    }
    let path = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    let mut out = template_text[..start].to_owned();
    for l in listeners {
        let tls = format!(
            "    filter_chains:\n    - transport_socket:\n        name: envoy.transport_sockets.tls\n        \
             typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          \
             require_client_certificate: {}\n          common_tls_context:\n            tls_certificates:\n            \
             - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n            \
             validation_context:\n              trusted_ca: {{ filename: {} }}\n      filters:\n",
            l.require_client_certificate,
            path(&pki.server.cert),
            path(&pki.server.key),
            path(&pki.ca),
        );
        out.push_str(
            &listener
                .replacen(START, &format!("  - name: {}\n", l.name), 1)
                .replacen(CHAIN, &tls, 1),
        );
    }
    out.push_str(&template_text[end..]);
    Ok(out)
}

/// What `curl` did: its exit code (0 = an HTTP answer came), and the answer when one came.
#[derive(Clone, Debug)]
pub struct CurlResult {
    pub exit_code: i32,
    pub stderr: String,
    pub response: Option<Response>,
}

/// One HTTPS request with `curl` to `https://127.0.0.1:<port><path>`, trusting `ca`, presenting
/// `client` (certificate and key) if given, with `headers` (`name: value`). The response is read
/// from `curl -i` (status line, headers, body). Panics if curl cannot be run.
pub fn curl(
    port: u16,
    method: &str,
    path: &str,
    ca: &Path,
    client: Option<&CertFiles>,
    headers: &[(&str, &str)],
) -> CurlResult {
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--http1.1", "--max-time", "15", "-X", method])
        .arg("--cacert")
        .arg(ca);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    for (name, value) in headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    cmd.arg(&url);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run `curl` ({e}): the mTLS tests need the curl command line")
    });
    let exit_code = out.status.code().unwrap_or(-1);
    let response = if exit_code == 0 {
        Some(parse_response(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "curl {url}: unreadable answer ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        }))
    } else {
        None
    };
    CurlResult {
        exit_code,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        response,
    }
}
