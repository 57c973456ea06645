//! `/metrics` through the real server: a transfer uploaded (PUT and tus), sealed, scanned by the
//! real clamd, approved, released and re-verified moves the counters by exactly the files and
//! bytes sent; requests are labelled by route template; background work and transfers by state
//! agree with the database; and nothing in the text names a transfer, a file or a token.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Every sample of an exposition, `name{labels}` → value, after checking that the text is
/// well-formed OpenMetrics: comments are HELP/TYPE/UNIT lines or the final `# EOF`, every other
/// line is `name{labels} value` with a known family's name and a number for its value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            let (kind, name, what) = (it.next(), it.next(), it.next());
            assert!(
                matches!(kind, Some("HELP" | "TYPE" | "UNIT")) && name.is_some(),
                "bad comment {line:?}"
            );
            if kind == Some("TYPE") {
                let what = what.unwrap_or_else(|| panic!("TYPE without a type: {line:?}"));
                assert!(
                    ["counter", "gauge", "histogram", "info", "unknown"].contains(&what),
                    "unknown type in {line:?}"
                );
                families.insert(name.unwrap().to_owned(), what.to_owned());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?} is not a number"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                for pair in split_labels(labels) {
                    let (k, val) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                    assert!(valid_name(k), "bad label name {k:?} in {line:?}");
                    assert!(
                        val.len() >= 2 && val.starts_with('"') && val.ends_with('"'),
                        "unquoted label value in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            families.contains_key(family),
            "{line:?} belongs to no TYPE-declared family"
        );
        assert!(
            samples.insert(series.to_owned(), v).is_none(),
            "{series} twice"
        );
    }
    samples
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// `a="x",b="y,z"` → [`a="x"`, `b="y,z"`] (commas inside quotes stay).
fn split_labels(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, ch) in s.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

async fn scrape(t: &TestApp) -> (String, BTreeMap<String, f64>) {
    let r = t
        .http
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:#?}", m.keys()))
}

/// The sum of a histogram's `_count` over every series whose labels contain all of `with`.
fn count_where(m: &BTreeMap<String, f64>, family: &str, with: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}_count{{")))
        .filter(|(k, _)| with.iter().all(|w| k.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

async fn pending_deliveries(t: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'")
        .fetch_one(t.app.store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_move_by_exactly_what_was_sent_released_and_verified() {
    let t = TestApp::spawn_with(|s| {
        // Only the verification this test asks for is counted.
        s.integrity.enabled = false;
        // A receiver that is never there, retried an hour later: deliveries stay pending.
        s.webhooks.urls = vec!["http://127.0.0.1:9/never".into()];
        s.webhooks.secret = "a-secret-of-sixteen+".into();
        s.webhooks.backoff_initial = Duration::from_secs(3600);
        s.webhooks.timeout = Duration::from_secs(1);
        s.webhooks.poll_interval = Duration::from_millis(100);
    })
    .await;
    let p = t.bootstrap(1).await;
    let (_, before) = scrape(&t).await;

    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("cohort-alpha/patients.csv", bytes(123_457, 1)),
        ("cohort-alpha/visits.csv", bytes(2 << 20, 2)),
        ("secret-name-zz9.txt", bytes(1, 3)),
    ];
    for (path, b) in &files {
        let (s, v) = t.put(&up, &id, &encode_all(path), b.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // One more by tus, in two PATCHes.
    let tus_bytes = bytes(700_001, 4);
    let r = t
        .tus_create(&up, &id)
        .header("Upload-Length", tus_bytes.len().to_string())
        .header("Upload-Metadata", tus_meta("by-tus/other-name-qq7.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let url = if loc.starts_with("http") {
        loc.clone()
    } else {
        format!("{}{loc}", t.url)
    };
    let half = tus_bytes.len() / 2;
    for (offset, part) in [(0, &tus_bytes[..half]), (half, &tus_bytes[half..])] {
        let r = t
            .tus_patch(&up, &url, offset, part.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    // And a tar batch of three members (two packed, one stored on its own), one upload.
    let members: Vec<(&str, Vec<u8>)> = vec![
        ("batch/a.csv", bytes(4096, 5)),
        ("batch/b.csv", bytes(10, 6)),
        ("batch/big.bin", bytes(300_000, 7)),
    ];
    let mut tar = tar::Builder::new(Vec::new());
    for (path, b) in &members {
        let mut h = tar::Header::new_ustar();
        h.set_size(b.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, b.as_slice()).unwrap();
    }
    let (s, v) = t.put_archive(&up, &id, "", tar.into_inner().unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sent_files = (files.len() + 1 + members.len()) as f64;
    let sent_bytes = (files.iter().map(|(_, b)| b.len()).sum::<usize>()
        + tus_bytes.len()
        + members.iter().map(|(_, b)| b.len()).sum::<usize>()) as f64;
    // The archive is one upload: its duration is observed once.
    let uploads = (files.len() + 2) as f64;

    let (_, mid) = scrape(&t).await;
    let delta = |m: &BTreeMap<String, f64>, s: &str| get(m, s) - get(&before, s);
    assert_eq!(delta(&mid, "airlock_ingested_files_total"), sent_files);
    assert_eq!(delta(&mid, "airlock_ingested_bytes_total"), sent_bytes);
    assert_eq!(
        delta(&mid, "airlock_upload_duration_seconds_count"),
        uploads
    );
    assert_eq!(get(&mid, "airlock_released_files_total"), 0.0);

    let (s, v) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "in_review").await;
    let (s, v) = t
        .post_json(&p.inv, &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "released").await;

    // Re-verification, as the scheduler and `airlock verify` run it: both copies of each file.
    let tr = t
        .app
        .store
        .transfer(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let report = airlock::integrity::verify(&t.app, &tr, airlock::integrity::Scope::All)
        .await
        .unwrap();
    assert_eq!(report.problems().count(), 0, "{report:?}");
    airlock::integrity::record(&t.app, &tr, &report)
        .await
        .unwrap();
    // A path no route matches, holding the transfer id: counted, but not by its path.
    let r = t
        .http
        .get(t.api(&format!("/nowhere/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Store-backed values are re-read at most once per REFRESH.
    tokio::time::sleep(airlock::metrics::REFRESH + Duration::from_millis(100)).await;
    let (text, after) = scrape(&t).await;
    assert_eq!(delta(&after, "airlock_ingested_files_total"), sent_files);
    assert_eq!(delta(&after, "airlock_ingested_bytes_total"), sent_bytes);
    assert_eq!(delta(&after, "airlock_released_files_total"), sent_files);
    assert_eq!(delta(&after, "airlock_released_bytes_total"), sent_bytes);
    assert_eq!(delta(&after, "airlock_release_duration_seconds_count"), 1.0);
    assert_eq!(
        delta(&after, "airlock_integrity_files_verified_total"),
        2.0 * sent_files
    );
    assert_eq!(
        delta(&after, "airlock_integrity_bytes_verified_total"),
        2.0 * sent_bytes
    );
    for kind in ["changed", "missing", "unexpected"] {
        for loc in ["quarantine", "released"] {
            let s =
                format!("airlock_integrity_incidents_total{{kind=\"{kind}\",location=\"{loc}\"}}");
            assert_eq!(get(&after, &s), 0.0, "{s}");
        }
    }

    // Requests by route template, method and status class.
    let show = "route=\"/api/v1/transfers/{id}\",method=\"GET\",status=\"2xx\"";
    assert!(
        count_where(&after, "airlock_http_request_duration_seconds", &[show]) >= 2.0,
        "{text}"
    );
    let puts = "route=\"/api/v1/transfers/{id}/files/{*path}\",method=\"PUT\",status=\"2xx\"";
    assert_eq!(
        count_where(&after, "airlock_http_request_duration_seconds", &[puts]),
        files.len() as f64
    );
    let patches = "route=\"/api/v1/transfers/{id}/tus/{upload}\",method=\"PATCH\",status=\"2xx\"";
    assert_eq!(
        count_where(&after, "airlock_http_request_duration_seconds", &[patches]),
        2.0
    );
    let unmatched = "route=\"unmatched\",method=\"GET\",status=\"4xx\"";
    assert_eq!(
        count_where(
            &after,
            "airlock_http_request_duration_seconds",
            &[unmatched]
        ),
        1.0
    );

    // Transfers by state, as the database has them.
    let by_state: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM transfers GROUP BY state")
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(by_state, vec![("released".to_owned(), 1)]);
    assert_eq!(get(&after, "airlock_transfers{state=\"released\"}"), 1.0);
    for s in [
        "open",
        "sealed",
        "scanning",
        "in_review",
        "approved",
        "blocked",
    ] {
        assert_eq!(
            get(&after, &format!("airlock_transfers{{state=\"{s}\"}}")),
            0.0
        );
    }

    // Nothing names what was sent, by whom, or where.
    let tus_id = url.rsplit('/').next().unwrap();
    let mut secrets: BTreeSet<&str> = files.iter().map(|(p, _)| *p).collect();
    secrets.extend([
        id.as_str(),
        tus_id,
        "secret-name-zz9",
        "other-name-qq7",
        "cohort-alpha",
        "patients",
        up.as_str(),
    ]);
    for s in secrets {
        assert!(!text.contains(s), "/metrics names {s:?}:\n{text}");
    }
    let location = t.show(&p.pm, &id).await["release"]["location"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!text.contains(&location), "{text}");

    // Background work: with the receiver down, the deliveries wait, and the gauge says how
    // many, once the notifier has read the whole log.
    let mut seen = None;
    for _ in 0..100 {
        let db_before = pending_deliveries(&t).await;
        tokio::time::sleep(airlock::metrics::REFRESH).await;
        let (_, m) = scrape(&t).await;
        let db_after = pending_deliveries(&t).await;
        let outbox = get(&m, "airlock_background_waiting{queue=\"webhook_outbox\"}");
        let waiting = get(&m, "airlock_background_waiting{queue=\"webhook_delivery\"}");
        if db_before == db_after && db_after > 0 && outbox == 0.0 {
            seen = Some((waiting, db_after));
            break;
        }
    }
    let (waiting, pending) = seen.expect("the webhook outbox never settled");
    assert_eq!(waiting, pending as f64);
    let (_, m) = scrape(&t).await;
    for q in ["scan", "scan_retry", "release", "expiry"] {
        assert_eq!(
            get(&m, &format!("airlock_background_waiting{{queue=\"{q}\"}}")),
            0.0,
            "{q}"
        );
    }
}

#[tokio::test]
async fn scrapes_within_the_refresh_period_reuse_the_stores_answer() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(1).await;
    let first_at = std::time::Instant::now();
    let (_, first) = scrape(&t).await;
    assert_eq!(get(&first, "airlock_transfers{state=\"open\"}"), 0.0);
    t.open_transfer(&p.pm, "data-ingress", "prov").await;
    // Within REFRESH of the first scrape, the old count is served without a query (so a
    // flood of unauthenticated scrapes costs the database nothing more)...
    let (_, soon) = scrape(&t).await;
    if first_at.elapsed() < airlock::metrics::REFRESH {
        assert_eq!(get(&soon, "airlock_transfers{state=\"open\"}"), 0.0);
    }
    // ...and after it, the new one.
    tokio::time::sleep(airlock::metrics::REFRESH).await;
    let (_, later) = scrape(&t).await;
    assert_eq!(get(&later, "airlock_transfers{state=\"open\"}"), 1.0);
}

#[tokio::test]
async fn background_waiting_counts_each_queue_as_the_database_has_it() {
    // The workers sweep once at start and then not for an hour: the rows set below stay.
    let t = TestApp::spawn_with(|s| {
        s.server.sweep_interval = Duration::from_secs(3600);
        s.integrity.enabled = false;
    })
    .await;
    let p = t.bootstrap(1).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(t.open_transfer(&p.pm, "data-ingress", "prov").await);
    }
    let pool = t.app.store.pool();
    let set = |id: &str, state: &str| {
        sqlx::query("UPDATE transfers SET state = $1 WHERE id = $2")
            .bind(state.to_owned())
            .bind(id.to_owned())
    };
    set(&ids[0], "scanning").execute(pool).await.unwrap();
    set(&ids[1], "approved").execute(pool).await.unwrap();
    set(&ids[2], "scan_error").execute(pool).await.unwrap();
    set(&ids[3], "scan_error").execute(pool).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for (id, retry_at) in [(&ids[2], now - 1_000), (&ids[3], now + 3_600_000)] {
        sqlx::query(
            "INSERT INTO scan_jobs (transfer_id, attempts, retry_at, last_error) \
             VALUES ($1, 1, $2, 'clamd down')",
        )
        .bind(id.to_owned())
        .bind(retry_at)
        .execute(pool)
        .await
        .unwrap();
    }
    // One open transfer whose only token runs out: the expiry sweep (an hour away) has it.
    t.upload_token(&p.pm, &ids[4], serde_json::json!({ "ttl": "1s" }))
        .await;
    tokio::time::sleep(Duration::from_millis(1100).max(airlock::metrics::REFRESH)).await;
    let (text, m) = scrape(&t).await;
    let q = |name: &str| {
        get(
            &m,
            &format!("airlock_background_waiting{{queue=\"{name}\"}}"),
        )
    };
    assert_eq!(q("scan"), 1.0, "{text}");
    // Only the retry that is due now is waiting; the other is backing off.
    assert_eq!(q("scan_retry"), 1.0, "{text}");
    assert_eq!(q("release"), 1.0, "{text}");
    assert_eq!(q("expiry"), 1.0, "{text}");
    // Webhooks are off: nothing is queued for them.
    assert_eq!(q("webhook_delivery"), 0.0, "{text}");
    assert_eq!(q("webhook_outbox"), 0.0, "{text}");
    let s = |name: &str| get(&m, &format!("airlock_transfers{{state=\"{name}\"}}"));
    assert_eq!(
        (s("open"), s("scanning"), s("approved"), s("scan_error")),
        (1.0, 1.0, 1.0, 2.0)
    );
    for id in &ids {
        assert!(!text.contains(id.as_str()), "{text}");
    }
}
