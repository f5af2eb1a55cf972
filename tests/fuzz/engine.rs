//! The loop around each fuzz target: corpus and regression replay, a time budget, panic capture, and a
//! printout of every failing input (hex and base64, plus a file to copy into `regressions/`).

use arbtest::arbitrary::{Result as ArbResult, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Per-target budget when `JWT_GUARD_FUZZ_MS` is unset: small, so `cargo test -p jwt-guard` stays fast.
pub const DEFAULT_BUDGET_MS: u64 = 1500;

pub fn budget_ms() -> u64 {
    std::env::var("JWT_GUARD_FUZZ_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_BUDGET_MS)
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One corpus file: its name (relative to the corpus folder) and bytes.
#[derive(Clone)]
pub struct Entry {
    pub name: String,
    pub bytes: Vec<u8>,
}

fn files_in(dir: &Path, prefix: &str) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = read
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| Entry {
            name: format!(
                "{prefix}{}",
                p.file_name().expect("file name").to_string_lossy()
            ),
            bytes: std::fs::read(&p).expect("corpus file"),
        })
        .collect()
}

/// `tests/fuzz/corpus/<target>/*` (the seeds) and `tests/fuzz/corpus/<target>/regressions/*` (inputs
/// that once failed; replayed on every run, and mutated like the seeds).
pub struct Corpus {
    pub seeds: Vec<Entry>,
    pub regressions: Vec<Entry>,
}

impl Corpus {
    pub fn load(target: &str) -> Corpus {
        let dir = root().join("tests/fuzz/corpus").join(target);
        let seeds = files_in(&dir, "");
        assert!(
            !seeds.is_empty(),
            "no seeds in {} (make fuzz-corpus writes them)",
            dir.display()
        );
        Corpus {
            seeds,
            regressions: files_in(&dir.join("regressions"), "regressions/"),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        self.seeds.iter().chain(&self.regressions)
    }

    pub fn pick<'a>(&'a self, u: &mut Unstructured<'_>) -> ArbResult<&'a [u8]> {
        let n = self.seeds.len() + self.regressions.len();
        let i = u.choose_index(n)?;
        Ok(if i < self.seeds.len() {
            &self.seeds[i].bytes
        } else {
            &self.regressions[i - self.seeds.len()].bytes
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `check`, turning a panic into an error so the input can be reported.
fn guarded(check: &dyn Fn(&[u8]) -> Result<(), String>, input: &[u8]) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| check(input))) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

/// Prints a failing input so it can be replayed, saves it under the target dir, and returns the text.
fn report(target: &str, input: &[u8], why: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let file = dir.join(format!("{target}-{:016x}", fnv(input)));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, input))
        .map(|()| file.display().to_string())
        .unwrap_or_else(|e| format!("(not saved: {e})"));
    let shown = if input.len() > 4096 {
        format!("{} bytes, first 4096 shown", input.len())
    } else {
        format!("{} bytes", input.len())
    };
    let head = &input[..input.len().min(4096)];
    let text = format!(
        "fuzz {target}: {why}\n  input ({shown})\n  hex:    {}\n  base64: {}\n  saved:  {saved}\n  \
         replay on every run: cp {saved} tests/fuzz/corpus/{target}/regressions/",
        hex(head),
        STANDARD.encode(head)
    );
    eprintln!("{text}");
    text
}

/// Replays the corpus, then fuzzes `check` with inputs from `generate` for the budget. Panics (fails
/// the test) on the first failing input, after printing it.
pub fn run(
    target: &str,
    corpus: &Corpus,
    generate: impl Fn(&mut Unstructured<'_>, &Corpus) -> ArbResult<Vec<u8>>,
    check: impl Fn(&[u8]) -> Result<(), String>,
) {
    let started = Instant::now();
    let mut failures = Vec::new();
    for e in corpus.all() {
        if let Err(why) = guarded(&check, &e.bytes) {
            failures.push(report(
                target,
                &e.bytes,
                &format!("corpus entry {}: {why}", e.name),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let replayed = corpus.seeds.len() + corpus.regressions.len();

    let budget = budget_ms();
    let mut tried = 0u64;
    let fuzz_started = Instant::now();
    arbtest::arbtest(|u| {
        let input = generate(u, corpus)?;
        tried += 1;
        if let Err(why) = guarded(&check, &input) {
            panic!(
                "{}\n  (ARBTEST_SEED below regenerates it: ARBTEST_SEED=0x… cargo test --test fuzz {target})",
                report(target, &input, &why)
            );
        }
        Ok(())
    })
    .size_min(64)
    .size_max(4096)
    .budget_ms(budget)
    .run();
    let secs = fuzz_started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {target}: {tried} inputs in {secs:.1} s ({:.0}/s), {replayed} corpus inputs ({} regressions) replayed, {:.1} s in all",
        tried as f64 / secs.max(1e-9),
        corpus.regressions.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(tried > 0, "fuzz {target}: no input was tried");
}

/// The denial codes of README.md's responses table (the `code` column), so the fuzz tests tie every
/// rejection to the documentation.
pub fn documented_codes() -> Vec<String> {
    documented_statuses().into_iter().map(|(c, _)| c).collect()
}

/// Each code of README.md's responses table with the status its row gives.
pub fn documented_statuses() -> Vec<(String, u32)> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut lines = readme.lines().skip_while(|l| {
        let cols: Vec<&str> = l.split('|').map(str::trim).collect();
        !(cols.len() > 3 && cols[1] == "situation" && cols[3] == "`code`")
    });
    assert!(
        lines.next().is_some(),
        "README.md has no responses table (| situation | status | `code` | …)"
    );
    let mut codes = Vec::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cols: Vec<&str> = line.split('|').collect();
        let (Some(status), Some(col)) = (cols.get(2), cols.get(3)) else {
            continue;
        };
        let digits: String = status
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let status: u32 = digits.parse().expect("a status in the responses table");
        for (i, part) in col.split('`').enumerate() {
            if i % 2 == 1 && !part.is_empty() {
                codes.push((part.to_owned(), status));
            }
        }
    }
    codes
}
