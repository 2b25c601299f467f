use postgres::{Client, NoTls};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The PostgreSQL major the tests run against: `WEBHOOKS_PG_MAJOR` (scripts/test.sh sets it for
/// each version it tests), 15 when unset. A value that is not a supported major stops the
/// tests rather than testing 15 under another name.
pub fn major() -> u32 {
    match std::env::var("WEBHOOKS_PG_MAJOR") {
        Err(_) => 15,
        Ok(v) => match v.parse() {
            Ok(m @ 15..=18) => m,
            _ => panic!("WEBHOOKS_PG_MAJOR is '{v}': use 15, 16, 17 or 18"),
        },
    }
}

/// Where a major's programs are: Debian's package for 15, the installs scripts/setup.sh unpacks
/// under `WEBHOOKS_PG_HOME` for the others.
pub fn bin_of(major: u32) -> PathBuf {
    if major == 15 {
        return PathBuf::from("/usr/lib/postgresql/15/bin");
    }
    let home =
        std::env::var("WEBHOOKS_PG_HOME").unwrap_or_else(|_| "/opt/webhooks-postgresql".into());
    PathBuf::from(home).join(major.to_string()).join("bin")
}

/// A cluster of its own with webhooks preloaded, on a private port and socket directory.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The bin directory of the PostgreSQL major it runs.
    pub bin: PathBuf,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("sudo")
        .arg("-u")
        .arg("postgres")
        .args(args)
        .output()
        .expect("sudo runs");
    if !out.status.success() {
        panic!(
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Settings every test cluster starts with: the defaults a user gets (require_https on, TLS
/// verified) except a short schedule and loopback receivers allowed; the shared test CA is
/// trusted through webhooks.tls_ca_file, as a private CA would be.
pub const TEST_SETTINGS: &[&str] = &[
    "webhooks.retry_schedule = '1s,1s,2s'",
    "webhooks.poll_interval = '200ms'",
    "webhooks.timeout = '2s'",
    "webhooks.allow_private_targets = on",
];

impl Cluster {
    pub fn start(extra: &[&str]) -> Cluster {
        let c = Cluster::start_bare(extra);
        c.client()
            .batch_execute("CREATE EXTENSION webhooks")
            .unwrap();
        c
    }

    /// A running cluster with the library preloaded but no extension created yet (upgrade and
    /// restore tests create it themselves).
    pub fn start_bare(extra: &[&str]) -> Cluster {
        Cluster::start_bare_on(major(), extra)
    }

    /// Like `start_bare`, on a given major (the cross-version restore).
    pub fn start_bare_on(major: u32, extra: &[&str]) -> Cluster {
        let bin = bin_of(major);
        let base = PathBuf::from(
            std::env::var("WEBHOOKS_TEST_DIR").unwrap_or_else(|_| "/var/tmp/webhooks-test".into()),
        );
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join(format!(
            "e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("chown")
            .arg("postgres")
            .arg(&dir)
            .status()
            .unwrap();
        let data = dir.join("data");
        let d = data.to_str().unwrap();
        as_postgres(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            d,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let port = free_port();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_preload_libraries = 'webhooks'\nwebhooks.database = 'postgres'\nfsync = off\n\
             max_connections = 40\nlog_min_messages = warning\n",
            dir.display()
        );
        conf.push_str(&format!(
            "webhooks.tls_ca_file = '{}'\n",
            crate::pki::shared().ca_file().display()
        ));
        for line in TEST_SETTINGS.iter().chain(extra) {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
        let c = Cluster { dir, port, bin };
        c.pg_ctl(&["start", "-w", "-t", "60"]);
        c
    }

    /// Runs one of PostgreSQL's client programs (pg_dump, pg_restore, psql) against this
    /// cluster, logged in as the postgres role; returns stdout, panics with stderr when it fails.
    pub fn tool(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(self.bin.join(program))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .output()
            .expect("client program runs");
        if !out.status.success() {
            panic!(
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The key file that seals this cluster's secrets (the default: in the data directory).
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("data").join("webhooks.key")
    }

    /// Adds `other`'s keys to this cluster's key file (what an operator does who restores a
    /// dump: the keys travel with the backups, apart from the dump). The file keeps its owner
    /// and mode; the last key added seals from then on.
    pub fn add_keys_of(&self, other: &Cluster) {
        let theirs = std::fs::read_to_string(other.key_file()).unwrap();
        let keys: String = theirs
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.key_file())
            .unwrap();
        f.write_all(keys.as_bytes()).unwrap();
    }

    pub fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let mut all = vec![
            self.bin.join("pg_ctl").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-l".into(),
            log.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        as_postgres(&refs);
    }

    pub fn client(&self) -> Client {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .expect("connect to the test cluster")
    }

    /// A session logged in as `user` (a LOGIN role; the test clusters trust local logins).
    pub fn client_as(&self, user: &str) -> Client {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={user} dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .expect("connect to the test cluster")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Creates an endpoint for `url` and returns (id, secret).
    pub fn endpoint(&self, db: &mut Client, url: &str, types: &[&str]) -> (String, String) {
        let types: Vec<String> = types.iter().map(|s| s.to_string()).collect();
        let row = db
            .query_one(
                "SELECT id, secret FROM webhooks.endpoint_create($1, $2)",
                &[&url, &types],
            )
            .unwrap();
        (row.get(0), row.get(1))
    }

    pub fn worker_pid(&self, db: &mut Client) -> Option<i32> {
        db.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhooks worker'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
    }
}

impl Drop for Cluster {
    /// Stops as a DBA would (`-m fast`), so every test also checks that the worker obeys a
    /// fast stop: a cluster that does not stop within the timeout is stopped immediately (not to
    /// leave it running) and fails the test. One a test stopped itself is left as it is.
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let running = data.join("postmaster.pid").exists();
        let stop = |mode: &str| {
            Command::new("sudo")
                .args([
                    "-u",
                    "postgres",
                    self.bin.join("pg_ctl").to_str().unwrap(),
                    "-D",
                    data.to_str().unwrap(),
                    "stop",
                    "-m",
                    mode,
                    "-t",
                    "60",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        let stuck = running && !stop("fast");
        if stuck {
            stop("immediate");
        }
        if std::env::var("WEBHOOKS_KEEP").is_err() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if std::thread::panicking() {
            eprintln!(
                "--- server log of {} ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        if stuck && !std::thread::panicking() {
            panic!(
                "pg_ctl stop -m fast did not stop {} within 60 s; server log:\n{}",
                self.dir.display(),
                self.log()
            );
        }
    }
}
