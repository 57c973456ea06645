//! A real PostgreSQL for tests: one cluster per test binary (Debian's `postgresql`, `initdb`
//! and `postgres` run as the `postgres` user when the tests run as root, as the server refuses
//! root), on a free port in a temporary directory, and a fresh database per airlock data
//! directory.
//!
//! `AIRLOCK_TEST_DATABASE=postgres` runs every test that starts a server through
//! `common::settings` on PostgreSQL instead of SQLite (scripts/test.sh does so for the
//! workflow suites).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this run puts servers on PostgreSQL (`AIRLOCK_TEST_DATABASE=postgres`).
pub fn enabled() -> bool {
    std::env::var("AIRLOCK_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// The file in a data directory naming its test database, so a restart on the same directory
/// (and the CLI run against it) finds the same database.
const URL_FILE: &str = ".test-database-url";

/// The database URL of the data directory `dir`, created on first use.
pub fn database_for(dir: &Path) -> String {
    let f = dir.join(URL_FILE);
    if let Ok(url) = std::fs::read_to_string(&f) {
        return url.trim().to_owned();
    }
    let url = fresh_database();
    // A server started on a directory that does not exist yet makes it; so does this.
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&f, &url).unwrap();
    url
}

/// The database URL recorded for `dir`, if a server there runs on PostgreSQL.
pub fn recorded(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(URL_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// A new, empty database on the shared cluster. Its default collation is ICU's English, as a
/// cluster made with `en_US.UTF-8` would have (the cluster itself is `C`): text that airlock
/// orders or pages must say `COLLATE "C"` to keep the byte order it has on SQLite.
pub fn fresh_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let c = cluster();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    c.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' \
             LOCALE 'C'"
        ),
    );
    c.url(&name)
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("no /usr/lib/postgresql/*/bin/postgres")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root.
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    _guard: std::sync::Mutex<(std::process::Child, std::process::ChildStdin)>,
}

impl Cluster {
    pub fn url(&self, db: &str) -> String {
        format!("postgres://airlock@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one statement with psql as the superuser `airlock`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "airlock",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("run psql (Debian postgresql-client)");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The cluster shared by every test of this binary, started on first use under a shell that
/// stops it once this process's end of its stdin closes, so it never outlives the test run.
pub fn cluster() -> &'static Cluster {
    static C: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("airlock-pg")
            .tempdir()
            .unwrap()
            .keep();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success(), "chown the cluster directory to postgres");
        }
        let bin = bin_dir();
        let out = as_pg(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "airlock", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_port();
        // Durability settings off: a test cluster in a temporary directory is thrown away, and
        // no test here claims PostgreSQL's own crash safety (airlock's crash tests run on SQLite).
        let server = format!(
            "{} -D '{}' -p {port} -k '{}' -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            bin.join("postgres").display(),
            data.display(),
            dir.display()
        );
        // The postmaster is signalled by the pid it wrote (runuser, as root, does not pass
        // signals on): a fast shutdown, then the directory goes.
        let script = format!(
            "{run}{server} >'{log}' 2>&1 & pid=$!; cat >/dev/null; \
             kill -INT $(head -1 '{data}/postmaster.pid'); wait $pid; rm -rf '{d}'",
            run = if is_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            log = dir.join("log").display(),
            data = data.display(),
            d = dir.display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let stdin = child.stdin.take().unwrap();
        let c = Cluster {
            port,
            dir: dir.clone(),
            _guard: std::sync::Mutex::new((child, stdin)),
        };
        let start = std::time::Instant::now();
        loop {
            let ok = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "airlock"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "postgres did not start: {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c
    })
}
