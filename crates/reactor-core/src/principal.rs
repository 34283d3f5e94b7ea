use serde::Serialize;

use crate::ApiError;

/// Which kind of project key authenticated the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyTier {
    /// `rk_pub_…`: safe to ship in a browser; row-level security applies.
    Public,
    /// `rk_svc_…`: server-side only; bypasses row-level security.
    Service,
}

impl KeyTier {
    pub fn prefix(self) -> &'static str {
        match self {
            KeyTier::Public => "rk_pub_",
            KeyTier::Service => "rk_svc_",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyTier::Public => "pub",
            KeyTier::Service => "svc",
        }
    }
}

/// The database role a request runs as (real roles on Postgres, simulated on SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DbRole {
    Anon,
    Authenticated,
    Service,
}

impl DbRole {
    pub fn name(self) -> &'static str {
        match self {
            DbRole::Anon => "reactor_anon",
            DbRole::Authenticated => "reactor_authenticated",
            DbRole::Service => "reactor_service",
        }
    }
}

/// Who is calling, resolved once per request by the server's middleware; no route re-reads
/// the headers. Capabilities turn it into `reactor.user_id`, `reactor.org_id` and
/// `reactor.role` for row-level security.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The id of the project key that authenticated the request.
    pub key_id: String,
    pub tier: KeyTier,
    /// The signed-in user, when the request carried a valid access token.
    pub user_id: Option<String>,
    /// The active organization.
    pub org_id: Option<String>,
    /// The user's role in the active organization.
    pub role: Option<String>,
    /// The sign-in session the user's access token belongs to.
    pub session_id: Option<String>,
}

impl Principal {
    pub fn from_key(key_id: impl Into<String>, tier: KeyTier) -> Self {
        Principal {
            key_id: key_id.into(),
            tier,
            user_id: None,
            org_id: None,
            role: None,
            session_id: None,
        }
    }

    pub fn is_service(&self) -> bool {
        self.tier == KeyTier::Service
    }

    /// Admits the service key only: `what` (e.g. "managing project keys") is refused with 403
    /// `not_admin` and a hint for anything else.
    pub fn require_service(&self, what: &str) -> Result<(), ApiError> {
        if self.is_service() {
            return Ok(());
        }
        Err(ApiError::new(http::StatusCode::FORBIDDEN, "not_admin", format!("{what} requires the service key"))
            .with_hint("use an rk_svc_… key (REACTOR_TOKEN, or the `local` context of `reactor dev`), from servers only: never ship it to a browser"))
    }

    pub fn db_role(&self) -> DbRole {
        match (self.tier, &self.user_id) {
            (KeyTier::Service, _) => DbRole::Service,
            (KeyTier::Public, Some(_)) => DbRole::Authenticated,
            (KeyTier::Public, None) => DbRole::Anon,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_role_follows_tier_then_user() {
        let mut p = Principal::from_key("k1", KeyTier::Public);
        assert_eq!(p.db_role(), DbRole::Anon);
        p.user_id = Some("u1".into());
        assert_eq!(p.db_role(), DbRole::Authenticated);
        let s = Principal::from_key("k2", KeyTier::Service);
        assert_eq!(s.db_role(), DbRole::Service);
        assert!(s.is_service());
    }
}
