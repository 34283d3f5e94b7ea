//! Organizations: multi-tenant SaaS. Users belong to orgs with a role; the active org and
//! role ride in the access token (and can be named per request with `X-Reactor-Org`), and
//! become `reactor.org_id` / `reactor.role` for row-level security.

use reactor_core::keys;
use serde::Serialize;

use crate::store::{InviteRow, Member, MemberChange, OrgRow};
use crate::{Identity, IdentityError, normalize_email};

/// The roles every org has. Servers may declare more (`IdentityConfig::custom_roles`).
pub const BUILT_IN_ROLES: &[&str] = &["owner", "admin", "member"];

/// An org as a member sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    pub slug: String,
    pub name: String,
    /// The caller's role in it.
    pub role: String,
    pub created_at: String,
}

/// An invitation just made. The token goes to the invitee; it only works for their address.
#[derive(Debug, Clone, Serialize)]
pub struct Invite {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: String,
    pub token: String,
    pub expires_at: i64,
}

const INVITE_TOKEN_LEN: usize = 40;

fn org(row: OrgRow, role: String) -> Org {
    Org {
        id: row.id,
        slug: row.slug,
        name: row.name,
        role,
        created_at: row.created_at,
    }
}

fn managers(role: &str) -> bool {
    role == "owner" || role == "admin"
}

impl Identity {
    fn check_role(&self, role: &str) -> Result<(), IdentityError> {
        if BUILT_IN_ROLES.contains(&role)
            || self.inner.config.custom_roles.iter().any(|r| r == role)
        {
            return Ok(());
        }
        let mut known: Vec<&str> = BUILT_IN_ROLES.to_vec();
        known.extend(self.inner.config.custom_roles.iter().map(String::as_str));
        Err(IdentityError::BadRequest(format!(
            "unknown role `{role}`; the roles are: {}",
            known.join(", ")
        )))
    }

    /// The org named by id or slug and the user's role in it; `NotMember` for an org that
    /// does not exist too, so outsiders learn nothing.
    pub async fn membership(
        &self,
        user_id: &str,
        org_ref: &str,
    ) -> Result<(String, String), IdentityError> {
        let store = &self.inner.store;
        let Some(org) = store.org(org_ref).await? else {
            return Err(IdentityError::NotMember);
        };
        match store.role_in(&org.id, user_id).await? {
            Some(role) => Ok((org.id, role)),
            None => Err(IdentityError::NotMember),
        }
    }

    /// Creates an org; its creator is its first owner.
    pub async fn create_org(
        &self,
        user_id: &str,
        name: &str,
        slug: Option<&str>,
    ) -> Result<Org, IdentityError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(IdentityError::BadRequest(
                "an organization name is 1 to 100 characters".into(),
            ));
        }
        let slug = match slug {
            Some(s) => s.to_string(),
            None => slugify(name),
        };
        let valid = (2..=48).contains(&slug.len())
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !slug.starts_with('-')
            && uuid::Uuid::parse_str(&slug).is_err();
        if !valid {
            return Err(IdentityError::BadRequest(format!(
                "`{slug}` is not a valid slug: use 2 to 48 lowercase letters, digits and `-`"
            )));
        }
        let row = OrgRow {
            id: uuid::Uuid::new_v4().to_string(),
            slug,
            name: name.to_string(),
            created_at: String::new(),
        };
        let row = self.inner.store.create_org(&row, user_id).await?;
        Ok(org(row, "owner".into()))
    }

    pub async fn my_orgs(&self, user_id: &str) -> Result<Vec<Org>, IdentityError> {
        let rows = self.inner.store.orgs_of(user_id).await?;
        Ok(rows.into_iter().map(|(row, role)| org(row, role)).collect())
    }

    /// The members of an org the caller belongs to.
    pub async fn members(
        &self,
        user_id: &str,
        org_ref: &str,
    ) -> Result<Vec<Member>, IdentityError> {
        let (org_id, _) = self.membership(user_id, org_ref).await?;
        Ok(self.inner.store.members(&org_id).await?)
    }

    /// Invites an address to an org (owners and admins; only owners invite owners).
    pub async fn invite(
        &self,
        user_id: &str,
        org_ref: &str,
        email: &str,
        role: &str,
    ) -> Result<Invite, IdentityError> {
        let (org_id, my_role) = self.membership(user_id, org_ref).await?;
        self.check_role(role)?;
        if !managers(&my_role) {
            return Err(IdentityError::InsufficientRole(
                "only owners and admins invite members".into(),
            ));
        }
        if role == "owner" && my_role != "owner" {
            return Err(IdentityError::InsufficientRole(
                "only owners invite owners".into(),
            ));
        }
        let email = normalize_email(email)?;
        let token = keys::random_base62(INVITE_TOKEN_LEN);
        let row = InviteRow {
            id: uuid::Uuid::new_v4().to_string(),
            org_id,
            email,
            role: role.to_string(),
            expires_at: self.now() + self.inner.config.invite_ttl_secs,
            accepted: false,
        };
        self.inner
            .store
            .create_invite(&row, &keys::hash(&token), user_id)
            .await?;
        let body = format!(
            "You are invited to join an organization as {}. Sign up or sign in with this invitation code:\n\n{token}\n\nIt works once, within {} days.",
            row.role,
            self.inner.config.invite_ttl_secs / 86_400
        );
        self.queue_email(&row.email, "You are invited", &body)
            .await?;
        Ok(Invite {
            id: row.id,
            org_id: row.org_id,
            email: row.email,
            role: row.role,
            token,
            expires_at: row.expires_at,
        })
    }

    /// The invitation behind `token`, if `email` may accept it now.
    pub(crate) async fn check_invite(
        &self,
        token: &str,
        email: &str,
    ) -> Result<InviteRow, IdentityError> {
        let invite = self
            .inner
            .store
            .invite(&keys::hash(token))
            .await?
            .filter(|i| !i.accepted)
            .ok_or(IdentityError::InviteNotFound)?;
        if invite.expires_at <= self.now() {
            return Err(IdentityError::InviteExpired);
        }
        if invite.email != email {
            return Err(IdentityError::InviteEmailMismatch);
        }
        Ok(invite)
    }

    /// Accepts a checked invitation: the user joins (keeping a role they already had).
    pub(crate) async fn join(
        &self,
        invite: &InviteRow,
        user_id: &str,
    ) -> Result<(String, String), IdentityError> {
        if !self.inner.store.accept_invite(invite, user_id).await? {
            return Err(IdentityError::InviteNotFound);
        }
        let role = self
            .inner
            .store
            .role_in(&invite.org_id, user_id)
            .await?
            .unwrap_or_else(|| invite.role.clone());
        Ok((invite.org_id.clone(), role))
    }

    /// A signed-in user accepts an invitation sent to their address.
    pub async fn accept_invite(&self, user_id: &str, token: &str) -> Result<Org, IdentityError> {
        let user = self
            .inner
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(IdentityError::UserNotFound)?;
        let invite = self.check_invite(token, &user.email).await?;
        let (org_id, role) = self.join(&invite, user_id).await?;
        let row = self
            .inner
            .store
            .org(&org_id)
            .await?
            .ok_or(IdentityError::NotMember)?;
        Ok(org(row, role))
    }

    /// Changes a member's role. Owners and admins manage members; only owners touch owners.
    pub async fn set_member_role(
        &self,
        actor: &str,
        org_ref: &str,
        target: &str,
        role: &str,
    ) -> Result<(), IdentityError> {
        let org_id = self.may_manage(actor, org_ref, target, Some(role)).await?;
        self.apply(
            self.inner
                .store
                .set_member_role(&org_id, target, role)
                .await?,
        )
    }

    /// Removes a member (owners and admins; only owners remove owners).
    pub async fn remove_member(
        &self,
        actor: &str,
        org_ref: &str,
        target: &str,
    ) -> Result<(), IdentityError> {
        let org_id = self.may_manage(actor, org_ref, target, None).await?;
        self.apply(self.inner.store.remove_member(&org_id, target).await?)
    }

    /// Checks that `actor` may move member `target` to `new_role` (a known role) or, with
    /// `None`, out of the org: owners and admins manage members, only owners touch the owner
    /// role. Returns the org's id.
    async fn may_manage(
        &self,
        actor: &str,
        org_ref: &str,
        target: &str,
        new_role: Option<&str>,
    ) -> Result<String, IdentityError> {
        let (org_id, my_role) = self.membership(actor, org_ref).await?;
        if let Some(role) = new_role {
            self.check_role(role)?;
        }
        if !managers(&my_role) {
            let what = if new_role.is_some() {
                "change roles"
            } else {
                "remove members"
            };
            return Err(IdentityError::InsufficientRole(format!(
                "only owners and admins {what}"
            )));
        }
        let current = self
            .inner
            .store
            .role_in(&org_id, target)
            .await?
            .ok_or(IdentityError::NotMember)?;
        let touches_owner = current == "owner" || new_role == Some("owner");
        if touches_owner && my_role != "owner" {
            return Err(IdentityError::InsufficientRole(match new_role {
                Some(_) => "only owners grant or take away the owner role".into(),
                None => "only owners remove owners".into(),
            }));
        }
        Ok(org_id)
    }

    /// Leaves an org; the last owner cannot.
    pub async fn leave(&self, user_id: &str, org_ref: &str) -> Result<(), IdentityError> {
        let (org_id, _) = self.membership(user_id, org_ref).await?;
        self.apply(self.inner.store.remove_member(&org_id, user_id).await?)
    }

    fn apply(&self, change: MemberChange) -> Result<(), IdentityError> {
        match change {
            MemberChange::Done => Ok(()),
            MemberChange::NotMember => Err(IdentityError::NotMember),
            MemberChange::LastOwner => Err(IdentityError::LastOwner),
        }
    }
}

fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-')
        .chars()
        .take(48)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}
