//! A real S3 server with Object Lock for tests: moto's standalone server (`moto_server`,
//! PyPI `moto[server]`), a separate HTTP process on a free port, its working directory in a
//! temporary directory of the test's own, killed on drop. Garage has no Object Lock and MinIO
//! cannot be installed here; moto implements it, including refusing to delete a locked
//! version. `scripts/test.sh` installs it into `~/.cache/airlock-tests/moto-venv`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Moto {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
}

/// moto's server: `MOTO_SERVER` if set, else where `scripts/test.sh` installs it.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return p.into();
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let bin = home.join(".cache/airlock-tests/moto-venv/bin/moto_server");
    assert!(
        bin.exists(),
        "moto is not installed at {}: run scripts/test.sh (it makes a venv with \
         `pip install 'moto[server]==5.2.5'`)",
        bin.display()
    );
    bin
}

/// Keys moto accepts (it checks no signature), and its region.
pub const KEY_ID: &str = "AKIAAIRLOCKTESTKEY01";
pub const SECRET: &str = "airlock-test-secret-not-a-secret";
pub const REGION: &str = "us-east-1";

impl Moto {
    /// Starts a moto server of this test's own and waits until it answers.
    pub fn start() -> Moto {
        let mut m = Moto {
            dir: tempfile::tempdir().unwrap(),
            child: None,
            port: super::free_port(),
        };
        m.restart();
        m
    }

    /// Starts moto (again) on the same port, as new: moto keeps everything in memory, so the
    /// buckets and objects of before are gone.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("moto.log"))
            .unwrap();
        let child = Command::new(binary())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto never listened: {}", self.log());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What moto printed (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// A plain aws-sdk-s3 client of this moto (path-style), not airlock's.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                KEY_ID, SECRET, None, None, "test",
            ))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates `bucket`, with Object Lock enabled or not.
    pub async fn create_bucket(&self, bucket: &str, object_lock: bool) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(object_lock)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
    }

    /// airlock's settings for this moto: the released volume in `bucket` (quarantine and the
    /// rest stay local), as environment variables.
    pub fn released_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("AIRLOCK__STORAGE__VOLUMES__RELEASED__BACKEND", "s3"),
            ("AIRLOCK__STORAGE__S3__ENDPOINT", &self.endpoint()),
            ("AIRLOCK__STORAGE__S3__REGION", REGION),
            ("AIRLOCK__STORAGE__S3__BUCKET", bucket),
            ("AIRLOCK__STORAGE__S3__ACCESS_KEY_ID", KEY_ID),
            ("AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY", SECRET),
            ("AIRLOCK__STORAGE__S3__PATH_STYLE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Kills moto and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Puts `env`'s storage settings into `s` (as `Garage::apply` does).
pub fn apply_env(s: &mut airlock::config::Settings, env: Vec<(String, String)>) {
    let loaded = airlock::config::Settings::load(None, env).unwrap();
    s.storage.backend = loaded.storage.backend;
    s.storage.s3 = loaded.storage.s3;
    s.storage.volumes = loaded.storage.volumes;
}
