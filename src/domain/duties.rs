//! Separation of duties (paper 11.6; DESIGN.md invariant 7): which roles sit on opposite sides
//! of one control, and who may counter-approve what. Pure rules, no I/O: the workflows ask
//! these before every grant and every counter-approval, so the API and `airlock admin` cannot
//! disagree.
//!
//! The controls that need two people inside a project:
//! - a Project Manager (or a Programme Manager) adds a Researcher to a tier 3+ project, and
//!   the Dataset Provider Representative counter-approves the membership;
//! - a Project Manager (or a Programme Manager) assigns a Referee at tier 3+, and the Dataset
//!   Provider Representative counter-approves the assignment.
//!
//! So the person who can appoint (a Project Manager of the project, or any Programme Manager)
//! never holds the Provider role in that project, and a counter-approval never comes from the
//! person who appointed, nor from its subject.

use super::{Role, UserId};

/// Why granting `new` in a project to someone who already holds `in_project` there (active or
/// pending) and `global` system-wide would put one person on both sides of a control, or
/// `None` if it would not.
pub fn conflict(in_project: &[Role], global: &[Role], new: Role) -> Option<String> {
    const APPOINTS: &str = "adds members and assigns referees";
    const VETOES: &str = "counter-approves them";
    let has = |r: Role| in_project.contains(&r);
    match new {
        Role::Provider if has(Role::ProjectManager) => Some(format!(
            "is a Project Manager of this project, who {APPOINTS}; the Dataset Provider \
             Representative {VETOES}, so one person cannot be both"
        )),
        Role::Provider if global.contains(&Role::ProgrammeManager) => Some(format!(
            "is a Programme Manager, who {APPOINTS} in every project; the Dataset Provider \
             Representative {VETOES}, so one person cannot be both"
        )),
        Role::ProjectManager if has(Role::Provider) => Some(format!(
            "is the Dataset Provider Representative of this project, who {VETOES}; a Project \
             Manager {APPOINTS}, so one person cannot be both"
        )),
        _ => None,
    }
}

/// Who may grant `role` in a project: `Ok` for a Programme Manager (any role) or a Project
/// Manager of the project (any role but Provider); the System Manager grants through `airlock
/// admin`, which does not come here. Nobody grants a role to themselves.
pub fn may_grant(
    granter: UserId,
    granter_is_programme_manager: bool,
    granter_is_project_manager: bool,
    subject: UserId,
    role: Role,
) -> Result<(), String> {
    if granter == subject {
        return Err(
            "nobody grants themselves a role: another Project or Programme Manager must".into(),
        );
    }
    if role == Role::Provider && !granter_is_programme_manager {
        return Err(
            "only a Programme Manager (or the System Manager, with `airlock admin`) makes \
             someone a project's Dataset Provider Representative"
                .into(),
        );
    }
    if !granter_is_programme_manager && !granter_is_project_manager {
        return Err(
            "only a Project Manager of the project (or a Programme Manager) adds its \
                    members"
                .into(),
        );
    }
    Ok(())
}

/// A counter-approval by `approver` of something `appointed_by` did to `subject`: never by the
/// one who appointed, never by the subject.
pub fn may_counter_approve(
    approver: UserId,
    subject: UserId,
    appointed_by: Option<UserId>,
) -> Result<(), String> {
    if approver == subject {
        return Err("nobody counter-approves their own membership or assignment".into());
    }
    if appointed_by == Some(approver) {
        return Err(
            "a counter-approval must come from someone other than the person who added or \
             assigned"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> UserId {
        UserId::new()
    }

    #[test]
    fn appointer_and_veto_never_meet_in_one_person() {
        use Role::*;
        assert!(conflict(&[ProjectManager], &[], Provider).is_some());
        assert!(conflict(&[Provider], &[], ProjectManager).is_some());
        assert!(conflict(&[], &[ProgrammeManager], Provider).is_some());
        assert!(conflict(&[Investigator, Researcher], &[], Provider).is_none());
        assert!(conflict(&[Provider], &[], Investigator).is_none());
        assert!(conflict(&[ProjectManager], &[ProgrammeManager], Investigator).is_none());
    }

    #[test]
    fn only_a_programme_manager_makes_a_provider_and_never_oneself() {
        let (a, b) = (id(), id());
        assert!(may_grant(a, false, true, b, Role::Provider).is_err());
        assert!(may_grant(a, true, false, b, Role::Provider).is_ok());
        assert!(may_grant(a, true, true, a, Role::Investigator).is_err());
        assert!(may_grant(a, false, true, b, Role::Researcher).is_ok());
        assert!(may_grant(a, false, false, b, Role::Researcher).is_err());
    }

    #[test]
    fn counter_approval_needs_a_third_person() {
        let (a, b, c) = (id(), id(), id());
        assert!(may_counter_approve(a, a, Some(b)).is_err());
        assert!(may_counter_approve(a, b, Some(a)).is_err());
        assert!(may_counter_approve(c, b, Some(a)).is_ok());
        assert!(may_counter_approve(c, b, None).is_ok());
    }
}
