//! A real Garage (S3) for tests: `garage server --single-node --default-bucket` on free ports
//! in a temporary directory, with a key and a bucket of its own (../shared/DESIGN.md has the
//! recipe; `scripts/test.sh` installs the binary with `cargo install --locked garage`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub struct Garage {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub s3_port: u16,
    admin_port: u16,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
}

/// The garage binary: on the PATH, or where `cargo install` puts it.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return p.into();
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo")
        });
    let installed = home.join("bin/garage");
    if installed.exists() {
        return installed;
    }
    which("garage").unwrap_or_else(|| {
        panic!("Garage is not installed: run scripts/test.sh, or `cargo install --locked garage`")
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
}

fn hex_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Garage {
    /// Starts a Garage of this test's own, with the bucket `airlock` and one key for it.
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (s3_port, rpc_port, admin_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let rpc_secret = format!("{}{}", hex_id(), hex_id());
        let conf = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{rpc_secret}\"\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
            d = dir.path().display(),
        );
        std::fs::write(dir.path().join("garage.toml"), conf).unwrap();
        let mut g = Garage {
            dir,
            child: None,
            s3_port,
            admin_port,
            key_id: format!("GK{}", &hex_id()[..24]),
            secret: format!("{}{}", hex_id(), hex_id()),
            bucket: "airlock".into(),
        };
        g.restart();
        g
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// airlock's settings for this Garage, as environment variables (every volume on S3).
    pub fn airlock_env(&self) -> Vec<(String, String)> {
        [
            ("AIRLOCK__STORAGE__BACKEND", "s3".to_string()),
            ("AIRLOCK__STORAGE__S3__ENDPOINT", self.endpoint()),
            ("AIRLOCK__STORAGE__S3__REGION", "garage".into()),
            ("AIRLOCK__STORAGE__S3__BUCKET", self.bucket.clone()),
            ("AIRLOCK__STORAGE__S3__ACCESS_KEY_ID", self.key_id.clone()),
            (
                "AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY",
                self.secret.clone(),
            ),
            ("AIRLOCK__STORAGE__S3__PATH_STYLE", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Puts every volume of `s` on this Garage but the output volume, which stays a local
    /// folder per workspace (the tests that write outputs with `std::fs`).
    pub fn apply(&self, s: &mut airlock::config::Settings) {
        let mut env = self.airlock_env();
        env.push((
            "AIRLOCK__STORAGE__VOLUMES__OUTPUT__BACKEND".into(),
            "local".into(),
        ));
        Self::load_into(env, s);
    }

    /// Puts every volume of `s` on this Garage, as `airlock_env` does, the workspaces'
    /// outputs too (`output/<project>/<ws>/`).
    pub fn apply_all(&self, s: &mut airlock::config::Settings) {
        Self::load_into(self.airlock_env(), s);
    }

    fn load_into(env: Vec<(String, String)>, s: &mut airlock::config::Settings) {
        let loaded = airlock::config::Settings::load(None, env).unwrap();
        s.storage.backend = loaded.storage.backend;
        s.storage.s3 = loaded.storage.s3;
        s.storage.volumes = loaded.storage.volumes;
    }

    /// An object's bytes, read with rclone (`g:airlock/...`), or `None` if it is not there.
    pub fn cat(&self, key: &str) -> Option<Vec<u8>> {
        let out = self.rclone(&["cat", &format!("g:{}/{key}", self.bucket)]);
        let listed = self.rclone(&["lsf", &format!("g:{}/{key}", self.bucket)]);
        (out.status.success() && listed.status.success() && !listed.stdout.is_empty())
            .then_some(out.stdout)
    }

    /// The keys under `prefix` (recursively, relative to it), with rclone.
    pub fn ls(&self, prefix: &str) -> Vec<String> {
        let out = self.rclone(&[
            "lsf",
            "-R",
            "--files-only",
            &format!("g:{}/{prefix}", self.bucket),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// rclone (a plain S3 client, not airlock's) on this Garage as the remote `g:`.
    pub fn rclone(&self, args: &[&str]) -> Output {
        self.rclone_cmd(args)
            .output()
            .expect("run rclone (Debian's rclone; scripts/test.sh installs it)")
    }

    /// Writes `bytes` to `key` with rclone, as a workspace's own S3 client would.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        use std::io::Write;
        let mut child = self
            .rclone_cmd(&["rcat", &format!("g:{}/{key}", self.bucket)])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run rclone");
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "rclone rcat {key}: {out:?}");
    }

    /// Deletes `key` with rclone.
    pub fn delete(&self, key: &str) {
        let out = self.rclone(&["deletefile", &format!("g:{}/{key}", self.bucket)]);
        assert!(out.status.success(), "rclone deletefile {key}: {out:?}");
    }

    fn rclone_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("rclone");
        cmd.args(args)
            .env("RCLONE_CONFIG", "/dev/null")
            // rclone 1.60 refuses any AWS_CA_BUNDLE (a TLS setting; Garage here is plain HTTP).
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG_G_TYPE", "s3")
            .env("RCLONE_CONFIG_G_PROVIDER", "Other")
            .env("RCLONE_CONFIG_G_ENDPOINT", self.endpoint())
            .env("RCLONE_CONFIG_G_REGION", "garage")
            .env("RCLONE_CONFIG_G_ACCESS_KEY_ID", &self.key_id)
            .env("RCLONE_CONFIG_G_SECRET_ACCESS_KEY", &self.secret)
            .env("RCLONE_CONFIG_G_FORCE_PATH_STYLE", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Kills Garage (as a crash would) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts Garage again on the same ports and directories, and waits until it is healthy
    /// and the bucket answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("garage.log")).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        for _ in 0..300 {
            let ls = self.rclone(&["lsf", &format!("g:{}", self.bucket)]);
            if ls.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "Garage never served its bucket: {}",
            std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
        );
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
