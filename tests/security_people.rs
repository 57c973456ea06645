//! Security review, issue 10, findings 1, 10, 11 and 12: separation of duties around the
//! Dataset Provider Representative's veto, who reads content and when, what a stranger learns
//! about projects, and the levers that cut a person off. Each test replays the attack the
//! review showed and checks it now fails.

mod common;

use airlock::domain::Role;
use airlock::workflow::admin;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn decide(t: &TestApp, tok: &str, id: &str, role: &str) -> (StatusCode, Value) {
    t.post_json(
        tok,
        &format!("/transfers/{id}/approve"),
        json!({ "as": role, "comment": "ok" }),
    )
    .await
}

/// Uploads one file with a fresh token and seals; waits for the scans.
async fn sealed(t: &TestApp, pm: &str, content: &[u8]) -> String {
    let id = t.open_transfer(pm, "data-ingress", "prov").await;
    let up = t
        .upload_token(pm, &id, json!({ "cidrs": ["127.0.0.1/32"] }))
        .await;
    let (s, v) = t.put(&up, &id, "data/f.bin", content.to_vec()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t
        .post_json(&up, &format!("/transfers/{id}/seal"), Value::Null)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.scans_done(&id).await;
    id
}

async fn token(t: &TestApp, name: &str) -> String {
    admin::staff_token(&t.app, name, None).await.unwrap()
}

/// The review's demonstration at tier 3, step by step: the manager makes himself the provider,
/// approves the referee he assigned and the member he added. Every step is now refused, and
/// the transfer is never released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_manager_cannot_become_the_provider_and_defeat_its_veto() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(3).await;
    for (n, r) in [
        ("ref1", Role::Referee),
        ("progm", Role::ProgrammeManager),
        ("provrep", Role::Provider),
        ("rita", Role::Researcher),
    ] {
        admin::add_user(&t.app, n, &[r]).await.unwrap();
    }
    let progm = token(&t, "progm").await;
    // 1. He adds himself as provider: refused (self-grant, and only a Programme Manager).
    let (s, v) = t
        .post_json(
            &p.pm,
            "/projects/proj/members",
            json!({ "user": "pm", "role": "provider" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // ...or anyone else: only a Programme Manager grants provider.
    let (s, v) = t
        .post_json(
            &p.pm,
            "/projects/proj/members",
            json!({ "user": "provrep", "role": "provider" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("Programme Manager"),
        "{v}"
    );
    // A Programme Manager cannot make the Project Manager the provider either, nor can the
    // System Manager on the server: one person never holds both sides.
    let (s, v) = t
        .post_json(
            &progm,
            "/projects/proj/members",
            json!({ "user": "pm", "role": "provider" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(admin::add_member(&t.app, "proj", "pm", Role::Provider)
        .await
        .is_err());
    // Nor make himself the provider.
    let (s, _) = t
        .post_json(
            &progm,
            "/projects/proj/members",
            json!({ "user": "progm", "role": "provider" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, members) = t.get_json(&p.pm, "/projects/proj/members").await;
    assert!(
        !members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "provider"),
        "no provider was made: {members}"
    );
    // The real provider is made by the Programme Manager.
    let (s, v) = t
        .post_json(
            &progm,
            "/projects/proj/members",
            json!({ "user": "provrep", "role": "provider" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // ...and can then never be made a Project Manager.
    let (s, _) = t
        .post_json(
            &progm,
            "/projects/proj/members",
            json!({ "user": "provrep", "role": "project-manager" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // 2. He assigns a referee and approves the assignment himself: refused.
    let id = sealed(&t, &p.pm, b"tier three data").await;
    let (s, v) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({ "user": "ref1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees/approve"),
            json!({ "user": "ref1" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // 3. He adds a Researcher (pending at tier 3) and counter-approves: refused.
    let (s, v) = t
        .post_json(
            &p.pm,
            "/projects/proj/members",
            json!({ "user": "rita", "role": "researcher" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["state"], "pending");
    let (s, _) = t
        .post_json(
            &p.pm,
            "/projects/proj/members/approve",
            json!({ "user": "rita", "role": "researcher" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The referee, still pending, cannot decide; the transfer waits.
    let (s, _) = decide(&t, &token(&t, "ref1").await, &id, "referee").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = decide(&t, &p.inv, &id, "investigator").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t.show(&p.pm, &id).await["state"], "in_review");
    // The real provider counter-approves, and only then does the release go ahead.
    let provrep = token(&t, "provrep").await;
    let (s, v) = t
        .post_json(
            &provrep,
            &format!("/transfers/{id}/referees/approve"),
            json!({ "user": "ref1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = decide(&t, &token(&t, "ref1").await, &id, "referee").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.wait_for_state(&p.pm, &id, "released").await;
    t.stop().await;
}

/// A combination that predates the rule (written straight into the database) still gives no
/// counter-approval: the check is made again when the veto is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manager_provider_left_from_before_the_rule_cannot_counter_approve() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(3).await;
    admin::add_user(&t.app, "rita", &[Role::Researcher])
        .await
        .unwrap();
    admin::add_user(&t.app, "pm2", &[Role::ProjectManager])
        .await
        .unwrap();
    admin::add_member(&t.app, "proj", "pm2", Role::ProjectManager)
        .await
        .unwrap();
    let pm_id = t.app.store.user_by_name("pm").await.unwrap().unwrap().id;
    let proj = t.app.store.project_by_name("proj").await.unwrap().unwrap();
    sqlx::query(
        "INSERT INTO project_members (project_id, user_id, role, state) VALUES ($1, $2, 'provider', 'active')",
    )
    .bind(proj.id.to_string())
    .bind(pm_id.to_string())
    .execute(t.app.store.pool())
    .await
    .unwrap();
    let (s, _) = t
        .post_json(
            &token(&t, "pm2").await,
            "/projects/proj/members",
            json!({ "user": "rita", "role": "researcher" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = t
        .post_json(
            &p.pm,
            "/projects/proj/members/approve",
            json!({ "user": "rita", "role": "researcher" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("both"), "{v}");
    t.stop().await;
}

/// Every combination of roles one person could hold, in a project of their own at tier 3:
/// system-wide none, Programme Manager or Referee; in the project any subset of Project
/// Manager, Investigator, Researcher and Provider. The combination is accepted exactly when
/// it does not join the power to appoint (Project Manager, Programme Manager) with the veto
/// (Provider). Then, whatever they hold, that one person cannot grant themselves a role,
/// counter-approve a member they added or a referee they assigned, or counter-approve their
/// own membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_person_never_holds_both_sides_of_a_control_whatever_their_roles() {
    let t = TestApp::spawn().await;
    let a = &t.app;
    admin::add_user(a, "pmx", &[Role::ProjectManager])
        .await
        .unwrap();
    admin::add_user(a, "provx", &[Role::Provider])
        .await
        .unwrap();
    admin::add_user(a, "college", &[Role::Referee])
        .await
        .unwrap();
    let project_roles = [
        Role::ProjectManager,
        Role::Investigator,
        Role::Researcher,
        Role::Provider,
    ];
    let globals: [&[Role]; 3] = [&[], &[Role::ProgrammeManager], &[Role::Referee]];
    let mut checked = 0;
    for (gi, global) in globals.iter().enumerate() {
        for mask in 0u32..16 {
            let held: Vec<Role> = (0..4)
                .filter(|b| mask & (1 << b) != 0)
                .map(|b| project_roles[b])
                .collect();
            let n = format!("{gi}-{mask}");
            let (proj, who, newbie) = (format!("p{n}"), format!("x{n}"), format!("n{n}"));
            admin::create_project(a, &proj).await.unwrap();
            admin::create_workspace(a, &proj, "ws", 3, None)
                .await
                .unwrap();
            admin::add_user(a, &who, global).await.unwrap();
            admin::add_user(a, &newbie, &[Role::Researcher])
                .await
                .unwrap();
            admin::add_member(a, &proj, "pmx", Role::ProjectManager)
                .await
                .unwrap();
            let mut granted = Vec::new();
            let mut refused = false;
            for r in &held {
                match admin::add_member(a, &proj, &who, *r).await {
                    Ok(()) => granted.push(*r),
                    Err(_) => refused = true,
                }
            }
            let appoints =
                held.contains(&Role::ProjectManager) || global.contains(&Role::ProgrammeManager);
            let conflicting = held.contains(&Role::Provider) && appoints;
            assert_eq!(
                refused, conflicting,
                "{global:?} + {held:?}: refused {refused}, granted {granted:?}"
            );
            let tok = token(&t, &who).await;
            // Nobody grants themselves a role.
            for r in ["investigator", "provider", "researcher"] {
                let (s, v) = t
                    .post_json(
                        &tok,
                        &format!("/projects/{proj}/members"),
                        json!({ "user": who, "role": r }),
                    )
                    .await;
                assert!(
                    s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
                    "{global:?} + {granted:?} granted themselves {r}: {s} {v}"
                );
            }
            // Whoever adds a pending member cannot counter-approve them.
            let can_add =
                granted.contains(&Role::ProjectManager) || global.contains(&Role::ProgrammeManager);
            let adder = if can_add {
                tok.clone()
            } else {
                token(&t, "pmx").await
            };
            let (s, v) = t
                .post_json(
                    &adder,
                    &format!("/projects/{proj}/members"),
                    json!({ "user": newbie, "role": "researcher" }),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{global:?} + {granted:?}: {v}");
            assert_eq!(v["state"], "pending");
            let (s, v) = t
                .post_json(
                    &tok,
                    &format!("/projects/{proj}/members/approve"),
                    json!({ "user": newbie, "role": "researcher" }),
                )
                .await;
            let may = !can_add && granted.contains(&Role::Provider);
            assert_eq!(
                s.is_success(),
                may,
                "{global:?} + {granted:?} counter-approving a member added by {}: {s} {v}",
                if can_add { "themselves" } else { "pmx" }
            );
            // Nobody counter-approves their own pending membership.
            if !granted.contains(&Role::Researcher) && !appoints {
                let (s, _) = t
                    .post_json(
                        &token(&t, "pmx").await,
                        &format!("/projects/{proj}/members"),
                        json!({ "user": who, "role": "researcher" }),
                    )
                    .await;
                assert_eq!(s, StatusCode::CREATED);
                let (s, v) = t
                    .post_json(
                        &tok,
                        &format!("/projects/{proj}/members/approve"),
                        json!({ "user": who, "role": "researcher" }),
                    )
                    .await;
                assert!(
                    !s.is_success(),
                    "{global:?} + {granted:?} approved their own membership: {v}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 48);

    // Referees: whoever assigns cannot counter-approve the assignment. The only people who
    // may assign (Project and Programme Managers) cannot be providers, so the assigner is
    // refused as not the provider; a provider who did not assign may.
    let p = t.bootstrap(3).await;
    admin::add_member(a, "proj", "provx", Role::Provider)
        .await
        .unwrap();
    let id = sealed(&t, &p.pm, b"x").await;
    let (s, _) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({ "user": "college" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees/approve"),
            json!({ "user": "college" }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = t
        .post_json(
            &token(&t, "provx").await,
            &format!("/transfers/{id}/referees/approve"),
            json!({ "user": "college" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    t.stop().await;
}

/// Finding 10: content is read by the project's reviewers, in review; not while open
/// (unscanned), not blocked, not by a Programme Manager with no role in the project. A blocked
/// file leaves only by the System Manager's audited forensic export.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_is_read_by_reviewers_in_review_and_malware_only_by_forensic_export() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "progm", &[Role::ProgrammeManager])
        .await
        .unwrap();
    let progm = token(&t, "progm").await;
    let get = |tok: String, id: String| {
        let t = &t;
        async move {
            t.http
                .get(t.api(&format!("/transfers/{id}/files/data/f.bin")))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
        }
    };
    // Open: nothing is sealed or scanned yet.
    let open = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &open, Value::Null).await;
    t.put(&up, &open, "data/f.bin", b"unscanned".to_vec()).await;
    let r = get(p.inv.clone(), open.clone()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // In review: the Investigator reads; the Programme Manager with no role does not.
    let review = sealed(&t, &p.pm, b"reviewable bytes").await;
    let r = get(p.inv.clone(), review.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"reviewable bytes");
    let r = get(progm.clone(), review.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Blocked as infected: never served, to anyone.
    let eicar = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*".to_vec();
    let blocked = sealed(&t, &p.pm, &eicar).await;
    assert_eq!(t.show(&p.pm, &blocked).await["state"], "blocked");
    for tok in [&p.inv, &p.pm] {
        let r = get(tok.clone(), blocked.clone()).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }
    let r = get(progm.clone(), blocked.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The System Manager's forensic export, on the server, audited with its reason.
    let out = t.data_dir().join("../forensic.bin");
    let _ = std::fs::remove_file(&out);
    let o = t.cli(
        None,
        &[
            "admin",
            "forensic-export",
            &blocked,
            "data/f.bin",
            "--out",
            out.to_str().unwrap(),
            "--reason",
            "incident 7: sample for the CERT",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), eicar);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::remove_file(&out).unwrap();
    let audit = t.app.store.audit_records().await.unwrap();
    assert!(audit
        .iter()
        .any(|r| r.action == "content.forensic_export" && r.detail.contains("incident 7")));
    t.stop().await;
}

/// Finding 11: a stranger gets one identical 404 whether the project, workspace or transfer
/// exists or not, and no error names a project.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_cannot_tell_a_project_that_exists_from_one_that_does_not() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    let id = sealed(&t, &p.pm, b"x").await;
    let pairs = [
        ("/projects/proj/members", "/projects/nope/members"),
        (
            "/transfers?workspace=proj/ws",
            "/transfers?workspace=nope/ws",
        ),
    ];
    for (real, fake) in pairs {
        let (s1, v1) = t.get_json(&p.outsider, real).await;
        let (s2, v2) = t.get_json(&p.outsider, fake).await;
        assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
        assert_eq!(
            v1["error"].as_str().unwrap(),
            v2["error"].as_str().unwrap().replace("nope", "proj")
        );
    }
    for ws in ["proj/ws", "nope/ws"] {
        let (s, v) = t
            .post_json(
                &p.outsider,
                "/transfers",
                json!({ "workspace": ws, "kind": "data-ingress", "uploader": "prov" }),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{ws}: {v}");
    }
    let fake = uuid::Uuid::new_v4().to_string();
    for path in ["", "/manifest", "/files/data/f.bin"] {
        let (s1, v1) = t
            .get_json(&p.outsider, &format!("/transfers/{id}{path}"))
            .await;
        let (s2, v2) = t
            .get_json(&p.outsider, &format!("/transfers/{fake}{path}"))
            .await;
        assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
        let e1 = v1["error"].as_str().unwrap().replace(&id, "ID");
        assert_eq!(e1, v2["error"].as_str().unwrap().replace(&fake, "ID"));
        assert!(!e1.contains("proj"), "{e1}");
    }
    for (action, body) in [
        ("approve", json!({})),
        ("cancel", Value::Null),
        ("referees", json!({ "user": "outsider" })),
    ] {
        let (s, v) = t
            .post_json(&p.outsider, &format!("/transfers/{id}/{action}"), body)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{action}: {v}");
        assert!(!v.to_string().contains("proj"), "{v}");
    }
    t.stop().await;
}

/// Finding 12: removing a member cuts their access and voids their approvals that have not
/// led to a release; an approved transfer waiting for release goes back to review.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_member_voids_their_approvals_not_yet_released() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "ref1", &[Role::Referee])
        .await
        .unwrap();
    admin::add_user(&t.app, "inv2", &[Role::Investigator])
        .await
        .unwrap();
    admin::add_member(&t.app, "proj", "inv2", Role::Investigator)
        .await
        .unwrap();
    let id = sealed(&t, &p.pm, b"data").await;
    let (s, _) = t
        .post_json(
            &p.pm,
            &format!("/transfers/{id}/referees"),
            json!({ "user": "ref1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = decide(&t, &p.inv, &id, "investigator").await;
    assert_eq!(s, StatusCode::OK);
    // Only a Project Manager (or a Programme Manager) removes.
    let remove = |tok: String, body: Value| {
        let t = &t;
        async move {
            t.post_json(&tok, "/projects/proj/members/remove", body)
                .await
        }
    };
    let (s, _) = remove(p.researcher.clone(), json!({ "user": "inv" })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = remove(
        p.pm.clone(),
        json!({ "user": "inv", "role": "investigator", "reason": "left" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["roles"], json!(["investigator"]));
    assert_eq!(v["voided_on"], json!([id]));
    // Cut off on the next request.
    let (s, _) = t.get_json(&p.inv, &format!("/transfers/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The referee's approval alone does not release: the Investigator's no longer counts.
    let (s, v) = decide(&t, &token(&t, "ref1").await, &id, "referee").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = t.show(&p.pm, &id).await;
    assert_eq!(v["state"], "in_review", "{v}");
    assert!(v["decisions"][0]["void_reason"]
        .as_str()
        .unwrap()
        .contains("removed"));
    let (s, _) = decide(&t, &token(&t, "inv2").await, &id, "investigator").await;
    assert_eq!(s, StatusCode::OK);
    t.wait_for_state(&p.pm, &id, "released").await;
    // A release that happened stands: removing inv2 now voids nothing.
    let (s, v) = remove(p.pm.clone(), json!({ "user": "inv2" })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["voided_on"], json!([]));
    // Removing a role nobody holds is a clear 404.
    let (s, _) = remove(p.pm.clone(), json!({ "user": "inv2" })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    t.stop().await;
}

/// Finding 12: a disabled user's tokens stop at once, staff and upload alike; staff tokens
/// are revoked by user or by id, each only by the right people.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_users_and_revoked_staff_tokens_stop_working_at_once() {
    let t = TestApp::spawn().await;
    let p = t.bootstrap(2).await;
    admin::add_user(&t.app, "progm", &[Role::ProgrammeManager])
        .await
        .unwrap();
    let progm = token(&t, "progm").await;
    let me = |tok: String| {
        let t = &t;
        async move { t.get_json(&tok, "/me").await.0 }
    };
    // Only a Programme Manager disables.
    let (s, _) = t.post_json(&p.pm, "/users/inv/disable", json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(me(p.inv.clone()).await, StatusCode::OK);
    let (s, v) = t
        .post_json(&progm, "/users/inv/disable", json!({ "reason": "left" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(me(p.inv.clone()).await, StatusCode::UNAUTHORIZED);
    assert!(admin::staff_token(&t.app, "inv", None).await.is_err());
    let (s, _) = t.post_json(&progm, "/users/inv/disable", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The provider disabled mid-upload: the upload token stops too.
    let id = t.open_transfer(&p.pm, "data-ingress", "prov").await;
    let up = t.upload_token(&p.pm, &id, Value::Null).await;
    assert_eq!(
        t.put(&up, &id, "a.txt", b"a".to_vec()).await.0,
        StatusCode::CREATED
    );
    admin::disable_user(&t.app, "prov", "contract ended")
        .await
        .unwrap();
    assert_eq!(
        t.put(&up, &id, "b.txt", b"b".to_vec()).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Staff tokens: one's own by user; someone else's only as a Programme Manager.
    let (s, _) = t
        .post_json(&p.researcher, "/tokens/revoke", json!({ "user": "pm" }))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(me(p.pm.clone()).await, StatusCode::OK);
    let pm2 = token(&t, "pm").await;
    let (s, v) = t
        .post_json(&p.pm, "/tokens/revoke", json!({ "user": "pm" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revoked"].as_array().unwrap().len(), 2);
    assert_eq!(me(p.pm.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(pm2).await, StatusCode::UNAUTHORIZED);
    // By id: the researcher's newest token (its id as `/me` shows it), revoked by the
    // Programme Manager; a stranger asking for that id is told it does not exist.
    let res2 = token(&t, "res").await;
    let claims = airlock::auth::peek_claims(&res2).unwrap();
    let (_, who) = t.get_json(&res2, "/me").await;
    assert_eq!(who["token_id"], claims.jti.as_str());
    let (s, _) = t
        .post_json(&p.outsider, "/tokens/revoke", json!({ "id": claims.jti }))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t
        .post_json(&progm, "/tokens/revoke", json!({ "id": claims.jti }))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me(res2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(p.researcher.clone()).await, StatusCode::OK);
    let (s, _) = t
        .post_json(
            &progm,
            "/tokens/revoke",
            json!({ "id": claims.jti, "user": "res" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The CLI does the same.
    let res3 = token(&t, "res").await;
    let o = t.cli(Some(&res3), &["token", "revoke", "--user", "res"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(me(res3).await, StatusCode::UNAUTHORIZED);
    let audit = t.app.store.audit_records().await.unwrap();
    for action in ["user.disabled", "user.tokens_revoked"] {
        assert!(audit.iter().any(|r| r.action == action), "{action}");
    }
    t.stop().await;
}
