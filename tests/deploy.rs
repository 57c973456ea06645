//! deploy/ checked as far as this machine can (issue 15, point 7). There is no Docker engine
//! and no helm binary here, so nothing is started in a container; what can be checked is:
//!
//! - systemd: the unit passes `systemd-analyze verify` (a misspelt directive does not);
//! - Compose: compose.yaml parses (yaml-rust2; merge keys applied and `${VAR}` interpolated
//!   from .env.example as Compose does), has its services, two airlock replicas sharing one
//!   keys volume, healthchecks, no secret outside .env, and every airlock setting it makes
//!   (airlock.toml plus each replica's AIRLOCK__ variables) loads as airlock loads it; its
//!   healthcheck command answers against the real binary; garage/init.sh, run twice on a real
//!   Garage 2.5 with compose's garage.toml, makes the buckets and grants (the workspace's key
//!   reads the released bucket and nothing else);
//! - Helm: Chart.yaml and values.yaml parse, every `.Values.…` the templates read exists,
//!   files/airlock.toml (the ConfigMap) loads with every AIRLOCK__ variable the templates set,
//!   the templates (their `{{ … }}` taken out, not rendered) have the probes, security context,
//!   secret references and NetworkPolicy, the ingress exposes exactly the upload routes the
//!   chart README lists, and deploy/helm/make-keys.sh makes the anchor.pub airlock would;
//!   and Helm's own Go SDK (PyPI's helm-python-sdk, no binary) lints the chart strictly and
//!   renders it (`helm lint --strict`, `helm template`).
//!
//! Every setting check also shows it can fail: a misspelt key is refused.

mod common;

use airlock::config::{Settings, VolumeLocation};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

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

// ---- YAML, as Compose and Helm read it ----------------------------------------------------

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// One YAML document, with merge keys (`<<: *anchor`) applied as Compose applies them
/// (yaml-rust2 resolves aliases but, YAML 1.2 having dropped them, not merge keys).
fn yaml(text: &str, what: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(docs.len(), 1, "{what}: one document");
    merged(docs.remove(0))
}

fn merged(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut bases = Vec::new();
            for (k, v) in h {
                if k.as_str() == Some("<<") {
                    match v {
                        Yaml::Array(a) => bases.extend(a),
                        one => bases.push(one),
                    }
                } else {
                    out.insert(k, merged(v));
                }
            }
            for base in bases {
                let Yaml::Hash(b) = merged(base) else {
                    panic!("a merge key must name a mapping")
                };
                for (k, v) in b {
                    if !out.contains_key(&k) {
                        out.insert(k, v);
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(merged).collect()),
        other => other,
    }
}

/// Every string of `y` interpolated (`interpolate`).
fn interpolated(y: Yaml, vars: &BTreeMap<String, String>, used: &mut BTreeSet<String>) -> Yaml {
    match y {
        Yaml::String(s) => Yaml::String(interpolate(&s, vars, used)),
        Yaml::Hash(h) => Yaml::Hash(
            h.into_iter()
                .map(|(k, v)| (k, interpolated(v, vars, used)))
                .collect(),
        ),
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(|v| interpolated(v, vars, used)).collect()),
        other => other,
    }
}

/// Compose's interpolation: `$$` is `$`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
/// `${NAME:?error}`, `${NAME?error}` (a missing NAME is then an error, as `docker compose`
/// refuses to start). Bare `$NAME` is not used in deploy/compose, so it is refused here.
fn interpolate(s: &str, vars: &BTreeMap<String, String>, used: &mut BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let r = after
            .strip_prefix('{')
            .unwrap_or_else(|| panic!("write ${{NAME}}, not a bare $, in {s:?}"));
        let end = r
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {s:?}"));
        let expr = &r[..end];
        let n = expr
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(expr.len());
        let (name, op) = expr.split_at(n);
        used.insert(name.to_owned());
        let set = vars.get(name).filter(|v| !v.is_empty());
        let value = if let Some(d) = op.strip_prefix(":-").or(op.strip_prefix('-')) {
            set.cloned().unwrap_or_else(|| d.to_owned())
        } else if let Some(msg) = op.strip_prefix(":?").or(op.strip_prefix('?')) {
            set.cloned()
                .unwrap_or_else(|| panic!("{name} is required: {msg}"))
        } else {
            assert!(op.is_empty(), "unknown interpolation ${{{expr}}}");
            set.cloned().unwrap_or_default()
        };
        out.push_str(&value);
        rest = &r[end + 1..];
    }
    out.push_str(rest);
    out
}

fn sv(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("expected a string, found {y:?}"))
}

fn strings(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .unwrap_or_else(|| panic!("expected a list, found {y:?}"))
        .iter()
        .map(sv)
        .collect()
}

fn key_names(y: &Yaml) -> Vec<&str> {
    y.as_hash()
        .unwrap_or_else(|| panic!("expected a mapping, found {y:?}"))
        .keys()
        .map(sv)
        .collect()
}

/// Names that hold a secret: their value may only come from outside (.env, a Secret).
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "KEY_ID", "TOKEN", "DATABASE__URL"]
        .iter()
        .any(|w| n.contains(w))
}

/// An airlock.toml holds no secret: no password, secret, key or token, and no URL with a
/// user's password in it.
fn assert_no_secret_in(toml_text: &str, what: &str) {
    fn walk(v: &toml::Value, at: &str, what: &str) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = format!("{at}.{k}");
                    let secret = [
                        "url",
                        "password",
                        "secret",
                        "access_key_id",
                        "secret_access_key",
                    ];
                    assert!(
                        !secret.contains(&k.as_str()),
                        "{what}: {path} belongs in the environment, not in the file"
                    );
                    walk(v, &path, what);
                }
            }
            toml::Value::String(s) => {
                let userinfo = s.split_once("://").is_some_and(|(_, r)| {
                    r.split('/').next().is_some_and(|host| host.contains('@'))
                });
                assert!(!userinfo, "{what}: {at} has credentials in a URL");
            }
            _ => {}
        }
    }
    let t: toml::Table = toml_text.parse().unwrap_or_else(|e| panic!("{what}: {e}"));
    walk(&toml::Value::Table(t), "", what);
}

fn load(toml: &Path, env: &[(String, String)]) -> Result<Settings, String> {
    Settings::load(Some(toml), env.to_vec()).map_err(|e| e.to_string())
}

/// The check can fail: a misspelt key, in the environment or in the file, is refused.
fn assert_typos_refused(toml: &Path, env: &[(String, String)]) {
    let mut bad = env.to_vec();
    bad.push((
        "AIRLOCK__STORAGE__S3__SECRET_ACESS_KEY".into(),
        "s3cret".into(),
    ));
    let e = load(toml, &bad).unwrap_err();
    assert!(e.contains("secret_acess_key"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("airlock.toml");
    let text = std::fs::read_to_string(toml).unwrap();
    assert!(text.contains("\n[storage]\n"));
    std::fs::write(
        &copy,
        text.replace("\n[storage]\n", "\n[storage]\ndata_dri = \"/x\"\n"),
    )
    .unwrap();
    let e = load(&copy, env).unwrap_err();
    assert!(e.contains("data_dri"), "{e}");
}

/// `host` of `scheme://host:port/…` or of `host:port`.
fn host_of(addr: &str) -> &str {
    let a = addr.split_once("://").map_or(addr, |(_, r)| r);
    let a = a.rsplit_once('@').map_or(a, |(_, r)| r);
    a.split(['/', ':']).next().unwrap()
}

// ---- Compose ------------------------------------------------------------------------------

/// .env.example as Compose would read a .env made from it: every value left empty there (the
/// secrets) gets a placeholder; returns (variables, the names left empty).
fn env_example() -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut vars = BTreeMap::new();
    let mut empty = BTreeSet::new();
    for line in read("compose/.env.example").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("NAME=value");
        if v.is_empty() {
            empty.insert(k.to_owned());
            vars.insert(k.to_owned(), format!("test-{}", k.to_ascii_lowercase()));
        } else {
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    (vars, empty)
}

struct Compose {
    doc: Yaml,
    vars: BTreeMap<String, String>,
}

fn compose() -> Compose {
    let raw = yaml(&read("compose/compose.yaml"), "compose.yaml");
    let (vars, empty) = env_example();
    let mut used = BTreeSet::new();
    let doc = interpolated(raw, &vars, &mut used);
    // Every variable the file reads is in .env.example, and .env.example ships no secret.
    for name in &used {
        assert!(
            vars.contains_key(name),
            "{name} is missing from .env.example"
        );
    }
    for name in vars.keys().filter(|n| secret_name(n)) {
        assert!(empty.contains(name), ".env.example must leave {name} empty");
    }
    Compose { doc, vars }
}

/// The environment of a service, as (name, value) pairs.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    let env = &service["environment"];
    if env.is_badvalue() {
        return Vec::new();
    }
    env.as_hash()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                other => panic!("{k:?}: {other:?}"),
            };
            (sv(k).to_owned(), v)
        })
        .collect()
}

/// `SOURCE:TARGET[:ro]` of a service's volumes, by target.
fn mounts(service: &Yaml) -> BTreeMap<String, String> {
    strings(&service["volumes"])
        .into_iter()
        .map(|v| {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next().unwrap(), parts.next().expect(v));
            (dst.to_owned(), src.to_owned())
        })
        .collect()
}

fn healthcheck(service: &Yaml) -> String {
    let test = strings(&service["healthcheck"]["test"]);
    assert!(["CMD", "CMD-SHELL"].contains(&test[0]), "{test:?}");
    test[1..].join(" ")
}

#[test]
fn the_compose_file_runs_two_replicas_on_postgres_garage_and_clamd_with_settings_airlock_has() {
    let Compose { doc, vars } = compose();
    let services = &doc["services"];
    let names = key_names(services);
    for want in [
        "airlock-1",
        "airlock-2",
        "postgres",
        "garage",
        "garage-init",
        "clamd",
        "caddy",
    ] {
        assert!(names.contains(&want), "no service {want}: {names:?}");
    }
    let airlocks: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| services[*n]["image"].as_str() == Some("airlock:local"))
        .collect();
    assert_eq!(airlocks, ["airlock-1", "airlock-2"]);

    // Every other service with a state worth waiting for has a healthcheck.
    for name in ["postgres", "garage", "clamd"] {
        assert!(!healthcheck(&services[name]).is_empty(), "{name}");
    }
    assert!(healthcheck(&services["garage"]).contains("health"));
    // Readiness is the proxy's: Caddy sends requests only to replicas whose /readyz is 200.
    let caddyfile = read("compose/caddy/Caddyfile");
    assert!(caddyfile.contains("health_uri /readyz"), "{caddyfile}");
    for name in &airlocks {
        assert!(
            caddyfile.contains(&format!("{name}:8080")),
            "Caddy does not send to {name}"
        );
    }

    let mut settings = Vec::new();
    let mut keys_volumes = BTreeSet::new();
    let mut data_volumes = BTreeSet::new();
    for name in &airlocks {
        let svc = &services[*name];
        // Liveness on /healthz, in the container's own healthcheck.
        assert!(healthcheck(svc).contains("GET /healthz "), "{name}");
        // Hardened like the systemd unit: no root, no capabilities, nothing writable but its
        // volumes.
        assert_eq!(sv(&svc["user"]), "10001:10001");
        assert_eq!(svc["read_only"].as_bool(), Some(true), "{name}");
        assert_eq!(strings(&svc["cap_drop"]), ["ALL"]);
        assert_eq!(strings(&svc["security_opt"]), ["no-new-privileges:true"]);
        for dep in ["postgres", "garage-init", "clamd"] {
            assert!(!svc["depends_on"][dep].is_badvalue(), "{name} → {dep}");
        }

        // The airlock.toml it mounts, with its AIRLOCK__ variables, loads as airlock loads it.
        let command = strings(&svc["command"]);
        assert_eq!(command[0], "--config");
        assert_eq!(command.last(), Some(&"serve"));
        let m = mounts(svc);
        let src = m.get(command[1]).expect("the --config file is mounted");
        let toml = deploy("compose").join(src);
        assert_no_secret_in(&std::fs::read_to_string(&toml).unwrap(), src);
        let env = environment(svc);
        assert!(
            env.iter().all(|(k, _)| k.starts_with("AIRLOCK__")),
            "{env:?}"
        );
        for (k, v) in &env {
            if secret_name(k) {
                assert!(
                    v.contains("test-"),
                    "{name}: {k} must come from .env, not be written in compose.yaml"
                );
            }
        }
        let s = load(&toml, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_typos_refused(&toml, &env);

        // Two replicas, one set of keys: the same named volume at keys_dir; each its own
        // data_dir (scratch: the volumes are on S3).
        let keys_dir = s.storage.keys_dir();
        let kv = m
            .get(keys_dir.to_str().unwrap())
            .expect("keys_dir is mounted");
        assert!(
            !doc["volumes"][kv.as_str()].is_badvalue(),
            "{kv}: a named volume"
        );
        keys_volumes.insert(kv.clone());
        let dv = m
            .get(s.storage.data_dir.to_str().unwrap())
            .expect("data_dir");
        data_volumes.insert(dv.clone());
        settings.push(s);
    }
    assert_eq!(
        keys_volumes.len(),
        1,
        "one keys volume for both: {keys_volumes:?}"
    );
    assert_eq!(data_volumes.len(), 2, "a data_dir each: {data_volumes:?}");

    let s = &settings[0];
    // PostgreSQL, Garage and clamd are the services of this file.
    let db = s.database.url.as_deref().unwrap();
    assert!(db.starts_with("postgres://"), "{db}");
    assert_eq!(host_of(db), "postgres");
    assert_eq!(
        s.database.url, settings[1].database.url,
        "one database for both replicas"
    );
    let clamd = s.scanning.clamd.as_deref().unwrap();
    assert_eq!(host_of(clamd), "clamd");
    airlock::scan::Scanners::load(s.scanning.dir.as_deref(), Some(clamd))
        .unwrap_or_else(|e| panic!("{e}"));
    let volume = |name: &str| match s.storage.volume(name).unwrap() {
        VolumeLocation::S3(v) => v,
        VolumeLocation::Local => panic!("{name} is not on S3"),
    };
    let quarantine = volume("quarantine");
    let released = volume("released");
    assert_eq!(host_of(quarantine.endpoint.as_deref().unwrap()), "garage");
    assert!(quarantine.path_style);
    // garage-init makes exactly these buckets and grants airlock's key from .env; the
    // workspace's read-only key gets the released bucket, which holds nothing else.
    let init = environment(&services["garage-init"]);
    let init = |k: &str| init.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(init("BUCKET"), quarantine.bucket);
    assert_eq!(init("RELEASED_BUCKET"), released.bucket);
    assert_ne!(quarantine.bucket, released.bucket);
    assert_ne!(volume("egress").bucket, released.bucket, "egress");
    // Output folders stay local, on one volume both replicas mount at data_dir/volumes.
    assert_eq!(s.storage.volume("output").unwrap(), VolumeLocation::Local);
    let outputs: BTreeSet<String> = ["airlock-1", "airlock-2"]
        .iter()
        .map(|r| mounts(&services[*r])["/var/lib/airlock/volumes"].clone())
        .collect();
    assert_eq!(outputs.len(), 1, "one outputs volume for both: {outputs:?}");
    let (key, secret) = quarantine.credentials.clone().unwrap();
    assert_eq!(
        (init("AIRLOCK_S3_KEY_ID"), init("AIRLOCK_S3_SECRET")),
        (key, secret)
    );
    assert_ne!(init("WORKSPACE_S3_KEY_ID"), init("AIRLOCK_S3_KEY_ID"));
    assert!(!s.storage.keys_dir().starts_with(&s.storage.data_dir));

    // Garage: the garage.toml both garage services mount, with no secret in it, and the
    // region airlock signs for.
    let gsrc = mounts(&services["garage"])["/etc/garage.toml"].clone();
    assert_eq!(mounts(&services["garage-init"])["/etc/garage.toml"], gsrc);
    let garage_toml = std::fs::read_to_string(deploy("compose").join(&gsrc)).unwrap();
    let g: toml::Table = garage_toml.parse().unwrap();
    for k in ["rpc_secret", "admin_token", "metrics_token"] {
        assert!(
            !g.contains_key(k),
            "{k}: GARAGE_{}, not the file",
            k.to_uppercase()
        );
    }
    assert_eq!(g["replication_factor"].as_integer(), Some(1));
    assert_eq!(
        g["s3_api"]["s3_region"].as_str(),
        Some(quarantine.region.as_str())
    );
    assert_eq!(host_of(g["rpc_public_addr"].as_str().unwrap()), "garage");
    let meta = g["metadata_dir"].as_str().unwrap();
    assert_eq!(
        mounts(&services["garage-init"])[meta],
        mounts(&services["garage"])[meta],
        "garage-init's CLI reads the node id in metadata_dir"
    );
    for name in ["garage", "garage-init"] {
        let env = environment(&services[name]);
        assert!(env
            .iter()
            .any(|(k, v)| k == "GARAGE_RPC_SECRET" && *v == vars["GARAGE_RPC_SECRET"]));
    }
    assert!(sv(&services["garage"]["image"]).starts_with("dxflrs/garage:v2."));
    // The init script is valid sh, and gives the workspace's key reading alone, on the
    // released bucket alone.
    let script = deploy("compose/garage/init.sh");
    let out = Command::new("sh").arg("-n").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    let grants: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("bucket allow") && l.contains("WORKSPACE_S3_KEY_ID"))
        .collect();
    assert_eq!(
        grants,
        ["garage bucket allow --read --key \"$WORKSPACE_S3_KEY_ID\" \"$RELEASED_BUCKET\""]
    );
    assert!(text.contains("garage bucket deny --write --owner --key \"$WORKSPACE_S3_KEY_ID\""));

    // Caddy is the one proxy airlock believes: its fixed address is in trusted_proxies.
    let caddy_ip: std::net::IpAddr = sv(&services["caddy"]["networks"]["airlock"]["ipv4_address"])
        .parse()
        .unwrap();
    assert!(
        s.server
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&caddy_ip)),
        "{:?}",
        s.server.trusted_proxies
    );
    // Only Caddy publishes a port.
    for name in key_names(services) {
        if name != "caddy" {
            assert!(
                services[name]["ports"].is_badvalue(),
                "{name} publishes a port"
            );
        }
    }

    // clamd runs its own freshclam: the official image does, into its own volume.
    assert!(sv(&services["clamd"]["image"]).starts_with("clamav/clamav:"));
    assert!(mounts(&services["clamd"]).contains_key("/var/lib/clamav"));
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_on_debian_slim() {
    let text = read("compose/Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("FROM debian:") && froms[1].ends_with("-slim"));
    let runtime = &text[text.find(froms[1]).unwrap()..];
    assert!(runtime.contains("\nUSER 10001:10001\n"), "{runtime}");
    assert!(text.contains("cargo build --release --locked --bin airlock"));
    let ignore = read("compose/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l == "target"));
    // The compose file builds it from the repository.
    let Compose { doc, .. } = compose();
    let build = &doc["services"]["airlock-1"]["build"];
    assert_eq!(sv(&build["dockerfile"]), "deploy/compose/Dockerfile");
    assert_eq!(
        deploy("compose")
            .join(sv(&build["context"]))
            .canonicalize()
            .unwrap(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .canonicalize()
            .unwrap()
    );
}

/// A free TCP port on 127.0.0.1 (nothing listens there once this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The compose healthcheck's command, run by bash as Docker would, against `port`.
fn run_healthcheck(port: u16) -> bool {
    let Compose { doc, .. } = compose();
    let test = strings(&doc["services"]["airlock-1"]["healthcheck"]["test"]);
    assert_eq!(test[..3], ["CMD", "bash", "-c"]);
    assert!(test[3].contains("127.0.0.1/8080"));
    let script = test[3].replace("127.0.0.1/8080", &format!("127.0.0.1/{port}"));
    Command::new("bash")
        .args(["-c", &script])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_healthcheck_and_make_keys_work_against_the_binary() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // make-keys.sh, as the Helm README runs it, and a copy without anchor.pub for airlock to
    // write its own.
    let made = dir.path().join("made");
    let out = Command::new("sh")
        .arg(deploy("helm/make-keys.sh"))
        .arg(&made)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    for k in ["jwt.key", "audit.key", "anchor.key"] {
        let b = std::fs::read(made.join(k)).unwrap();
        assert_eq!(b.len(), 32, "{k}");
        std::fs::write(keys.join(k), b).unwrap();
    }
    // It never overwrites a key.
    let again = Command::new("sh")
        .arg(deploy("helm/make-keys.sh"))
        .arg(&made)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let port = free_port();
    assert!(
        !run_healthcheck(port),
        "the healthcheck passes with nothing listening"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("AIRLOCK__STORAGE__DATA_DIR", dir.path().join("data"))
        .env("AIRLOCK__STORAGE__KEYS_DIR", &keys)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_owned();
    let ok = run_healthcheck(port);
    // The upload page and its scripts, which the Helm ingress exposes beside the API routes.
    let page = reqwest::get(format!("{url}/upload")).await.unwrap();
    let status = page.status();
    let html = page.text().await.unwrap();
    // The page's scripts, at their content-hashed URLs under /static/.
    let scripts: Vec<String> = html
        .match_indices("src=\"/static/")
        .map(|(i, m)| {
            let rest = &html[i + m.len() - "/static/".len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect();
    assert!(
        scripts.contains(&airlock::ui::assets::url("upload.js").to_owned()),
        "{scripts:?}"
    );
    let mut served = Vec::new();
    for s in &scripts {
        served.push(reqwest::get(format!("{url}{s}")).await.unwrap().status());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ok,
        "the compose healthcheck failed against a running airlock"
    );
    assert_eq!(status.as_u16(), 200);
    assert!(
        served.iter().all(|s| s.as_u16() == 200),
        "{scripts:?}: {served:?}"
    );
    assert_eq!(
        std::fs::read_to_string(keys.join("anchor.pub")).unwrap(),
        std::fs::read_to_string(made.join("anchor.pub")).unwrap(),
        "make-keys.sh's anchor.pub is not the one airlock writes"
    );
}

/// `garage CMD…` with the test's config, secret and PATH; returns its output, panicking
/// on failure.
fn garage(env: &[(String, String)], args: &[&str]) -> String {
    let out = Command::new("garage")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "garage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn garage_init_makes_the_buckets_and_a_workspace_key_that_only_reads_the_released_one() {
    // compose's garage.toml and garage command, on a real Garage 2.5, with its paths and
    // addresses moved into a temporary directory and free ports.
    let Compose { doc, .. } = compose();
    let services = &doc["services"];
    let dir = tempfile::tempdir().unwrap();
    let (rpc, s3) = (free_port(), free_port());
    let mut conf = read("compose/garage/garage.toml");
    for (from, to) in [
        ("/var/lib/garage", dir.path().to_str().unwrap().to_owned()),
        ("\"[::]:3901\"", format!("\"127.0.0.1:{rpc}\"")),
        ("\"garage:3901\"", format!("\"127.0.0.1:{rpc}\"")),
        ("\"[::]:3900\"", format!("\"127.0.0.1:{s3}\"")),
    ] {
        assert!(conf.contains(from), "garage.toml has no {from}");
        conf = conf.replace(from, &to);
    }
    let config = dir.path().join("garage.toml");
    std::fs::write(&config, conf).unwrap();
    // garage-init's script finds `garage` on its PATH, as in its image.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(common::garage::binary(), bin.join("garage")).unwrap();
    let hex = |n: usize| {
        (0..n)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect::<String>()
    };
    let workspace_key = format!("GK{}", &hex(1)[..24]);
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        ),
        ("GARAGE_CONFIG_FILE".into(), config.display().to_string()),
        ("GARAGE_RPC_SECRET".into(), hex(2)),
    ];
    // garage-init's environment, with real key pairs in place of .env's.
    for (k, v) in environment(&services["garage-init"]) {
        let v = match k.as_str() {
            "AIRLOCK_S3_KEY_ID" => format!("GK{}", &hex(1)[..24]),
            "WORKSPACE_S3_KEY_ID" => workspace_key.clone(),
            "AIRLOCK_S3_SECRET" | "WORKSPACE_S3_SECRET" => hex(2),
            "GARAGE_RPC_SECRET" => continue,
            _ => v,
        };
        env.push((k, v));
    }
    let var = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (bucket, released) = (var("BUCKET"), var("RELEASED_BUCKET"));

    let command = strings(&services["garage"]["command"]);
    assert_eq!(command[..2], ["/garage", "server"]);
    let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
    let mut server = Command::new("garage")
        .args(&command[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "garage=warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let script = deploy("compose/garage/init.sh");
    // Twice: a second run (a restart of the stack) changes nothing and succeeds.
    let runs: Vec<std::process::Output> = (0..2)
        .map(|_| {
            Command::new("sh")
                .arg(&script)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap()
        })
        .collect();
    let released_info = garage(&env, &["bucket", "info", &released]);
    let bucket_info = garage(&env, &["bucket", "info", &bucket]);
    let key_info = garage(&env, &["key", "info", &workspace_key]);
    let _ = server.kill();
    let _ = server.wait();
    for r in &runs {
        assert!(
            r.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&r.stderr),
            std::fs::read_to_string(dir.path().join("garage.log")).unwrap()
        );
    }
    // Garage's own account of the grants: on the released bucket the workspace's key reads
    // (R) and airlock's reads and writes (RW); the other bucket is airlock's alone.
    let grant = |info: &str, key: &str| {
        info.lines()
            .find(|l| l.contains(key))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
    };
    let airlock_key = var("AIRLOCK_S3_KEY_ID");
    assert_eq!(
        grant(&released_info, &workspace_key).as_deref(),
        Some("R"),
        "{released_info}"
    );
    assert_eq!(
        grant(&released_info, &airlock_key).as_deref(),
        Some("RW"),
        "{released_info}"
    );
    assert_eq!(grant(&bucket_info, &workspace_key), None, "{bucket_info}");
    assert_eq!(
        grant(&bucket_info, &airlock_key).as_deref(),
        Some("RW"),
        "{bucket_info}"
    );
    let buckets: Vec<&str> = key_info
        .lines()
        .skip_while(|l| !l.contains("BUCKETS FOR THIS KEY"))
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(buckets.len(), 1, "{key_info}");
    assert!(
        buckets[0].starts_with("R ") && buckets[0].contains(&released),
        "{key_info}"
    );
    assert!(
        key_info.contains("Can create buckets:  false"),
        "{key_info}"
    );
}

// ---- Helm ---------------------------------------------------------------------------------

fn chart(rel: &str) -> String {
    read(&format!("helm/airlock/{rel}"))
}

/// The chart's templates by file name (not _helpers.tpl).
fn templates() -> BTreeMap<String, String> {
    std::fs::read_dir(deploy("helm/airlock/templates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| {
            let text = chart(&format!("templates/{n}"));
            (n, text)
        })
        .collect()
}

/// A template with its Go template actions taken out: a line holding only an action goes,
/// an action inside a line becomes `TEMPLATE`. Not a rendering (both branches of an `if`
/// stay, a `range` runs once, `toYaml` adds nothing), but the structure it leaves is YAML.
fn skeleton(text: &str, what: &str) -> Yaml {
    let lines: Vec<String> = text
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1)
        })
        .map(|l| {
            let mut out = String::new();
            let mut rest = l;
            while let Some(i) = rest.find("{{") {
                out.push_str(&rest[..i]);
                let j = i + rest[i..].find("}}").expect("unclosed {{") + 2;
                out.push_str("TEMPLATE");
                rest = &rest[j..];
            }
            out.push_str(rest);
            out
        })
        .collect();
    yaml(&lines.join("\n"), what)
}

/// Every `.Values.a.b` (or `$.Values.a.b`) a template reads, as "a.b".
fn values_read(text: &str) -> BTreeSet<String> {
    text.match_indices(".Values.")
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
                .trim_end_matches('.')
                .to_owned()
        })
        .collect()
}

fn lookup<'a>(values: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(values, |y, k| &y[k])
}

/// A value that the setting the variable `name` feeds accepts.
fn dummy(name: &str) -> String {
    let v = match name {
        n if n.ends_with("DATABASE__URL") => "postgres://airlock:pw@db:5432/airlock",
        n if n.ends_with("ENDPOINT") => "http://garage.storage:3900",
        n if n.ends_with("PUBLIC_URL") => "https://airlock.example.org",
        n if n.ends_with("PATH_STYLE") => "true",
        n if n.ends_with("TRUSTED_PROXIES") => "10.244.0.0/16,10.245.0.0/16",
        n if n.ends_with("CLAMD") => "clamd.clamav:3310",
        _ => "dummy-value",
    };
    v.to_owned()
}

#[test]
fn the_helm_chart_parses_reads_only_values_it_has_and_sets_only_settings_airlock_has() {
    let meta = yaml(&chart("Chart.yaml"), "Chart.yaml");
    assert_eq!(sv(&meta["apiVersion"]), "v2");
    assert_eq!(sv(&meta["name"]), "airlock");
    assert!(!sv(&meta["version"]).is_empty() && !sv(&meta["appVersion"]).is_empty());
    let values = yaml(&chart("values.yaml"), "values.yaml");
    assert!(values["replicaCount"].as_i64().unwrap() >= 2);
    for path in [
        "database.existingSecret",
        "s3.existingSecret",
        "keys.existingSecret",
    ] {
        assert_eq!(
            lookup(&values, path).as_str(),
            Some(""),
            "{path}: a name, no secret"
        );
    }
    let templates = templates();

    // Every `.Values.…` a template reads is in values.yaml (a misspelt one would render
    // empty); the check can fail.
    for (name, text) in &templates {
        for path in values_read(text) {
            assert!(
                !lookup(&values, &path).is_badvalue(),
                "{name}: .Values.{path}"
            );
        }
    }
    assert!(lookup(&values, "s3.bucekt").is_badvalue());

    // The ConfigMap is files/airlock.toml, which holds no secret.
    assert!(templates["configmap.yaml"].contains(".Files.Get \"files/airlock.toml\""));
    let toml = deploy("helm/airlock/files/airlock.toml");
    assert_no_secret_in(
        &std::fs::read_to_string(&toml).unwrap(),
        "files/airlock.toml",
    );

    // The Deployment's container: its AIRLOCK__ variables, secrets by reference only.
    let dep = skeleton(&templates["deployment.yaml"], "deployment.yaml");
    assert_eq!(sv(&dep["kind"]), "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mut env = Vec::new();
    for e in c["env"].as_vec().unwrap() {
        let name = sv(&e["name"]).to_owned();
        assert!(name.starts_with("AIRLOCK__"), "{name}");
        if secret_name(&name) {
            assert!(e["value"].is_badvalue(), "{name} has a literal value");
            assert_eq!(sv(&e["valueFrom"]["secretKeyRef"]["name"]), "TEMPLATE");
        }
        env.push((name.clone(), dummy(&name)));
    }
    for want in [
        "AIRLOCK__DATABASE__URL",
        "AIRLOCK__STORAGE__S3__ACCESS_KEY_ID",
        "AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY",
    ] {
        assert!(env.iter().any(|(n, _)| n == want), "{want}");
    }
    let s3 = load(&toml, &env).unwrap_or_else(|e| panic!("files/airlock.toml: {e}"));
    assert_typos_refused(&toml, &env);
    let VolumeLocation::S3(released) = s3.storage.volume("released").unwrap() else {
        panic!("released is not on S3")
    };
    assert_eq!(released.bucket, "dummy-value"); // s3.releasedBucket
    assert_eq!(s3.server.trusted_proxies.len(), 2);

    // Probes: liveness and startup on /healthz, readiness on /readyz, on the port airlock
    // listens on.
    assert_eq!(sv(&c["livenessProbe"]["httpGet"]["path"]), "/healthz");
    assert_eq!(sv(&c["startupProbe"]["httpGet"]["path"]), "/healthz");
    assert_eq!(sv(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
    let port = &c["ports"][0];
    assert_eq!(sv(&port["name"]), "http");
    assert_eq!(
        port["containerPort"].as_i64(),
        Some(i64::from(s3.server.listen.port()))
    );
    for probe in ["livenessProbe", "startupProbe", "readinessProbe"] {
        assert_eq!(sv(&c[probe]["httpGet"]["port"]), "http");
    }
    // Not root, no capabilities, a read-only root filesystem.
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(pod["securityContext"]["runAsUser"].as_i64().unwrap() > 0);
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    // The mounts are where airlock.toml says: the config, the keys (read-only), data_dir.
    let args = strings(&c["args"]);
    assert_eq!(args[0], "--config");
    assert_eq!(args.last(), Some(&"serve"));
    let mounted: BTreeMap<&str, &Yaml> = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|m| (sv(&m["mountPath"]), m))
        .collect();
    let config_dir = Path::new(args[1]).parent().unwrap().to_str().unwrap();
    assert_eq!(sv(&mounted[config_dir]["name"]), "config");
    let keys = mounted[s3.storage.keys_dir().to_str().unwrap()];
    assert_eq!(keys["readOnly"].as_bool(), Some(true));
    assert!(mounted.contains_key(s3.storage.data_dir.to_str().unwrap()));
    assert!(mounted.contains_key("/tmp"));
    assert_eq!(dep["spec"]["replicas"].as_str(), Some("TEMPLATE"));
    assert!(templates["deployment.yaml"].contains("replicas: {{ .Values.replicaCount }}"));

    // The Service and the NetworkPolicy: only the ingress controller's pods reach the port.
    let svc = skeleton(&templates["service.yaml"], "service.yaml");
    assert_eq!(sv(&svc["spec"]["ports"][0]["targetPort"]), "http");
    let np = skeleton(&templates["networkpolicy.yaml"], "networkpolicy.yaml");
    assert_eq!(sv(&np["kind"]), "NetworkPolicy");
    assert_eq!(strings(&np["spec"]["policyTypes"]), ["Ingress"]);
    let rule = &np["spec"]["ingress"][0];
    let from = &rule["from"][0];
    assert_eq!(
        key_names(from),
        ["namespaceSelector", "podSelector"],
        "both, in one peer"
    );
    assert_eq!(sv(&rule["ports"][0]["port"]), "http");
    let npt = &templates["networkpolicy.yaml"];
    for sel in ["namespaceSelector", "podSelector"] {
        let path = format!("networkPolicy.ingressController.{sel}");
        assert!(
            npt.contains(&format!(".Values.{path}")),
            "{sel} from values"
        );
        assert!(lookup(&values, &path)["matchLabels"].as_hash().is_some());
    }
    assert_eq!(values["networkPolicy"]["enabled"].as_bool(), Some(true));
    let ing = skeleton(&templates["ingress.yaml"], "ingress.yaml");
    assert_eq!(sv(&ing["kind"]), "Ingress");
}

/// The Python with PyPI's helm-python-sdk (Helm's Go SDK as a library) that scripts/test.sh
/// installs in a venv of its own.
fn helm_python() -> PathBuf {
    let p = std::env::var_os("AIRLOCK_HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/airlock-tests/helm-venv/bin/python")
        });
    assert!(
        p.exists(),
        "{}: no helm-python-sdk; run scripts/test.sh, which installs it",
        p.display()
    );
    p
}

/// `helm lint --strict` and `helm template` of the chart at `dir` with `values`, by Helm's
/// own SDK (tests/deploy/helm_sdk.py): (lint report, rendered manifests by path, or the
/// render error).
fn helm_sdk(
    dir: &Path,
    values: &serde_json::Value,
) -> (serde_json::Value, Result<Vec<Yaml>, String>) {
    let out = Command::new(helm_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/helm_sdk.py"))
        .arg(dir)
        .arg(values.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["sdk"].as_str().unwrap().starts_with('v'), "{v}");
    let rendered = match v["rendered"].as_object() {
        Some(m) => Ok(m
            .iter()
            .flat_map(|(path, text)| {
                YamlLoader::load_from_str(text.as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{path}: {e}"))
            })
            .filter(|y| !y.is_null())
            .collect()),
        None => Err(v["render_error"].as_str().unwrap_or("").to_owned()),
    };
    (v["lint"].clone(), rendered)
}

/// Lint findings at warning or worse (severity 2 and 3), and the errors.
fn lint_problems(lint: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
        .map(|m| m.to_string())
        .collect();
    out.extend(
        lint["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.to_string()),
    );
    out
}

/// The chart through Helm itself (its Go SDK, as `helm lint --strict` and `helm template`
/// run it): with a site's values it lints clean and renders; what it renders has the probes,
/// the NetworkPolicy, and an airlock.toml plus AIRLOCK__ variables that airlock loads. A
/// template error, or a REQUIRED value left out, is caught.
#[test]
fn the_helm_chart_lints_strict_and_renders_with_helms_own_sdk() {
    let site = serde_json::json!({
        "database": {"existingSecret": "airlock-db"},
        "s3": {"existingSecret": "airlock-s3", "bucket": "airlock",
               "releasedBucket": "airlock-released", "region": "garage",
               "endpoint": "http://garage.storage:3900", "pathStyle": true},
        "keys": {"existingSecret": "airlock-keys"},
        "publicUrl": "https://airlock.example.ac.uk",
        "trustedProxies": ["10.244.0.0/16"],
        "outputs": {"existingClaim": "airlock-outputs"},
    });
    let dir = deploy("helm/airlock");
    let (lint, rendered) = helm_sdk(&dir, &site);
    assert_eq!(lint["total_charts_linted"], 1, "{lint}");
    assert!(lint_problems(&lint).is_empty(), "{lint}");
    let docs = rendered.unwrap_or_else(|e| panic!("render: {e}"));
    let kind = |k: &str| -> &Yaml {
        docs.iter()
            .find(|d| sv(&d["kind"]) == k)
            .unwrap_or_else(|| panic!("no {k} rendered"))
    };
    let dep = kind("Deployment");
    assert_eq!(dep["spec"]["replicas"].as_i64(), Some(2));
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(sv(&c["livenessProbe"]["httpGet"]["path"]), "/healthz");
    assert_eq!(sv(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
    // Secrets only by reference, to the Secrets named in the values.
    let mut env = Vec::new();
    for e in c["env"].as_vec().unwrap() {
        let name = sv(&e["name"]).to_owned();
        let value = match e["value"].as_str() {
            Some(v) => v.to_owned(),
            None => {
                let secret = sv(&e["valueFrom"]["secretKeyRef"]["name"]);
                assert!(
                    ["airlock-db", "airlock-s3"].contains(&secret),
                    "{name} from {secret}"
                );
                dummy(&name)
            }
        };
        env.push((name, value));
    }
    // The rendered ConfigMap's airlock.toml, with the rendered variables, is a configuration
    // airlock loads, on the site's S3.
    let cm = kind("ConfigMap");
    let toml_text = sv(&cm["data"]["airlock.toml"]);
    let work = tempfile::tempdir().unwrap();
    let toml = work.path().join("airlock.toml");
    std::fs::write(&toml, toml_text).unwrap();
    let s = load(&toml, &env).unwrap_or_else(|e| panic!("rendered airlock.toml: {e}"));
    let VolumeLocation::S3(released) = s.storage.volume("released").unwrap() else {
        panic!("released is not on S3")
    };
    assert_eq!(
        (released.bucket.as_str(), released.endpoint.as_deref()),
        ("airlock-released", Some("http://garage.storage:3900"))
    );
    assert!(released.path_style);
    let np = kind("NetworkPolicy");
    assert_eq!(strings(&np["spec"]["policyTypes"]), ["Ingress"]);
    assert_eq!(sv(&np["spec"]["ingress"][0]["ports"][0]["port"]), "http");
    assert!(docs.iter().any(|d| sv(&d["kind"]) == "Service"));

    // The check can fail: a template that reads a value the chart does not have...
    let broken = tempfile::tempdir().unwrap();
    copy_dir(&dir, broken.path());
    let dep_t = broken.path().join("templates/deployment.yaml");
    let text = std::fs::read_to_string(&dep_t).unwrap();
    std::fs::write(
        &dep_t,
        text.replacen("spec:", "spec:\n  broken: {{ .Values.nope.deeper }}", 1),
    )
    .unwrap();
    let (lint, rendered) = helm_sdk(broken.path(), &site);
    assert!(
        lint_problems(&lint)
            .iter()
            .any(|p| p.contains("nope.deeper")),
        "{lint}"
    );
    assert!(rendered.is_err());
    // ...and a REQUIRED value left out stops the render, naming it.
    let (_, rendered) = helm_sdk(&dir, &serde_json::json!({}));
    let err = rendered.unwrap_err();
    assert!(err.contains("database.existingSecret"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// `(method, route)` rows of the chart README's table of upload routes.
fn readme_upload_routes() -> Vec<(String, String)> {
    chart("README.md")
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let strip = |c: &str| c.strip_prefix('`')?.strip_suffix('`').map(str::to_owned);
            let method = strip(cells.get(1)?)?;
            let route = strip(cells.get(2)?)?;
            route
                .starts_with("/api/")
                .then(|| (method.to_ascii_lowercase(), route))
        })
        .collect()
}

#[test]
fn the_ingress_exposes_exactly_the_upload_routes_the_chart_readme_lists() {
    let routes = airlock::server::api_routes();
    let listed = readme_upload_routes();
    assert!(listed.len() >= 10, "{listed:?}");
    // Every route the README names is one airlock serves, with that method.
    for (m, r) in &listed {
        assert!(
            routes.iter().any(|(rm, rr)| rm == m && rr == r),
            "the chart README names {m} {r}, which airlock does not serve"
        );
    }
    let listed_paths: BTreeSet<&str> = listed.iter().map(|(_, r)| r.as_str()).collect();
    // The ingress's regular expression (ingress-nginx matches case-insensitively) takes
    // exactly those paths among all of airlock's routes.
    let values = yaml(&chart("values.yaml"), "values.yaml");
    let paths = values["ingress"]["paths"].as_vec().unwrap();
    let regexes: Vec<regex::Regex> = paths
        .iter()
        .filter(|p| sv(&p["pathType"]) == "ImplementationSpecific")
        .map(|p| regex::Regex::new(&format!("(?i){}", sv(&p["path"]))).unwrap())
        .collect();
    assert_eq!(regexes.len(), 1);
    assert_eq!(
        values["ingress"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"].as_str(),
        Some("true")
    );
    let concrete = |route: &str| {
        route
            .replace("{id}", "0192f7a4-7b1c-7c3e-9d2a-5b6c7d8e9f00")
            .replace("{path}", "dir/results.csv")
            .replace("{upload}", "5b6c7d8e")
            .replace("{project}", "genomics")
            .replace("{workspace}", "analysis")
            .replace("{user}", "alice")
    };
    for (_, route) in &routes {
        let exposed = regexes.iter().any(|r| r.is_match(&concrete(route)));
        assert_eq!(
            exposed,
            listed_paths.contains(route.as_str()),
            "{route}: the ingress {} it",
            if exposed {
                "exposes"
            } else {
                "does not expose"
            }
        );
    }
    // The other paths are the upload page and its scripts (served, checked against the
    // binary in the_compose_healthcheck_and_make_keys_work_against_the_binary).
    let others: Vec<&str> = paths
        .iter()
        .filter(|p| sv(&p["pathType"]) != "ImplementationSpecific")
        .map(|p| sv(&p["path"]))
        .collect();
    assert_eq!(others, ["/upload", "/static/"]);
}
