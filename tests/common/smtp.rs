//! A real SMTP server for the tests (Debian's python3-aiosmtpd, `smtp_receiver.py`) on a
//! free port, writing each message it receives to a folder; and a private CA with a server
//! certificate made by `openssl` for the TLS tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One message as the server received it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The raw message: headers, a blank line, the body.
    pub data: String,
    /// The user name the session authenticated as.
    pub login: Option<String>,
    /// Whether the session was under TLS (STARTTLS or implicit).
    pub tls: bool,
}

impl Received {
    /// The body as text, decoded from quoted-printable or base64 (lettre encodes long or
    /// non-ASCII text so), so tests can look for a whole link.
    pub fn body(&self) -> String {
        use base64::Engine;
        let raw = self
            .data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or(&self.data);
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(raw.replace("\r\n", ""))
                .expect("base64 body"),
            "quoted-printable" => {
                let joined = raw.replace("=\r\n", "");
                let b = joined.as_bytes();
                let mut out = Vec::with_capacity(b.len());
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'=' && i + 2 < b.len() {
                        if let Ok(v) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                            out.push(v);
                            i += 3;
                            continue;
                        }
                    }
                    out.push(b[i]);
                    i += 1;
                }
                out
            }
            _ => raw.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    /// A header's value (unfolded), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split_once("\r\n\r\n").map(|(h, _)| h)?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// How the server wants to be spoken to.
pub enum Security<'a> {
    Plain,
    Starttls(&'a TestCa),
    Tls(&'a TestCa),
}

pub struct SmtpReceiver {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SmtpReceiver {
    /// Starts a server on a free port; with `auth`, AUTH (PLAIN or LOGIN) with that user and
    /// password is required before any message.
    pub fn start(security: Security<'_>, auth: Option<(&str, &str)>) -> SmtpReceiver {
        let port = super::free_port();
        Self::start_on(port, security, auth)
    }

    /// Starts a server on `port` (one an airlock already points at, say).
    pub fn start_on(port: u16, security: Security<'_>, auth: Option<(&str, &str)>) -> SmtpReceiver {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/smtp_receiver.py");
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-W", "ignore"])
            .arg(&script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir.path());
        if let Some((user, password)) = auth {
            c.args(["--user", user, "--password", password]);
        }
        let ca = match security {
            Security::Plain => None,
            Security::Starttls(ca) => {
                c.args(["--tls", "starttls"]);
                Some(ca)
            }
            Security::Tls(ca) => {
                c.args(["--tls", "tls"]);
                Some(ca)
            }
        };
        if let Some(ca) = ca {
            c.arg("--cert").arg(&ca.cert).arg("--key").arg(&ca.key);
        }
        // Its stdin stays open while this handle lives: the server stops when it closes.
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP receiver: ./scripts/test.sh installs python3-aiosmtpd");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP receiver did not start");
        SmtpReceiver { port, dir, child }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// The messages whose envelope goes to `address`.
    pub fn to(&self, address: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.rcpt_tos.iter().any(|r| r == address))
            .collect()
    }

    /// Every AUTH attempt: `MECHANISM LOGIN ok|refused` per line.
    pub fn auth_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auth.log")).unwrap_or_default()
    }

    /// Polls until `pred` holds over the messages, or panics after 20 s.
    pub async fn until(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..200 {
            let m = self.messages();
            if pred(&m) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: never happened; got {:#?}", self.messages());
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private CA (`ca.pem`) and a certificate it signed for `localhost` and `127.0.0.1`
/// (`cert`, `key`), made by `openssl` in a temporary folder.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &str| {
            super::run(
                Command::new("openssl")
                    .current_dir(d)
                    .args(args.split_whitespace()),
            );
        };
        openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 2 -subj /CN=airlock-test-CA",
        );
        openssl(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
             -out server.csr -subj /CN=localhost",
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
             -days 2 -extfile ext.cnf",
        );
        TestCa {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        }
    }
}
