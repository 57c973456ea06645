//! The authorization matrix: every API route, called by every kind of caller, against the
//! exact set of callers allowed to use it.
//!
//! Callers: no token; an expired token; forged tokens (wrong key, `alg: none`, a real token
//! whose claims were changed); the transfer's own upload token and another transfer's; and a
//! person in each role, including a member of another project. Someone allowed may still get a
//! 4xx for the state the transfer is in (409, 404); someone not allowed gets exactly 401
//! (credentials not valid), 403 (valid, but not for this), or 404 when they have no role in
//! the project at all (they are not told that it, or its transfer, exists).

mod common;

use airlock::auth::{Claims, TokenKind};
use airlock::domain::Role;
use airlock::workflow::admin;
use base64::Engine;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};

const BAD_CREDENTIALS: [&str; 5] = [
    "none",
    "expired",
    "forged-key",
    "alg-none",
    "changed-claims",
];
const STAFF: [&str; 10] = [
    "pm", "inv", "res", "prov", "provrep", "ref", "college", "progm", "sysm", "outsider",
];
const UPLOADS: [&str; 2] = ["upload", "upload-other"];
/// A recipient's collection token for the released egress request.
const COLLECTS: [&str; 1] = ["collect"];

/// Transfers in the states the routes need, in a workspace at tier 2.
struct Fixture {
    /// Open, with a file and an unfinished tus upload; `upload` is its token.
    open: String,
    tus: String,
    /// In review, with `ref` assigned as its Referee.
    review: String,
    review_root: String,
    /// Released (built only for the routes that need it).
    released: String,
    /// Egress requests by `res`: a draft, one in review (`ref` assigned) and one released
    /// (with `collect`, a collection token for `inv`), each built only for the routes that
    /// need it.
    egress: String,
    /// An open integrity incident of `review` (built only for the routes that need it).
    incident: String,
    /// A webhook delivery id (no delivery has it: the System Manager gets 404, everyone else
    /// is refused before it is looked up).
    delivery: String,
    tokens: HashMap<&'static str, String>,
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

async fn people(t: &TestApp) -> HashMap<&'static str, String> {
    let p = t.bootstrap(2).await;
    let a = &t.app;
    for (name, roles) in [
        ("provrep", &[Role::Provider][..]),
        ("ref", &[Role::Referee]),
        ("college", &[Role::Referee]),
        ("progm", &[Role::ProgrammeManager]),
        ("sysm", &[Role::SystemManager]),
    ] {
        admin::add_user(a, name, roles).await.unwrap();
    }
    admin::add_member(a, "proj", "provrep", Role::Provider)
        .await
        .unwrap();
    // The output volume's files of the egress requests.
    let out = t.data_dir().join("volumes/proj/ws/output");
    write(&out, "tables/t.csv", b"region,n\nnorth,120\nsouth,95\n");
    write(&out, "code/a.py", b"print('counts')\n");
    // Someone to disable, and a role to remove (the routes that cut people off).
    admin::add_user(a, "victim", &[Role::Investigator])
        .await
        .unwrap();
    admin::add_user(a, "extra", &[Role::Investigator])
        .await
        .unwrap();
    admin::add_member(a, "proj", "extra", Role::Investigator)
        .await
        .unwrap();
    let mut tok = HashMap::from([
        ("pm", p.pm),
        ("inv", p.inv),
        ("prov", p.prov),
        ("res", p.researcher),
        ("outsider", p.outsider),
    ]);
    for name in ["provrep", "ref", "college", "progm", "sysm"] {
        tok.insert(name, admin::staff_token(a, name, None).await.unwrap());
    }
    // Credentials that must not work.
    let key = std::fs::read(t.data_dir().join("keys/jwt.key")).unwrap();
    let now = chrono::Utc::now().timestamp();
    let pm_id = a.store.user_by_name("pm").await.unwrap().unwrap().id;
    let claims = |exp: i64| Claims {
        iss: "airlock".into(),
        typ: TokenKind::Staff,
        sub: pm_id.to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now - 100,
        exp,
    };
    let sign = |c: &Claims, secret: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            c,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    tok.insert("expired", sign(&claims(now - 10), &key));
    tok.insert(
        "forged-key",
        sign(&claims(now + 3600), b"not the server's key"),
    );
    tok.insert(
        "alg-none",
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(&serde_json::to_vec(&claims(now + 3600)).unwrap())
        ),
    );
    // The pm's real token, with its subject changed to the Programme Manager.
    let progm_id = a.store.user_by_name("progm").await.unwrap().unwrap().id;
    let real = tok["pm"].clone();
    let parts: Vec<&str> = real.split('.').collect();
    let mut payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    payload["sub"] = json!(progm_id.to_string());
    // A recipient's collection token for a released egress request: a caller of every route.
    let (_, collect) = released_egress(t, &tok).await;
    tok.insert("collect", collect);
    tok.insert(
        "changed-claims",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&payload).unwrap()),
            parts[2]
        ),
    );
    tok
}

async fn fixture(t: &TestApp, people: &HashMap<&'static str, String>, on: On) -> Fixture {
    let released = matches!(on, On::Released);
    let pm = &people["pm"];
    let mut tokens = people.clone();
    let open = t.open_transfer(pm, "data-ingress", "prov").await;
    let up = t.upload_token(pm, &open, Value::Null).await;
    assert_eq!(
        t.put(&up, &open, "a.txt", b"hello".to_vec()).await.0,
        StatusCode::CREATED
    );
    let r = t
        .tus_create(&up, &open)
        .header("Upload-Length", "5")
        .header("Upload-Metadata", tus_meta("b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tus = r.headers()["location"].to_str().unwrap().to_owned();
    let tus = if tus.starts_with("http") {
        tus
    } else {
        format!("{}{tus}", t.url)
    };
    tokens.insert("upload", up);

    let other = t.open_transfer(pm, "data-ingress", "prov").await;
    tokens.insert(
        "upload-other",
        t.upload_token(pm, &other, Value::Null).await,
    );

    let review = sealed(t, pm, &people["inv"], false).await;
    let review_root = t.show(pm, &review).await["root_digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let released = if released {
        let id = sealed(t, pm, &people["inv"], true).await;
        let (s, v) = t
            .post_json(
                &people["ref"],
                &format!("/transfers/{id}/approve"),
                Value::Null,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        t.wait_for_state(pm, &id, "released").await;
        id
    } else {
        String::new()
    };
    let egress = match on {
        On::EgressDraft => egress_request(t, people, false).await,
        On::EgressReview => {
            let id = egress_request(t, people, true).await;
            let (s, v) = t
                .post_json(
                    pm,
                    &format!("/transfers/{id}/referees"),
                    json!({ "user": "ref" }),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            id
        }
        On::EgressReleased => released_egress(t, people).await.0,
        _ => String::new(),
    };
    let incident = if matches!(on, On::Incident) {
        let id = review.parse().unwrap();
        let mut tx = t.app.store.begin().await.unwrap();
        tx.insert_incident(Some(id), "integrity", "f.txt changed at rest")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        t.app.store.incidents(Some(id)).await.unwrap()[0].id.clone()
    } else {
        String::new()
    };
    Fixture {
        open,
        tus,
        review,
        review_root,
        released,
        egress,
        incident,
        delivery: uuid::Uuid::new_v4().to_string(),
        tokens,
    }
}

/// A released egress request by `res`, checked by `inv`, `provrep` and `ref`, and a collection
/// token for its recipient `inv`.
async fn released_egress(t: &TestApp, people: &HashMap<&'static str, String>) -> (String, String) {
    let pm = &people["pm"];
    {
        {
            let id = egress_request(t, people, true).await;
            let (s, v) = t
                .post_json(
                    pm,
                    &format!("/transfers/{id}/referees"),
                    json!({ "user": "ref" }),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            for (who, role) in [
                ("inv", "investigator"),
                ("provrep", "provider"),
                ("ref", "referee"),
            ] {
                let (s, v) = t
                    .post_json(
                        &people[who],
                        &format!("/egress/{id}/votes"),
                        json!({ "path": "tables/t.csv", "as": role, "vote": "approve" }),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK, "{v}");
                let (s, v) = t
                    .post_json(
                        &people[who],
                        &format!("/egress/{id}/review"),
                        json!({ "as": role }),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK, "{v}");
            }
            t.wait_for_state(pm, &id, "released").await;
            let (s, v) = t
                .post_json(
                    pm,
                    &format!("/egress/{id}/collection-tokens"),
                    json!({ "recipient": "inv" }),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            (id, v["token"].as_str().unwrap().to_owned())
        }
    }
}

/// An egress request by `res` of the output volume's files; submitted and scanned if `submit`.
async fn egress_request(
    t: &TestApp,
    people: &HashMap<&'static str, String>,
    submit: bool,
) -> String {
    let (s, v) = t
        .post_json(
            &people["res"],
            "/egress",
            json!({
                "workspace": "proj/ws", "context": "counts by region",
                "files": [{"path": "tables/t.csv", "role": "output"}, {"path": "code/a.py", "role": "code"}],
                "recipients": ["inv"],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    if submit {
        let (s, v) = t
            .post_json(&people["res"], &format!("/egress/{id}/submit"), Value::Null)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        t.wait_for_state(&people["res"], &id, "in_review").await;
    }
    id
}

/// A sealed transfer with `ref` assigned; approved by the Investigator if `approve`.
async fn sealed(t: &TestApp, pm: &str, inv: &str, approve: bool) -> String {
    let id = t.open_transfer(pm, "data-ingress", "prov").await;
    let up = t.upload_token(pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&up, &id, "f.txt", b"data".to_vec()).await.0,
        StatusCode::CREATED
    );
    let (s, _) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.scans_done(&id).await;
    let (s, _) = t
        .post_json(
            pm,
            &format!("/transfers/{id}/referees"),
            json!({ "user": "ref" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    if approve {
        let (s, _) = t
            .post_json(inv, &format!("/transfers/{id}/approve"), Value::Null)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    id
}

/// Which transfer a route acts on, and what it sends.
#[derive(Clone, Copy)]
enum On {
    None,
    Open,
    Review,
    Released,
    Tus,
    EgressDraft,
    EgressReview,
    EgressReleased,
    /// The collection routes (no id: the token names its request).
    Collect,
    /// An incident of the transfer in review.
    Incident,
    /// A webhook delivery.
    Delivery,
}

struct RouteCase {
    method: &'static str,
    /// As in `server::api_routes()`.
    pattern: &'static str,
    on: On,
    body: fn(&Fixture, &str) -> Option<Value>,
    allowed: &'static [&'static str],
    /// The allowed call kills the upload token (or makes the next call meaningless): build a
    /// fresh fixture for each caller.
    fresh: bool,
}

fn no_body(_: &Fixture, _: &str) -> Option<Value> {
    None
}

const PUBLIC: &[&str] = &["*"];
const ANY_STAFF: &[&str] = &[
    "pm", "inv", "res", "prov", "provrep", "ref", "college", "progm", "sysm", "outsider",
];
const PROJECT_READERS: &[&str] = &["pm", "inv", "res", "provrep", "progm", "sysm"];
const DECIDERS: &[&str] = &["inv", "ref"];
/// Who runs a project's operations (`workflow::ops`): its Project Manager, and the Programme
/// and System Managers.
const MANAGERS: &[&str] = &["pm", "progm", "sysm"];
/// The whole audit chain and the webhook deliveries hold every project's events.
const SYSTEM: &[&str] = &["sysm"];
/// The tier 2 policy's output checkers: Investigator, Provider and the assigned Referee.
const CHECKERS: &[&str] = &["inv", "provrep", "ref"];

fn egress_body(create: bool) -> Value {
    let mut v = json!({
        "context": "counts by region",
        "files": [{"path": "tables/t.csv", "role": "output"}, {"path": "code/a.py", "role": "code"}],
        "recipients": ["inv"],
    });
    if create {
        v["workspace"] = json!("proj/ws");
    }
    v
}

/// Cases beyond one per route: the same route called with another body.
const VARIANTS: usize = 1;

fn cases() -> Vec<RouteCase> {
    let c = |method, pattern, on, body, allowed, fresh| RouteCase {
        method,
        pattern,
        on,
        body,
        allowed,
        fresh,
    };
    vec![
        c("get", "/api/v1/me", On::None, no_body, ANY_STAFF, false),
        // A sign-in link for the caller themself, never for anyone else.
        c(
            "post",
            "/api/v1/login-links",
            On::None,
            no_body,
            ANY_STAFF,
            false,
        ),
        c(
            "post",
            "/api/v1/transfers",
            On::None,
            |_, _| {
                Some(json!({ "workspace": "proj/ws", "kind": "data-ingress", "uploader": "prov" }))
            },
            &["pm"],
            false,
        ),
        c(
            "get",
            "/api/v1/transfers",
            On::None,
            no_body,
            PROJECT_READERS,
            false,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}",
            On::Review,
            no_body,
            &[
                "pm", "inv", "res", "prov", "provrep", "ref", "progm", "sysm",
            ],
            false,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/tokens",
            On::Open,
            |_, _| Some(json!({})),
            &["pm"],
            true,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/tokens/revoke",
            On::Open,
            no_body,
            &["pm"],
            true,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}/manifest",
            On::Open,
            no_body,
            &[
                "upload", "pm", "inv", "res", "prov", "provrep", "progm", "sysm",
            ],
            false,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}/files",
            On::Open,
            no_body,
            &[
                "upload", "pm", "inv", "res", "prov", "provrep", "progm", "sysm",
            ],
            false,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}/sha256sums",
            On::Open,
            no_body,
            &[
                "upload", "pm", "inv", "res", "prov", "provrep", "progm", "sysm",
            ],
            false,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}/verdicts",
            On::Review,
            no_body,
            &[
                "pm", "inv", "res", "prov", "provrep", "ref", "progm", "sysm",
            ],
            false,
        ),
        c(
            "put",
            "/api/v1/transfers/{id}/files/{path}",
            On::Open,
            no_body,
            &["upload"],
            false,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}/files/{path}",
            On::Review,
            no_body,
            // Not the Programme Manager: no role in the project, and the tier 2 policy asks
            // none to approve.
            &["pm", "inv", "provrep", "ref"],
            false,
        ),
        c(
            "delete",
            "/api/v1/transfers/{id}/files/{path}",
            On::Open,
            no_body,
            &["upload"],
            true,
        ),
        c(
            "put",
            "/api/v1/transfers/{id}/archive",
            On::Open,
            no_body,
            &["upload"],
            false,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/seal",
            On::Open,
            no_body,
            &["upload", "pm"],
            true,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/confirm",
            On::Review,
            |f, _| Some(json!({ "root_digest": f.review_root })),
            &["prov"],
            false,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/approve",
            On::Review,
            |_, _| Some(json!({ "comment": "ok" })),
            DECIDERS,
            true,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/reject",
            On::Review,
            |_, _| Some(json!({ "comment": "no" })),
            DECIDERS,
            true,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/return",
            On::Review,
            |_, _| Some(json!({ "comment": "fix it" })),
            DECIDERS,
            true,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/cancel",
            On::Open,
            no_body,
            &["pm"],
            true,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/revoke",
            On::Released,
            |_, _| Some(json!({ "reason": "consent withdrawn" })),
            &["pm", "inv", "provrep", "progm"],
            true,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/referees",
            On::Review,
            |_, _| Some(json!({ "user": "college" })),
            &["pm", "progm"],
            false,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/referees/approve",
            On::Review,
            |_, _| Some(json!({ "user": "ref" })),
            &["provrep"],
            false,
        ),
        c(
            "post",
            "/api/v1/users",
            On::None,
            |_, who| Some(json!({ "name": format!("new-{who}"), "roles": [] })),
            &["progm"],
            false,
        ),
        c(
            "post",
            "/api/v1/users/{user}/disable",
            On::None,
            |_, _| Some(json!({ "reason": "left the institution" })),
            &["progm"],
            false,
        ),
        c(
            "post",
            "/api/v1/tokens/revoke",
            On::None,
            |_, _| Some(json!({ "user": "victim" })),
            &["progm"],
            false,
        ),
        c(
            "post",
            "/api/v1/projects",
            On::None,
            |_, who| Some(json!({ "name": format!("p-{who}") })),
            &["progm"],
            false,
        ),
        c(
            "get",
            "/api/v1/projects/{project}/members",
            On::None,
            no_body,
            PROJECT_READERS,
            false,
        ),
        c(
            "post",
            "/api/v1/projects/{project}/members",
            On::None,
            |_, _| Some(json!({ "user": "college", "role": "investigator" })),
            &["pm", "progm"],
            true,
        ),
        c(
            "post",
            "/api/v1/projects/{project}/members/approve",
            On::None,
            |_, _| Some(json!({ "user": "res", "role": "researcher" })),
            &["provrep"],
            false,
        ),
        c(
            "post",
            "/api/v1/projects/{project}/members/remove",
            On::None,
            |_, _| Some(json!({ "user": "extra", "role": "investigator" })),
            &["pm", "progm"],
            false,
        ),
        c(
            "options",
            "/api/v1/transfers/{id}/tus",
            On::Open,
            no_body,
            PUBLIC,
            false,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/tus",
            On::Open,
            no_body,
            &["upload"],
            false,
        ),
        c(
            "head",
            "/api/v1/transfers/{id}/tus/{upload}",
            On::Tus,
            no_body,
            &["upload"],
            false,
        ),
        c(
            "patch",
            "/api/v1/transfers/{id}/tus/{upload}",
            On::Tus,
            no_body,
            &["upload"],
            false,
        ),
        c(
            "delete",
            "/api/v1/transfers/{id}/tus/{upload}",
            On::Tus,
            no_body,
            &["upload"],
            true,
        ),
        c(
            "post",
            "/api/v1/egress",
            On::None,
            |_, _| Some(egress_body(true)),
            &["res"],
            false,
        ),
        c(
            "put",
            "/api/v1/egress/{id}",
            On::EgressDraft,
            |_, _| Some(egress_body(false)),
            &["res"],
            false,
        ),
        c(
            "post",
            "/api/v1/egress/{id}/submit",
            On::EgressDraft,
            no_body,
            &["res"],
            true,
        ),
        c(
            "post",
            "/api/v1/egress/{id}/withdraw",
            On::EgressDraft,
            |_, _| Some(json!({ "reason": "wrong table" })),
            &["res"],
            true,
        ),
        c(
            "post",
            "/api/v1/egress/{id}/votes",
            On::EgressReview,
            |_, _| Some(json!({ "path": "tables/t.csv", "vote": "approve" })),
            CHECKERS,
            false,
        ),
        c(
            "post",
            "/api/v1/egress/{id}/review",
            On::EgressReview,
            |_, _| Some(json!({})),
            CHECKERS,
            false,
        ),
        c(
            "post",
            "/api/v1/egress/{id}/acknowledge",
            On::EgressReview,
            |_, _| Some(json!({ "finding": "F1-1" })),
            CHECKERS,
            false,
        ),
        c(
            "get",
            "/api/v1/egress/{id}/results.json",
            On::EgressReview,
            no_body,
            &["pm", "inv", "res", "provrep", "ref", "progm", "sysm"],
            false,
        ),
        c(
            "post",
            "/api/v1/egress/{id}/collection-tokens",
            On::EgressReleased,
            |_, _| Some(json!({ "recipient": "inv" })),
            &["pm"],
            false,
        ),
        c(
            "post",
            "/api/v1/egress/{id}/collection-tokens/revoke",
            On::EgressReleased,
            no_body,
            &["pm"],
            false,
        ),
        c(
            "get",
            "/api/v1/collect",
            On::Collect,
            no_body,
            &["collect"],
            false,
        ),
        c(
            "get",
            "/api/v1/collect/files/{path}",
            On::Collect,
            no_body,
            &["collect"],
            false,
        ),
        c(
            "get",
            "/api/v1/collect/package.zip",
            On::Collect,
            no_body,
            &["collect"],
            false,
        ),
        c(
            "get",
            "/api/v1/collect/package.tar",
            On::Collect,
            no_body,
            &["collect"],
            false,
        ),
        // Operations (issue 14, point 4).
        c(
            "get",
            "/api/v1/incidents",
            On::None,
            no_body,
            MANAGERS,
            false,
        ),
        c(
            "post",
            "/api/v1/incidents/{id}/resolve",
            On::Incident,
            |_, who| Some(json!({ "comment": format!("handled by {who}") })),
            MANAGERS,
            false,
        ),
        c(
            "post",
            "/api/v1/transfers/{id}/verify",
            On::Review,
            no_body,
            MANAGERS,
            false,
        ),
        c(
            "post",
            "/api/v1/workspaces/{project}/{workspace}/verify",
            On::None,
            no_body,
            MANAGERS,
            false,
        ),
        c(
            "get",
            "/api/v1/audit/verify",
            On::None,
            no_body,
            SYSTEM,
            false,
        ),
        c(
            "get",
            "/api/v1/audit/export",
            On::None,
            no_body,
            SYSTEM,
            false,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}/audit",
            On::Review,
            no_body,
            MANAGERS,
            false,
        ),
        c(
            "get",
            "/api/v1/transfers/{id}/bag",
            On::Released,
            no_body,
            MANAGERS,
            false,
        ),
        c("get", "/api/v1/webhooks", On::None, no_body, SYSTEM, false),
        c(
            "post",
            "/api/v1/webhooks/{id}/retry",
            On::Delivery,
            no_body,
            SYSTEM,
            false,
        ),
        c("get", "/healthz", On::None, no_body, PUBLIC, false),
        c("get", "/readyz", On::None, no_body, PUBLIC, false),
        c("get", "/metrics", On::None, no_body, PUBLIC, false),
        c("get", "/openapi.json", On::None, no_body, PUBLIC, false),
        // Membership cases of issue 10, finding 1 (listed last: the allowed call makes
        // `college` a member). Only a Programme Manager makes someone the provider; the
        // Project Manager, who may add every other role, may not.
        c(
            "post",
            "/api/v1/projects/{project}/members",
            On::None,
            |_, _| Some(json!({ "user": "college", "role": "provider" })),
            &["progm"],
            false,
        ),
    ]
}

/// Whether a staff caller may know that what `case` acts on exists: anyone for system-wide
/// routes; for a project or workspace, its members and the Programme and System Managers; for a
/// transfer, those and its uploader (`prov`) and, once assigned, its referee (`ref`).
fn sees(case: &RouteCase, who: &str) -> bool {
    const PROJECT: &[&str] = &["pm", "inv", "res", "provrep", "progm", "sysm", "extra"];
    // Webhook deliveries are system-wide: nobody is told one does not exist.
    let scoped = case.pattern.contains("{project}")
        || case.pattern == "/api/v1/transfers"
        || case.pattern == "/api/v1/egress"
        || (case.pattern.contains("{id}") && !case.pattern.starts_with("/api/v1/webhooks"));
    // The collection routes refuse every staff token alike.
    if matches!(case.on, On::Collect) {
        return true;
    }
    // Upload-only routes refuse every staff token alike, transfer or no transfer.
    if !scoped || case.allowed == ["upload"] {
        return true;
    }
    // pm's call before theirs made `college` a referee of the transfer.
    if who == "college" && case.pattern.ends_with("/referees") {
        return true;
    }
    // An egress request's requester is `res`, a member; `prov` uploads the ingress transfers.
    let egress = case.pattern.starts_with("/api/v1/egress");
    PROJECT.contains(&who)
        || (case.pattern.contains("{id}")
            && ((who == "prov" && !egress)
                || (who == "ref"
                    && matches!(
                        case.on,
                        On::Review
                            | On::Released
                            | On::EgressReview
                            | On::EgressReleased
                            | On::Incident
                    ))))
}

async fn call(t: &TestApp, f: &Fixture, case: &RouteCase, who: &str, n: usize) -> StatusCode {
    let id = match case.on {
        On::Open | On::Tus => &f.open,
        On::Review => &f.review,
        On::Released => &f.released,
        On::EgressDraft | On::EgressReview | On::EgressReleased => &f.egress,
        On::Incident => &f.incident,
        On::Delivery => &f.delivery,
        On::None | On::Collect => "",
    };
    let url = match case.on {
        On::Tus => f.tus.clone(),
        _ => {
            let path = case
                .pattern
                .replace("{id}", id)
                .replace("{project}", "proj")
                .replace("{workspace}", "ws")
                .replace("{user}", "victim")
                .replace(
                    "{path}",
                    match case.on {
                        On::Review => "f.txt",
                        On::Collect => "tables/t.csv",
                        _ if case.method == "put" => "new/{n}.txt",
                        _ => "a.txt",
                    },
                )
                .replace("{n}", &n.to_string());
            let q = if case.pattern == "/api/v1/transfers" && case.method == "get" {
                "?workspace=proj/ws"
            } else {
                ""
            };
            format!("{}{path}{q}", t.url)
        }
    };
    let method = Method::from_bytes(case.method.to_uppercase().as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, &url);
    if who != "none" {
        req = req.bearer_auth(&f.tokens[who]);
    }
    if case.pattern.contains("/tus") {
        req = req.header("Tus-Resumable", "1.0.0");
        if case.method == "post" {
            req = req
                .header("Upload-Length", "3")
                .header("Upload-Metadata", tus_meta(&format!("tus/{n}.txt")));
        }
        if case.method == "patch" {
            req = req
                .header("Upload-Offset", "0")
                .header("Content-Type", "application/offset+octet-stream")
                .body("hel");
        }
    } else if case.method == "put" && case.pattern.starts_with("/api/v1/transfers") {
        req = req.body("xyz");
    } else if let Some(body) = (case.body)(f, who) {
        req = req.json(&body);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_admits_exactly_its_callers() {
    let t = TestApp::spawn().await;
    let people = people(&t).await;
    let table = cases();

    // The table covers every route the server has, once.
    let routes: BTreeSet<(String, String)> = airlock::server::api_routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    let covered: BTreeSet<(String, String)> = table
        .iter()
        .map(|c| (c.method.to_string(), c.pattern.to_string()))
        .collect();
    assert_eq!(covered, routes, "the matrix and the route table differ");
    // Every route once, and the membership variants of POST members beside it.
    assert_eq!(
        covered.len() + VARIANTS,
        table.len(),
        "a route is listed twice"
    );

    let callers: Vec<&str> = BAD_CREDENTIALS
        .iter()
        .chain(UPLOADS.iter())
        .chain(COLLECTS.iter())
        .chain(STAFF.iter())
        .copied()
        .collect();
    let mut wrong = Vec::new();
    let mut n = 0;
    for case in &table {
        let mut f = fixture(&t, &people, case.on).await;
        for who in &callers {
            if case.fresh {
                f = fixture(&t, &people, case.on).await;
            }
            n += 1;
            let status = call(&t, &f, case, who, n).await;
            let public = case.allowed == PUBLIC;
            let allowed = public || case.allowed.contains(who);
            let ok = if allowed {
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
            } else if BAD_CREDENTIALS.contains(who) {
                status == StatusCode::UNAUTHORIZED
            } else if UPLOADS.contains(who) || COLLECTS.contains(who) || sees(case, who) {
                status == StatusCode::FORBIDDEN
            } else {
                // Someone with no role in the project is told it (or the transfer) does not
                // exist, exactly as for one that does not.
                status == StatusCode::NOT_FOUND
            };
            if !ok {
                wrong.push(format!(
                    "{} {} as {who}: {status} (allowed: {allowed})",
                    case.method, case.pattern
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    t.stop().await;
}
