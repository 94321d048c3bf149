//! Which actions a page offers: those the API would allow the visitor, read
//! from who the API takes them for (`GET /api/v1/whoami`) with the API's own
//! rule (`envstore_core::Grants::role_in`). The API still decides; a page
//! only leaves out the buttons and forms that would be refused.

use envstore_api_types::WhoAmI;
use envstore_core::{Grants, Role};

use crate::session::Session;

/// The grants whoami reports, as the API holds them.
fn grants(who: &WhoAmI) -> Grants {
    Grants {
        server_admin: who.server_admin,
        bindings: who.bindings.clone(),
        scopes: who.scopes.clone(),
    }
}

/// The visitor's role in `namespace` through their bindings (a public
/// namespace's read access gives no action, so it is left out).
pub(crate) fn role_in(session: Option<&Session>, namespace: &str) -> Option<Role> {
    let who = session?.who()?;
    grants(who).role_in(namespace, false)
}

/// Whether the visitor holds at least `needed` in `namespace`.
pub(crate) fn may(session: Option<&Session>, namespace: &str, needed: Role) -> bool {
    role_in(session, namespace).is_some_and(|role| role >= needed)
}

/// Whether the visitor holds server-wide admin power.
pub(crate) fn server_admin(session: Option<&Session>) -> bool {
    session
        .and_then(Session::who)
        .is_some_and(|who| grants(who).is_server_admin())
}

#[cfg(test)]
mod tests {
    use envstore_core::Grant;

    use super::*;

    fn who(bindings: &[(&str, Role)], scopes: Option<&[(&str, Role)]>, admin: bool) -> WhoAmI {
        let grants = |pairs: &[(&str, Role)]| -> Vec<Grant> {
            pairs
                .iter()
                .map(|(pattern, role)| Grant {
                    namespace: pattern.parse().expect("a pattern"),
                    role: *role,
                })
                .collect()
        };
        WhoAmI {
            subject: Some("alice".to_owned()),
            server_admin: admin,
            bindings: grants(bindings),
            scopes: scopes.map(grants),
            token_id: None,
            expires_at: None,
        }
    }

    fn session(who: WhoAmI) -> Session {
        Session::new("token").identified(who)
    }

    #[test]
    fn actions_follow_the_roles_the_api_would_grant() {
        let developer = session(who(&[("team-*", Role::Developer)], None, false));
        assert!(may(Some(&developer), "team-ml", Role::Developer));
        assert!(!may(Some(&developer), "team-ml", Role::Admin));
        assert!(!may(Some(&developer), "other", Role::Viewer));
        assert!(!server_admin(Some(&developer)));

        let viewer = session(who(&[("team", Role::Viewer)], None, false));
        assert_eq!(role_in(Some(&viewer), "team"), Some(Role::Viewer));
        assert!(!may(Some(&viewer), "team", Role::Developer));

        let scoped = session(who(
            &[("team", Role::Admin)],
            Some(&[("team", Role::Viewer)]),
            false,
        ));
        assert!(
            !may(Some(&scoped), "team", Role::Developer),
            "scopes narrow"
        );

        let admin = session(who(&[], None, true));
        assert!(may(Some(&admin), "anything", Role::Admin));
        assert!(server_admin(Some(&admin)));

        assert!(!may(None, "team", Role::Viewer), "nobody signed in");
        assert!(
            !may(Some(&Session::new("t")), "team", Role::Viewer),
            "a session whose token was not looked up offers nothing"
        );
    }
}
