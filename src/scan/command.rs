//! Command scanners: any external program (yara, a site's own script), declared in a
//! `scanners/*.toml` file with `kind = "command"`. It gets the file's path (`{path}` in its
//! arguments) or the file's bytes on standard input; its exit code gives the verdict, and it is
//! killed past its timeout.

use super::{Outcome, Scanner, Target, Versions};
use serde::Deserialize;
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    command: Vec<String>,
    input: Input,
    clean_exit_codes: Vec<i32>,
    infected_exit_codes: Vec<i32>,
    finding: String,
    #[serde(deserialize_with = "super::duration")]
    timeout: Duration,
    #[serde(default)]
    version_command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Input {
    Path,
    Stdin,
}

pub struct CommandScanner {
    name: String,
    c: Config,
}

impl CommandScanner {
    pub fn new(name: &str, c: Config) -> Result<Self, (&'static str, String)> {
        if c.command.is_empty() || c.command[0].is_empty() {
            return Err(("command", "names no program".into()));
        }
        if c.input == Input::Path && !c.command.iter().any(|a| a.contains("{path}")) {
            return Err((
                "command",
                "with input = \"path\", an argument must contain {path}".into(),
            ));
        }
        if c.clean_exit_codes.is_empty() {
            return Err(("clean_exit_codes", "must name at least one code".into()));
        }
        if let Some(x) = c
            .clean_exit_codes
            .iter()
            .find(|x| c.infected_exit_codes.contains(x))
        {
            return Err((
                "infected_exit_codes",
                format!("exit code {x} cannot mean both clean and infected"),
            ));
        }
        if c.timeout.is_zero() {
            return Err(("timeout", "must be more than 0".into()));
        }
        if c.finding.trim().is_empty() {
            return Err(("finding", "must name the finding".into()));
        }
        Ok(Self {
            name: name.to_owned(),
            c,
        })
    }
}

#[async_trait::async_trait]
impl Scanner for CommandScanner {
    fn name(&self) -> &str {
        &self.name
    }

    async fn versions(&self) -> Result<Versions, String> {
        let scanner = if self.c.version_command.is_empty() {
            self.c.command[0].clone()
        } else {
            let out = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::process::Command::new(&self.c.version_command[0])
                    .args(&self.c.version_command[1..])
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .map_err(|_| format!("{}: the version command timed out", self.name))?
            .map_err(|e| {
                format!(
                    "{}: cannot run {}: {e}",
                    self.name, self.c.version_command[0]
                )
            })?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        Ok(Versions {
            scanner,
            database: String::new(),
        })
    }

    async fn scan(&self, target: &Target<'_>) -> Result<Outcome, String> {
        let path = target.path.to_string_lossy();
        let args: Vec<String> = self.c.command[1..]
            .iter()
            .map(|a| a.replace("{path}", &path))
            .collect();
        let mut cmd = tokio::process::Command::new(&self.c.command[0]);
        cmd.args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.stdin(match self.c.input {
            Input::Stdin => Stdio::piped(),
            Input::Path => Stdio::null(),
        });
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.c.command[0]))?;
        let feeder = match (self.c.input, child.stdin.take()) {
            (Input::Stdin, Some(mut stdin)) => {
                let p = target.path.to_owned();
                Some(tokio::spawn(async move {
                    let mut f = tokio::fs::File::open(&p).await?;
                    // A scanner may stop reading once it has decided (grep -q): a broken pipe
                    // then is not a failure; its exit code says what it found.
                    match tokio::io::copy(&mut f, &mut stdin).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                        Err(e) => Err(e),
                    }
                }))
            }
            _ => None,
        };
        let out = match tokio::time::timeout(self.c.timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| format!("{}: {e}", self.c.command[0]))?,
            Err(_) => {
                return Err(format!(
                    "{} did not finish within {} and was killed",
                    self.c.command[0],
                    humantime::format_duration(self.c.timeout)
                ))
            }
        };
        if let Some(f) = feeder {
            match f.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("cannot feed the file to the scanner: {e}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        let Some(code) = out.status.code() else {
            return Err(format!("{} was killed by a signal", self.c.command[0]));
        };
        if self.c.clean_exit_codes.contains(&code) {
            Ok(Outcome::Clean)
        } else if self.c.infected_exit_codes.contains(&code) {
            Ok(Outcome::Infected(self.c.finding.clone()))
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().next().unwrap_or("").trim();
            Err(format!(
                "{} exited with {code}, which means neither clean nor infected{}",
                self.c.command[0],
                if first.is_empty() {
                    String::new()
                } else {
                    format!(": {first}")
                }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(toml_text: &str) -> CommandScanner {
        CommandScanner::new("t", toml::from_str(toml_text).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_path_scanner_gets_the_path_and_its_exit_code_is_the_verdict() {
        let s = scanner(
            "command = [\"grep\", \"-q\", \"FORBIDDEN\", \"{path}\"]\ninput = \"path\"\n\
             clean_exit_codes = [1]\ninfected_exit_codes = [0]\nfinding = \"F\"\ntimeout = \"10s\"\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let rules = crate::policy::Scanning::default();
        let mut out = Vec::new();
        for (name, body) in [("bad", "x FORBIDDEN y"), ("good", "fine")] {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            let t = Target {
                path: &p,
                data: None,
                size: body.len() as u64,
                kind: crate::domain::TransferKind::DataIngress,
                rules: &rules,
            };
            out.push(s.scan(&t).await);
        }
        assert_eq!(out[0], Ok(Outcome::Infected("F".into())));
        assert_eq!(out[1], Ok(Outcome::Clean));
        // A missing file makes grep exit 2: neither clean nor infected, so an error.
        let p = dir.path().join("missing");
        let t = Target {
            path: &p,
            data: None,
            size: 0,
            kind: crate::domain::TransferKind::DataIngress,
            rules: &rules,
        };
        assert!(s.scan(&t).await.unwrap_err().contains("exited with 2"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let bad = |t: &str| {
            CommandScanner::new("t", toml::from_str(t).unwrap())
                .err()
                .unwrap()
                .0
        };
        let base = "input = \"path\"\nclean_exit_codes = [0]\ninfected_exit_codes = [1]\n\
                    finding = \"F\"\ntimeout = \"1s\"\n";
        assert_eq!(
            bad(&format!("command = [\"yara\", \"rules\"]\n{base}")),
            "command"
        );
        assert_eq!(
            bad(&format!(
                "command = [\"x\", \"{{path}}\"]\n{}",
                base.replace("[1]", "[0]")
            )),
            "infected_exit_codes"
        );
    }
}
