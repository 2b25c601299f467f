//! README.md's SQL is documentation that runs: every ```sql block, in order, in one psql
//! session against a fresh cluster, with every `https://...example...` URL pointing at the test
//! receiver. A statement followed by a `-- → result` comment must print that result (psql's
//! unaligned output, `|` between columns, `...` for any text). A block that errors, or a result
//! that changes, fails the test and names the README line.

use std::process::Command;
use webhooks_e2e::cluster::Cluster;
use webhooks_e2e::receiver::Receiver;

struct Statement {
    readme_line: usize,
    expect: Option<String>,
}

/// `https://anything.example.com/path` (and `.example` hosts): the README's receivers.
fn point_at(line: &str, url: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("https://") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        let found = &tail[..end];
        let host = found["https://".len()..].split('/').next().unwrap_or("");
        if host.contains("example") {
            out.push_str(url);
        } else {
            out.push_str(found);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The psql script, and for each statement the README line it ends on and what it must print.
fn script(readme: &str, url: &str) -> (String, Vec<Statement>) {
    let mut out = String::new();
    let mut statements = Vec::new();
    let mut in_sql = false;
    let mut dollar = false;
    for (i, line) in readme.lines().enumerate() {
        let n = i + 1;
        if !in_sql {
            if line.trim_start().starts_with("```sql") {
                in_sql = true;
                out.push_str(&format!("\\echo '@@block {n}'\n"));
            }
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_sql = false;
            continue;
        }
        let (code, expect) = match line.split_once("-- →") {
            Some((c, e)) if !dollar => (c.to_string(), Some(e.trim().to_string())),
            _ => (line.to_string(), None),
        };
        out.push_str(&point_at(&code, url));
        out.push('\n');
        dollar ^= code.matches("$$").count() % 2 == 1;
        let bare = code.split(" --").next().unwrap_or("").trim_end();
        let ends = !dollar && (bare.ends_with(';') || bare.ends_with("\\gset"));
        if ends {
            out.push_str(&format!("\\echo '@@end {}'\n", statements.len()));
            statements.push(Statement {
                readme_line: n,
                expect,
            });
        } else if expect.is_some() {
            panic!("README.md:{n}: a `-- →` result must follow the end of a statement");
        }
    }
    (out, statements)
}

/// `...` stands for any text; spaces around `|` do not matter.
fn matches(expected: &str, actual: &str) -> bool {
    let norm = |s: &str| s.split('|').map(str::trim).collect::<Vec<_>>().join("|");
    let (expected, actual) = (norm(expected), norm(actual));
    let parts: Vec<&str> = expected.split("...").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let mut pos = 0;
    for (k, p) in parts.iter().enumerate() {
        if k == 0 {
            if !actual.starts_with(p) {
                return false;
            }
            pos = p.len();
        } else if k == parts.len() - 1 {
            return actual.len() >= pos + p.len() && actual.ends_with(p);
        } else {
            match actual[pos..].find(p) {
                Some(j) => pos += j + p.len(),
                None => return false,
            }
        }
    }
    true
}

#[test]
fn every_sql_example_in_the_readme_runs_and_prints_what_it_says() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let rx = Receiver::ok();
    let c = Cluster::start_bare(&[]);
    let (sql, statements) = script(&readme, &rx.url);
    assert!(
        statements.len() > 20,
        "the README's SQL was found ({} statements)",
        statements.len()
    );
    let file = c.dir.join("readme.sql");
    std::fs::write(&file, &sql).unwrap();
    let out = Command::new(c.bin.join("psql"))
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "postgres", "-f"])
        .arg(&file)
        .output()
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // What each statement printed, by the marker that follows it.
    let mut printed: Vec<Vec<String>> = vec![Vec::new(); statements.len()];
    let mut current = Vec::new();
    let mut done = 0;
    for line in stdout.lines() {
        if let Some(k) = line.strip_prefix("@@end ") {
            let k: usize = k.parse().unwrap();
            printed[k] = std::mem::take(&mut current);
            done = k + 1;
        } else if !line.starts_with("@@block ") {
            current.push(line.to_string());
        }
    }
    if !out.status.success() {
        let at = statements
            .get(done)
            .map(|s| s.readme_line)
            .unwrap_or_default();
        panic!("README.md: the statement ending on line {at} failed:\n{stderr}");
    }
    for (k, s) in statements.iter().enumerate() {
        if let Some(e) = &s.expect {
            let got = printed[k].join("; ");
            assert!(
                matches(e, &got),
                "README.md:{}: documented `{e}`, psql printed `{got}`",
                s.readme_line
            );
        }
    }
    assert!(!rx.all().is_empty(), "the examples reached the receiver");
}

#[test]
fn the_matcher_and_the_url_rewriting_do_what_the_readme_relies_on() {
    assert!(matches("200 | t", "200|t"));
    assert!(matches("ep_... | whsec_...", "ep_01ABC|whsec_xyz"));
    assert!(!matches("200 | t", "500|f"));
    assert!(matches(
        "public.users publishes ...",
        "public.users publishes user.created"
    ));
    assert!(!matches("a...c", "ab"));
    assert_eq!(
        point_at(
            "SELECT f('https://crm.example.com/hooks', 'https://localhost:1/x')",
            "U"
        ),
        "SELECT f('U', 'https://localhost:1/x')"
    );
}
