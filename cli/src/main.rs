//! `jwt-guard explain|lint`; see `jwt-guard --help`.

use jwt_guard_cli::explain::{self, Failure, Options, Request};
use jwt_guard_cli::lint;
use std::process::ExitCode;

const USAGE: &str = "\
usage:
  jwt-guard explain --config FILE [--token TOKEN|@FILE] [--method M] [--path P] [--host H]
                    [--header 'NAME: VALUE']... [--route NAME] [--jwks PROVIDER=FILE]...
                    [--now UNIX] [--json]
  jwt-guard lint --config FILE [--json]

explain  decides one request as the filter in Envoy would, and says why: the rule that matched
         and why the earlier ones did not, each check in pipeline order, the decision in the
         rule's mode (and what shadow would report), the answer Envoy would send, and the
         headers removed and set. Remote providers read their keys from --jwks, or they are
         fetched once from the configured URI.
         exit: 0 forwarded, 1 answered by the filter, 2 usage or config refused, 3 keys
         unavailable, 70 internal disagreement.
lint     the errors Envoy's on_configure gives (same text, field named) and reviewer warnings.
         exit: 0 clean, 1 warnings, 2 refused or usage.
";

fn usage(message: &str) -> ExitCode {
    eprintln!("jwt-guard: {message}\n{USAGE}");
    ExitCode::from(2)
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("explain") => run_explain(&args[1..]),
        Some("lint") => run_lint(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => usage(&format!("unknown command {other:?}")),
        None => usage("a command is needed"),
    }
}

/// `--name value` pairs and `--json`; every option known, none repeated unless allowed.
struct Args {
    pairs: Vec<(String, String)>,
    json: bool,
}

fn parse(args: &[String], known: &[&str], repeatable: &[&str]) -> Result<Args, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--json" {
            json = true;
            continue;
        }
        let name = a
            .strip_prefix("--")
            .filter(|n| known.contains(n))
            .ok_or_else(|| format!("unknown argument {a:?}"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        if !repeatable.contains(&name) && pairs.iter().any(|(n, _)| n == name) {
            return Err(format!("--{name} given twice"));
        }
        pairs.push((name.to_owned(), value.clone()));
    }
    Ok(Args { pairs, json })
}

impl Args {
    fn one(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn options(a: &Args) -> Result<Options, String> {
    let config = read(a.one("config").ok_or("--config FILE is needed")?)?;
    let token = match a.one("token") {
        Some(t) => Some(match t.strip_prefix('@') {
            Some(path) => String::from_utf8(read(path)?)
                .map_err(|_| format!("{path} is not UTF-8"))?
                .trim()
                .to_owned(),
            None => t.to_owned(),
        }),
        None => None,
    };
    let mut headers = Vec::new();
    for h in a.all("header") {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected 'NAME: VALUE'"))?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let mut jwks = Vec::new();
    for j in a.all("jwks") {
        let (name, path) = j
            .split_once('=')
            .ok_or_else(|| format!("--jwks {j:?}: expected PROVIDER=FILE"))?;
        let text = String::from_utf8(read(path)?).map_err(|_| format!("{path} is not UTF-8"))?;
        jwks.push((name.to_owned(), path.to_owned(), text));
    }
    let now_secs = match a.one("now") {
        Some(n) => n
            .parse::<u64>()
            .map_err(|_| format!("--now {n:?}: expected Unix seconds"))?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| format!("the system clock: {e}"))?
            .as_secs(),
    };
    Ok(Options {
        config,
        request: Request {
            method: a.one("method").unwrap_or("GET").to_owned(),
            path: a.one("path").unwrap_or("/").to_owned(),
            host: a.one("host").unwrap_or("localhost").to_owned(),
            token,
            headers,
            route: a.one("route").map(str::to_owned),
        },
        jwks,
        now_secs,
    })
}

fn run_explain(args: &[String]) -> ExitCode {
    let known = [
        "config", "token", "method", "path", "host", "header", "route", "jwks", "now",
    ];
    let a = match parse(args, &known, &["header", "jwks"]) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let opts = match options(&a) {
        Ok(o) => o,
        Err(e) => return usage(&e),
    };
    match explain::explain(&opts) {
        Ok(x) => {
            if a.json {
                println!("{}", x.to_json());
            } else {
                print!("{}", x.to_text());
            }
            ExitCode::from(if x.forwarded { 0 } else { 1 })
        }
        Err(f) => {
            let (code, kind, message) = match f {
                Failure::Config(m) => (2, "config", m),
                Failure::Keys(m) => (3, "keys", m),
                Failure::Internal(m) => (70, "internal", m),
            };
            if a.json {
                println!("{}", serde_json::json!({"error": kind, "message": message}));
            } else {
                eprintln!("jwt-guard: {message}");
            }
            ExitCode::from(code)
        }
    }
}

fn run_lint(args: &[String]) -> ExitCode {
    let a = match parse(args, &["config"], &[]) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let bytes = match a
        .one("config")
        .ok_or("--config FILE is needed".to_owned())
        .and_then(read)
    {
        Ok(b) => b,
        Err(e) => return usage(&e),
    };
    let report = lint::lint(&bytes);
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::from(report.exit_code() as u8)
}
