//! deploy/ checked as far as this machine can (issue 15, point 7): the systemd unit passes
//! `systemd-analyze verify` (a misspelt directive does not), and every airlock setting it and
//! its airlock.toml name exists and loads.

use airlock::config::Settings;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

/// `systemd-analyze verify` of `unit` with ExecStart on the binary under test (verify wants an
/// executable that exists); returns (success, stderr).
fn verify(unit: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.service");
    let text = unit.replace("/usr/local/bin/airlock", env!("CARGO_BIN_EXE_airlock"));
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze (Debian's systemd; scripts/test.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_systemd_unit_verifies_and_names_only_settings_airlock_has() {
    let unit = std::fs::read_to_string(deploy("systemd/airlock.service")).unwrap();
    let (ok, stderr) = verify(&unit);
    assert!(ok && stderr.trim().is_empty(), "{stderr}");
    // The check can fail: a misspelt hardening directive is reported.
    let (_, stderr) = verify(&unit.replace("ProtectSystem=strict", "ProtectSytem=strict"));
    assert!(stderr.contains("ProtectSytem"), "{stderr}");

    for want in [
        "User=airlock",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/airlock",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(want), "the unit lacks {want:?}");
    }
    // The settings it passes in the environment, over its airlock.toml, load as airlock
    // loads them (unknown keys are refused there).
    let env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(!env.is_empty());
    assert!(env.iter().all(|(k, _)| k.starts_with("AIRLOCK__")));
    let toml = deploy("systemd/airlock.toml");
    let s = Settings::load(Some(&toml), env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.storage.data_dir, Path::new("/var/lib/airlock"));
    assert!(
        unit.contains("ExecStart=/usr/local/bin/airlock --config /etc/airlock/airlock.toml serve")
    );
    let sysusers = std::fs::read_to_string(deploy("systemd/airlock.sysusers.conf")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u airlock ")));
}
