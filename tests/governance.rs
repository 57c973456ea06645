//! Governance: each tier's default policy driven through approval, rejection and return with
//! people holding several roles; every separation-of-duties rule tried and refused; membership
//! and counter-approval; revocation after release; policy overrides and their versions.

mod common;

use airlock::domain::Role;
use airlock::workflow::admin;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Everyone, by name, with a staff token each.
struct Crew {
    tok: HashMap<&'static str, String>,
}

impl Crew {
    fn t(&self, who: &str) -> &str {
        &self.tok[who]
    }
}

/// Project `proj` with workspace `proj/ws` at `tier` (and `other/ws`), and its people:
/// - pm: Project Manager; inv, inv2: Investigators; res: Researcher; outsider: Investigator of
///   `other`; prov: a Dataset Provider Representative who uploads (not a member);
/// - provrep: the project's Dataset Provider Representative (member), who counter-approves;
/// - dual: Investigator and Provider member of the project (several roles);
/// - ref1, ref2: the referee college; progm: Programme Manager, also an Investigator of the
///   project (several roles); progm2: a Programme Manager with no project role.
async fn crew(t: &TestApp, tier: i64) -> Crew {
    let p = t.bootstrap(tier).await;
    let a = &t.app;
    for (name, roles) in [
        ("inv2", &[Role::Investigator][..]),
        ("provrep", &[Role::Provider]),
        ("dual", &[Role::Investigator, Role::Provider]),
        ("ref1", &[Role::Referee]),
        ("ref2", &[Role::Referee]),
        ("progm", &[Role::ProgrammeManager]),
        ("progm2", &[Role::ProgrammeManager]),
    ] {
        admin::add_user(a, name, roles).await.unwrap();
    }
    for (user, role) in [
        ("inv2", Role::Investigator),
        ("provrep", Role::Provider),
        ("dual", Role::Investigator),
        ("dual", Role::Provider),
        ("progm", Role::Investigator),
    ] {
        admin::add_member(a, "proj", user, role).await.unwrap();
    }
    let mut tok: HashMap<&'static str, String> = HashMap::from([
        ("pm", p.pm),
        ("inv", p.inv),
        ("prov", p.prov),
        ("res", p.researcher),
        ("outsider", p.outsider),
    ]);
    for name in ["inv2", "provrep", "dual", "ref1", "ref2", "progm", "progm2"] {
        tok.insert(name, admin::staff_token(a, name, None).await.unwrap());
    }
    Crew { tok }
}

/// Opens a transfer, uploads one file and seals it; returns its id.
async fn sealed(t: &TestApp, c: &Crew, kind: &str, uploader: &str, content: &[u8]) -> String {
    let id = t.open_transfer(c.t("pm"), kind, uploader).await;
    let up = t
        .upload_token(c.t("pm"), &id, json!({ "cidrs": ["127.0.0.1/32"] }))
        .await;
    upload_and_seal(t, &up, &id, "data/file.bin", content).await;
    id
}

async fn upload_and_seal(t: &TestApp, up: &str, id: &str, path: &str, content: &[u8]) {
    let (s, v) = t.put(up, id, path, content.to_vec()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t
        .post_json(up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.scans_done(id).await;
}

async fn decide(
    t: &TestApp,
    token: &str,
    id: &str,
    verb: &str,
    role: &str,
    comment: &str,
) -> (StatusCode, Value) {
    t.post_json(
        token,
        &format!("/transfers/{id}/{verb}"),
        json!({ "as": role, "comment": comment }),
    )
    .await
}

async fn assign(t: &TestApp, c: &Crew, id: &str, referee: &str) {
    let (s, v) = t
        .post_json(
            c.t("pm"),
            &format!("/transfers/{id}/referees"),
            json!({ "user": referee }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    if v.as_array()
        .unwrap()
        .iter()
        .any(|r| r["user"] == referee && r["state"] == "pending")
    {
        let (s, v) = t
            .post_json(
                c.t("provrep"),
                &format!("/transfers/{id}/referees/approve"),
                json!({ "user": referee }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

/// The roles still awaited, sorted.
fn awaited(v: &Value) -> Vec<String> {
    let mut r: Vec<String> = v["awaiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap().to_owned())
        .collect();
    r.sort();
    r
}

/// A tier, the roles awaited after seal, and who approves in which role, in order.
type Case = (
    i64,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tier_default_policy_approves_data_ingress_with_the_roles_it_names() {
    // (tier, roles awaited after seal, who approves in which role, in order)
    let cases: [Case; 5] = [
        (0, &["investigator"], &[("inv", "investigator")]),
        (1, &["investigator"], &[("dual", "investigator")]),
        (
            2,
            &["investigator", "referee"],
            &[("ref1", "referee"), ("inv", "investigator")],
        ),
        (
            3,
            &["investigator", "referee"],
            &[("inv", "investigator"), ("ref1", "referee")],
        ),
        (
            4,
            &["investigator", "programme-manager", "referee"],
            &[
                ("progm", "investigator"),
                ("ref1", "referee"),
                ("progm2", "programme-manager"),
            ],
        ),
    ];
    for (tier, roles, steps) in cases {
        let t = TestApp::spawn().await;
        let c = crew(&t, tier).await;
        let id = sealed(&t, &c, "data-ingress", "prov", b"cohort").await;
        if roles.contains(&"referee") {
            assign(&t, &c, &id, "ref1").await;
        }
        let v = t.show(c.t("pm"), &id).await;
        assert_eq!(v["state"], "in_review", "tier {tier}: {v}");
        assert_eq!(awaited(&v), roles.to_vec(), "tier {tier}");
        let version = v["policy_version"].as_str().unwrap().to_owned();
        assert_eq!(v["policy"]["version"], version.as_str());
        // The version is the SHA-256 of the tier's policy file.
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("policies/tier{tier}.toml"));
        assert_eq!(version, digest_with("sha256sum", &file), "tier {tier}");
        for (i, (who, role)) in steps.iter().enumerate() {
            let (s, v) = decide(&t, c.t(who), &id, "approve", role, "ok").await;
            assert_eq!(s, StatusCode::OK, "tier {tier} {who} as {role}: {v}");
            if i + 1 < steps.len() {
                assert_eq!(v["state"], "in_review", "tier {tier}: {v}");
                assert!(
                    !awaited(&v).contains(&role.to_string()),
                    "tier {tier}: {role} still awaited: {v}"
                );
            }
        }
        let v = t.wait_for_state(c.t("pm"), &id, "released").await;
        let ds = v["decisions"].as_array().unwrap();
        assert_eq!(ds.len(), steps.len());
        for (d, (who, role)) in ds.iter().zip(steps.iter()) {
            assert_eq!(d["user"], *who);
            assert_eq!(d["role"], *role);
            assert_eq!(d["decision"], "approve");
            assert_eq!(d["root_digest"], v["root_digest"]);
            assert_eq!(d["policy_version"], version.as_str());
            assert_eq!(d["counts"], true);
            assert!(d["at"].as_str().is_some());
        }
        assert_eq!(v["awaiting"], json!([]));
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn software_ingress_follows_its_own_rules_per_tier() {
    // Tier 1: clean scans are enough.
    let t = TestApp::spawn().await;
    let c = crew(&t, 1).await;
    let id = sealed(&t, &c, "software-ingress", "res", b"print('hi')").await;
    let v = t.wait_for_state(c.t("pm"), &id, "released").await;
    assert_eq!(v["decisions"], json!([]));
    assert!(
        v["release"]["location"]
            .as_str()
            .unwrap()
            .contains("/software/"),
        "{v}"
    );
    t.stop().await;

    // Tier 2: an Investigator; the Researcher who asked cannot approve it, even as a member.
    let t = TestApp::spawn().await;
    let c = crew(&t, 2).await;
    let id = sealed(&t, &c, "software-ingress", "res", b"print('hi')").await;
    let v = t.show(c.t("pm"), &id).await;
    assert_eq!(awaited(&v), vec!["investigator"]);
    assert_eq!(
        v["awaiting"][0]["from"],
        json!(["dual", "inv", "inv2", "progm"])
    );
    let (s, _) = decide(&t, c.t("res"), &id, "approve", "researcher", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = decide(&t, c.t("inv2"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(c.t("pm"), &id, "released").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejection_is_final_and_needs_a_reason() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 2).await;
    let id = sealed(&t, &c, "data-ingress", "prov", b"x").await;
    let (s, v) = decide(&t, c.t("inv"), &id, "reject", "investigator", " ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("comment"), "{v}");
    let (s, v) = decide(
        &t,
        c.t("inv"),
        &id,
        "reject",
        "investigator",
        "PII in col 3",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "rejected");
    assert!(v["state_reason"]
        .as_str()
        .unwrap()
        .contains("rejected by inv (investigator): PII in col 3"));
    assert_eq!(v["decisions"][0]["decision"], "reject");
    for verb in ["approve", "reject", "return"] {
        let (s, v) = decide(&t, c.t("inv2"), &id, verb, "investigator", "again").await;
        assert_eq!(s, StatusCode::CONFLICT, "{verb}: {v}");
    }
    // No new token revives it.
    let (s, _) = t
        .post_json(c.t("pm"), &format!("/transfers/{id}/tokens"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn return_voids_every_approval_and_a_new_upload_needs_them_all_again() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 3).await;
    let id = sealed(&t, &c, "data-ingress", "prov", b"first").await;
    assign(&t, &c, &id, "ref1").await;
    let old_root = t.show(c.t("pm"), &id).await["root_digest"].clone();
    let (s, v) = decide(&t, c.t("inv"), &id, "approve", "investigator", "fine").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = decide(&t, c.t("ref1"), &id, "return", "referee", "drop column 3").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "returned");
    assert!(v["state_reason"]
        .as_str()
        .unwrap()
        .contains("drop column 3"));
    let inv = &v["decisions"][0];
    assert_eq!(inv["counts"], false);
    assert!(
        inv["void_reason"].as_str().unwrap().contains("returned"),
        "{v}"
    );
    // Nobody approves a returned transfer.
    let (s, _) = decide(&t, c.t("inv2"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::CONFLICT);

    // A new token reopens it; the provider replaces the file and seals again.
    let up = t
        .upload_token(c.t("pm"), &id, json!({ "cidrs": ["127.0.0.1/32"] }))
        .await;
    assert_eq!(t.show(c.t("pm"), &id).await["state"], "open");
    let (s, _) = t
        .http
        .delete(t.api(&format!("/transfers/{id}/files/data/file.bin")))
        .bearer_auth(&up)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(s, StatusCode::NO_CONTENT);
    upload_and_seal(&t, &up, &id, "data/file.bin", b"second").await;
    let v = t.show(c.t("pm"), &id).await;
    assert_eq!(v["state"], "in_review");
    assert_ne!(v["root_digest"], old_root);
    assert_eq!(awaited(&v), vec!["investigator", "referee"], "{v}");

    // A decision against the old manifest is refused with 409.
    let (s, v) = t
        .post_json(
            c.t("inv"),
            &format!("/transfers/{id}/approve"),
            json!({ "as": "investigator", "root_digest": old_root }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("manifest changed"));
    // ...and so is one against another policy version.
    let (s, v) = t
        .post_json(
            c.t("inv"),
            &format!("/transfers/{id}/approve"),
            json!({ "as": "investigator", "policy_version": "0".repeat(64) }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("policy changed"));

    let (s, v) = decide(&t, c.t("inv"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = decide(&t, c.t("ref1"), &id, "approve", "referee", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.wait_for_state(c.t("pm"), &id, "released").await;
    let counted: Vec<&Value> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["counts"] == true)
        .collect();
    assert_eq!(counted.len(), 2);
    let released = std::path::Path::new(v["release"]["location"].as_str().unwrap());
    assert_eq!(
        std::fs::read(released.join("data/file.bin")).unwrap(),
        b"second"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn separation_of_duties_rules_are_each_refused() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 4).await;

    // The uploader never decides, even holding the role asked for (dual is an Investigator).
    let id = sealed(&t, &c, "data-ingress", "dual", b"dual's data").await;
    let (s, v) = decide(&t, c.t("dual"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("requested"), "{v}");

    let id = sealed(&t, &c, "data-ingress", "prov", b"data").await;
    // Nobody decides in a role they do not hold for the project.
    for (who, role) in [
        ("res", "investigator"),      // a Researcher claiming to be an Investigator
        ("outsider", "investigator"), // an Investigator of another project
        ("inv", "programme-manager"),
        ("ref2", "referee"), // in the college, but not assigned to this transfer
    ] {
        let (s, v) = decide(&t, c.t(who), &id, "approve", role, "").await;
        // A stranger to the project (or a referee not assigned) is not told the transfer
        // exists.
        let expect = if matches!(who, "outsider" | "ref2") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(s, expect, "{who} as {role}: {v}");
    }
    // A role the policy does not ask for does not decide.
    let (s, v) = decide(&t, c.t("pm"), &id, "approve", "project-manager", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("does not ask"), "{v}");
    // The token issuer could have written into it: pm, even made an Investigator, is barred.
    admin::add_member(&t.app, "proj", "pm", Role::Investigator)
        .await
        .unwrap();
    let (s, v) = decide(&t, c.t("pm"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("token"), "{v}");

    // A Referee is never a member of the project: a member cannot be assigned...
    let (s, v) = t
        .post_json(
            c.t("pm"),
            &format!("/transfers/{id}/referees"),
            json!({ "user": "inv" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // ...only someone in the college (or a Programme Manager)...
    let (s, v) = t
        .post_json(
            c.t("pm"),
            &format!("/transfers/{id}/referees"),
            json!({ "user": "outsider" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("college"), "{v}");
    // ...only a Project Manager assigns...
    let (s, _) = t
        .post_json(
            c.t("inv"),
            &format!("/transfers/{id}/referees"),
            json!({ "user": "ref1" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // ...and at tier 3+ an assigned Referee waits for the provider's counter-approval.
    let (s, v) = t
        .post_json(
            c.t("pm"),
            &format!("/transfers/{id}/referees"),
            json!({ "user": "ref1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v[0]["state"], "pending");
    let (s, v) = decide(&t, c.t("ref1"), &id, "approve", "referee", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("counter-approval"),
        "{v}"
    );
    for who in ["inv", "pm", "prov"] {
        let (s, v) = t
            .post_json(
                c.t(who),
                &format!("/transfers/{id}/referees/approve"),
                json!({ "user": "ref1" }),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who} counter-approved: {v}");
    }
    let (s, v) = t
        .post_json(
            c.t("provrep"),
            &format!("/transfers/{id}/referees/approve"),
            json!({ "user": "ref1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v[0]["approved_by"], "provrep");
    // Once a Referee, never a member while the transfer is under way.
    let (s, v) = t
        .post_json(
            c.t("pm"),
            "/projects/proj/members",
            json!({ "user": "ref1", "role": "researcher" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // One person counts once per transfer, whatever roles they hold: progm is an
    // Investigator of the project and a Programme Manager.
    let (s, v) = decide(&t, c.t("progm"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = decide(&t, c.t("progm"), &id, "approve", "programme-manager", "").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("counts once"), "{v}");
    // A role whose quota is met takes no more approvals.
    let (s, v) = decide(&t, c.t("inv"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Without `as`, someone holding one asked role decides in it; none asked: 403.
    let (s, v) = t
        .post_json(c.t("res"), &format!("/transfers/{id}/approve"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = decide(&t, c.t("ref1"), &id, "approve", "referee", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "in_review");
    assert_eq!(awaited(&v), vec!["programme-manager"]);
    assert_eq!(v["awaiting"][0]["from"], json!(["progm2"]), "{v}");
    let (s, v) = t
        .post_json(
            c.t("progm2"),
            &format!("/transfers/{id}/approve"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["decisions"][2]["role"], "programme-manager");
    t.wait_for_state(c.t("pm"), &id, "released").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_and_members_are_added_by_the_right_people() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 3).await;
    // Only a Programme Manager adds users to the system.
    for who in ["pm", "inv", "ref1"] {
        let (s, _) = t
            .post_json(c.t(who), "/users", json!({ "name": "newbie", "roles": [] }))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}");
    }
    let (s, v) = t
        .post_json(
            c.t("progm2"),
            "/users",
            json!({ "name": "newbie", "roles": ["referee"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = t
        .post_json(
            c.t("progm2"),
            "/users",
            json!({ "name": "newbie", "roles": [] }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = t
        .post_json(
            c.t("progm2"),
            "/users",
            json!({ "name": "root2", "roles": ["system-manager"] }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    admin::add_user(&t.app, "rita", &[Role::Researcher])
        .await
        .unwrap();
    let rita = admin::staff_token(&t.app, "rita", None).await.unwrap();

    // Project Managers add existing users to their own project.
    let add = |who: &'static str, user: &'static str, role: &'static str| {
        let tok = c.t(who).to_owned();
        let t = &t;
        async move {
            t.post_json(
                &tok,
                "/projects/proj/members",
                json!({ "user": user, "role": role }),
            )
            .await
        }
    };
    assert_eq!(
        add("inv", "rita", "researcher").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        add("outsider", "rita", "researcher").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        add("pm", "nobody", "researcher").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = add("pm", "rita", "referee").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        add("pm", "rita", "programme-manager").await.0,
        StatusCode::BAD_REQUEST
    );
    // Tier 3+: a Researcher waits for the Dataset Provider Representative.
    let (s, v) = add("pm", "rita", "researcher").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "pending");
    assert_eq!(
        add("pm", "rita", "researcher").await.0,
        StatusCode::CONFLICT
    );
    // Pending gives no rights.
    let (s, _) = t.get_json(&rita, "/transfers?workspace=proj/ws").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let approve = |who: &'static str| {
        let tok = c.t(who).to_owned();
        let t = &t;
        async move {
            t.post_json(
                &tok,
                "/projects/proj/members/approve",
                json!({ "user": "rita", "role": "researcher" }),
            )
            .await
        }
    };
    for who in ["pm", "inv", "progm2"] {
        assert_eq!(approve(who).await.0, StatusCode::FORBIDDEN, "{who}");
    }
    // prov holds no role in the project: it is not even told the project exists.
    assert_eq!(approve("prov").await.0, StatusCode::NOT_FOUND);
    let (s, v) = approve("provrep").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(approve("provrep").await.0, StatusCode::NOT_FOUND);
    let (s, _) = t.get_json(&rita, "/transfers?workspace=proj/ws").await;
    assert_eq!(s, StatusCode::OK);
    // An Investigator needs no counter-approval.
    let (s, v) = add("pm", "rita", "investigator").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["state"], "active");
    let (s, v) = t.get_json(c.t("inv"), "/projects/proj/members").await;
    assert_eq!(s, StatusCode::OK);
    let rita_rows: Vec<&Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["user"] == "rita")
        .collect();
    assert_eq!(rita_rows.len(), 2);
    assert!(rita_rows
        .iter()
        .any(|m| m["role"] == "researcher" && m["approved_by"] == "provrep"));
    let (s, _) = t.get_json(c.t("outsider"), "/projects/proj/members").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Tier 2 and below: a Researcher is active at once.
    let t2 = TestApp::spawn().await;
    let c2 = crew(&t2, 2).await;
    admin::add_user(&t2.app, "rita", &[]).await.unwrap();
    let (s, v) = t2
        .post_json(
            c2.t("pm"),
            "/projects/proj/members",
            json!({ "user": "rita", "role": "researcher" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "active");
    t2.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_withdraws_a_release_and_says_who_and_why() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 1).await;
    let id = sealed(&t, &c, "data-ingress", "prov", b"to be withdrawn").await;
    let (s, v) = decide(&t, c.t("inv"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.wait_for_state(c.t("pm"), &id, "released").await;
    let loc = std::path::PathBuf::from(v["release"]["location"].as_str().unwrap());
    assert!(loc.join("data/file.bin").exists());

    let revoke = |who: &'static str, reason: &'static str| {
        let tok = c.t(who).to_owned();
        let t = &t;
        let id = id.clone();
        async move {
            t.post_json(
                &tok,
                &format!("/transfers/{id}/revoke"),
                json!({ "reason": reason }),
            )
            .await
        }
    };
    for who in ["res", "outsider", "ref1", "prov"] {
        let expect = if matches!(who, "outsider" | "ref1") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(revoke(who, "because").await.0, expect, "{who}");
    }
    assert_eq!(revoke("inv", "  ").await.0, StatusCode::BAD_REQUEST);
    assert!(
        loc.join("data/file.bin").exists(),
        "refusals change nothing"
    );

    let out = t.cli(
        Some(c.t("provrep")),
        &["transfer", "revoke", &id, "--reason", "consent withdrawn"],
    );
    assert!(out.status.success(), "{out:?}");
    let v = t.show(c.t("pm"), &id).await;
    assert_eq!(v["state"], "revoked");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("revoked by provrep (provider): consent withdrawn"),
        "{v}"
    );
    assert!(!loc.exists(), "the release is still on the volume");
    assert!(
        !loc.parent().unwrap().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(&id)),
        "a copy of the release is left in the workspace's volume"
    );
    assert_eq!(revoke("inv", "again").await.0, StatusCode::CONFLICT);

    let dir = t.stop().await;
    let out = airlock_at(dir.path())
        .args(["audit", "show", "--transfer", &id])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(history.contains("transfer.revoked"), "{history}");
    assert!(history.contains("consent withdrawn"), "{history}");
    // The audit detail (and so the webhook body) names the path inside the released volume,
    // never the server's own path (issue 10, finding 13).
    let data = dir.path().canonicalize().unwrap();
    assert!(
        !history.contains(data.to_str().unwrap())
            && !history.contains(dir.path().to_str().unwrap()),
        "{history}"
    );
    let out = airlock_at(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Writes a tier 2 policy asking two Investigators for data ingress.
fn two_investigators(path: &std::path::Path, comment: &str) {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tier2.toml"),
    )
    .unwrap()
    .replace(
        "[approvals.data-ingress]\ninvestigator = 1\nreferee = 1",
        "[approvals.data-ingress]\ninvestigator = 2",
    );
    assert!(text.contains("investigator = 2"));
    std::fs::write(path, format!("# {comment}\n{text}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_policy_override_rules_and_a_changed_policy_voids_approvals() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 2).await;
    let pol_dir = tempfile::tempdir().unwrap();
    let file = pol_dir.path().join("strict.toml");
    two_investigators(&file, "v1");
    admin::create_workspace(&t.app, "proj", "strict", 2, Some(&file))
        .await
        .unwrap();
    let (s, v) = t
        .post_json(
            c.t("pm"),
            "/transfers",
            json!({ "workspace": "proj/strict", "kind": "data-ingress", "uploader": "prov" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let up = t.upload_token(c.t("pm"), &id, Value::Null).await;
    upload_and_seal(&t, &up, &id, "f", b"strict data").await;
    let v = t.show(c.t("pm"), &id).await;
    assert_eq!(v["policy_version"], digest_with("sha256sum", &file));
    assert_eq!(
        v["awaiting"],
        json!([{ "role": "investigator", "needed": 2,
        "from": ["dual", "inv", "inv2", "progm"] }])
    );
    let (s, v) = decide(&t, c.t("inv"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["awaiting"][0]["needed"], 1);

    // The operator edits the policy and restarts: the approval given under v1 no longer counts.
    let dir = t.stop().await;
    two_investigators(&file, "v2");
    let t = TestApp::spawn_in(dir).await;
    let v = t.show(c.t("pm"), &id).await;
    assert_eq!(v["decisions"][0]["counts"], false);
    assert_eq!(v["decisions"][0]["void_reason"], "the policy changed since");
    assert_eq!(v["awaiting"][0]["needed"], 2, "{v}");
    assert_eq!(v["policy"]["version"], digest_with("sha256sum", &file));
    let (s, v) = decide(&t, c.t("inv"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = decide(&t, c.t("inv2"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(c.t("pm"), &id, "released").await;

    // A broken override stops the service at start, naming the file and the key.
    let dir = t.stop().await;
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("investigator = 2", "investigator = 0"),
    )
    .unwrap();
    let out = airlock_at(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("strict.toml"), "{err}");
    assert!(err.contains("approvals.data-ingress.investigator"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_policy_folder_stops_the_service_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for i in 0..5 {
        std::fs::copy(
            src.join(format!("tier{i}.toml")),
            pol.join(format!("tier{i}.toml")),
        )
        .unwrap();
    }
    let serve = |extra: Option<(&str, &str)>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"));
        c.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("AIRLOCK__POLICY__DIR", &pol)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some((k, v)) = extra {
            c.env(k, v);
        }
        c
    };
    for (needle, replacement, key) in [
        (
            "require_cidr = false",
            "require_cidr = false\nlifetime = \"1h\"",
            "lifetime",
        ),
        ("referee = 1", "referee = 1\nauditor = 1", "auditor"),
        (
            "reverify_interval = \"24h\"",
            "reverify_interval = \"0s\"",
            "integrity.reverify_interval",
        ),
        (
            "investigator = 1\nreferee = 1",
            "investigator = 1\nreferee = 1\nsystem-manager = 1",
            "approvals.data-ingress.system-manager",
        ),
    ] {
        let good = std::fs::read_to_string(src.join("tier2.toml")).unwrap();
        assert!(good.contains(needle), "{needle}");
        std::fs::write(
            pol.join("tier2.toml"),
            good.replacen(needle, replacement, 1),
        )
        .unwrap();
        let out = serve(None).output().unwrap();
        assert!(!out.status.success(), "started with {replacement}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("tier2.toml"), "{err}");
        assert!(err.contains(key), "{key}: {err}");
    }
    // The untouched folder starts.
    std::fs::copy(src.join("tier2.toml"), pol.join("tier2.toml")).unwrap();
    let mut child = serve(None).spawn().unwrap();
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_programme_manager_stands_in_as_referee_when_the_college_has_nobody() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 2).await;
    let id = sealed(&t, &c, "data-ingress", "prov", b"x").await;
    // progm is a member (Investigator) of the project, so cannot referee it; progm2 can.
    let (s, v) = t
        .post_json(
            c.t("pm"),
            &format!("/transfers/{id}/referees"),
            json!({ "user": "progm" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assign(&t, &c, &id, "progm2").await;
    let (s, v) = decide(&t, c.t("progm2"), &id, "approve", "referee", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["decisions"][0]["role"], "referee");
    assert_eq!(awaited(&v), vec!["investigator"]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_limits_file_size_file_count_and_transfer_size() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.toml");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tier2.toml"),
    )
    .unwrap()
    .replace("max_file_size = \"1 TiB\"", "max_file_size = \"10 B\"")
    .replace("max_files = 1000000", "max_files = 3")
    .replace(
        "max_transfer_size = \"10 TiB\"",
        "max_transfer_size = \"25 B\"",
    );
    std::fs::write(&file, text).unwrap();
    admin::create_workspace(&t.app, "proj", "small", 2, Some(&file))
        .await
        .unwrap();
    let (_, v) = t
        .post_json(
            c.t("pm"),
            "/transfers",
            json!({ "workspace": "proj/small", "kind": "data-ingress", "uploader": "prov" }),
        )
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    let up = t.upload_token(c.t("pm"), &id, Value::Null).await;
    let (s, v) = t.put(&up, &id, "big", vec![0; 11]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    for (name, n) in [("a", 10), ("b", 10)] {
        let (s, v) = t.put(&up, &id, name, vec![1; n]).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // 20 bytes in; 10 more would pass the transfer's 25.
    let (s, v) = t.put(&up, &id, "c", vec![2; 10]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("25"), "{v}");
    let (s, v) = t.put(&up, &id, "c", vec![2; 5]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t.put(&up, &id, "d", vec![3; 1]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("3 files"), "{v}");
    let v = t.show(c.t("pm"), &id).await;
    assert_eq!(v["file_count"], 3);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_released_without_the_approvals_the_policy_asks() {
    let t = TestApp::spawn().await;
    let c = crew(&t, 2).await;
    let id = sealed(&t, &c, "data-ingress", "prov", b"guarded").await;
    let (s, v) = decide(&t, c.t("inv"), &id, "approve", "investigator", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Someone with database access marks it approved without the Referee's approval.
    sqlx::query("UPDATE transfers SET state = 'approved' WHERE id = $1")
        .bind(&id)
        .execute(t.app.store.pool())
        .await
        .unwrap();
    t.app.jobs.notify_one();
    let v = t.wait_for_state(c.t("pm"), &id, "in_review").await;
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap()
            .contains("no longer satisfy the policy"),
        "{v}"
    );
    assert_eq!(v["release"], Value::Null, "{v}");
    assert_eq!(awaited(&v), vec!["referee"]);
    assert!(!t.data_dir().join("volumes/proj/ws/data").join(&id).exists());
    t.stop().await;
}
