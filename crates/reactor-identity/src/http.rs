//! `/auth/v1`: thin handlers that parse, call [`Identity`], and render GoTrue's shapes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use reactor_core::{ApiError, JsonBody, Principal};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{AdminUserCreate, AdminUserUpdate, Identity, IdentityError, LogoutScope, UserUpdate};

/// Routes that need a project key (the server puts its key middleware in front).
pub fn router(identity: Identity) -> Router {
    Router::new()
        .route("/signup", post(signup))
        .route("/token", post(token))
        .route("/logout", post(logout))
        .route("/user", get(user).put(update_user))
        .route("/settings", get(settings))
        .route("/recover", post(recover))
        .route("/verify", post(verify))
        .route("/dev/mailbox", get(mailbox))
        .route("/orgs", get(orgs).post(create_org))
        .route("/orgs/{org}/members", get(members))
        .route(
            "/orgs/{org}/members/{user}",
            axum::routing::put(set_role).delete(remove_member),
        )
        .route("/orgs/{org}/invites", post(invite))
        .route("/orgs/{org}/leave", post(leave))
        .route("/invites/accept", post(accept_invite))
        .route("/admin/users", get(admin_list).post(admin_create))
        .route("/admin/signing-keys/rotate", post(rotate_signing_key))
        .route(
            "/admin/users/{id}",
            get(admin_get).put(admin_update).delete(admin_delete),
        )
        .with_state(identity)
}

/// Routes anyone may read: the public keys that verify access tokens.
pub fn public_router(identity: Identity) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/verify", get(verify_link))
        .with_state(identity)
}

#[derive(Debug, Deserialize)]
struct SignupBody {
    email: Option<String>,
    password: Option<String>,
    data: Option<Map<String, Value>>,
    /// Joins the invitation's organization on the way in.
    invite_token: Option<String>,
}

async fn signup(
    State(id): State<Identity>,
    JsonBody(body): JsonBody<SignupBody>,
) -> Result<Json<Value>, ApiError> {
    let (email, password) = credentials(body.email, body.password)?;
    let session = id
        .signup(&email, &password, body.data, body.invite_token.as_deref())
        .await?;
    Ok(Json(json!(session)))
}

#[derive(Debug, Deserialize)]
struct GrantQuery {
    grant_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    email: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    /// With `refresh_token`: switch the session's active organization (id or slug).
    org_id: Option<String>,
    /// With `password`: accept an invitation while signing in.
    invite_token: Option<String>,
}

async fn token(
    State(id): State<Identity>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Query(q): Query<GrantQuery>,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    let session = match q.grant_type.as_deref() {
        Some("password") => {
            let (email, password) = credentials(body.email, body.password)?;
            id.password_grant(
                &email,
                &password,
                Some(client.ip()),
                body.invite_token.as_deref(),
            )
            .await?
        }
        Some("refresh_token") => {
            let token = body
                .refresh_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| IdentityError::BadRequest("refresh_token is required".into()))?;
            id.refresh_grant(&token, body.org_id.as_deref()).await?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "unsupported grant_type {}",
                    other.map_or("(none)".into(), |g| format!("`{g}`"))
                ),
            )
            .with_hint("use ?grant_type=password or ?grant_type=refresh_token"));
        }
    };
    Ok(Json(json!(session)))
}

fn credentials(
    email: Option<String>,
    password: Option<String>,
) -> Result<(String, String), IdentityError> {
    match (email, password) {
        (Some(e), Some(p)) if !e.is_empty() && !p.is_empty() => Ok((e, p)),
        _ => Err(IdentityError::BadRequest(
            "email and password are required".into(),
        )),
    }
}

/// The signed-in user behind the request, or 401.
fn signed_in(principal: &Principal) -> Result<(&str, &str), IdentityError> {
    match (&principal.user_id, &principal.session_id) {
        (Some(u), Some(s)) => Ok((u, s)),
        _ => Err(IdentityError::NoUser),
    }
}

#[derive(Debug, Deserialize)]
struct LogoutQuery {
    scope: Option<String>,
}

async fn logout(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<LogoutQuery>,
) -> Result<Response, ApiError> {
    let scope = match q.scope.as_deref() {
        None | Some("local") => LogoutScope::Local,
        Some("global") => LogoutScope::Global,
        Some("others") => LogoutScope::Others,
        Some(other) => {
            return Err(IdentityError::BadRequest(format!(
                "unknown scope `{other}`; use local, global or others"
            ))
            .into());
        }
    };
    let (user, session) = signed_in(&principal)?;
    id.logout(user, session, scope).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn user(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let (user, session) = signed_in(&principal)?;
    Ok(Json(json!(id.user(user, session).await?)))
}

async fn update_user(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    JsonBody(update): JsonBody<UserUpdate>,
) -> Result<Json<Value>, ApiError> {
    let (user, session) = signed_in(&principal)?;
    Ok(Json(json!(id.update_user(user, session, update).await?)))
}

async fn settings(State(id): State<Identity>) -> Json<Value> {
    Json(json!({
        "external": { "email": true, "phone": false },
        "disable_signup": id.config().disable_signup,
        "mailer_autoconfirm": !id.config().confirm_email,
        "phone_autoconfirm": false,
        "password_min_length": id.config().password_min_length,
        "jwt_expiry": id.config().access_token_ttl,
    }))
}

async fn jwks(State(id): State<Identity>) -> Json<Value> {
    Json(id.jwks())
}

#[derive(Debug, Deserialize)]
struct Page {
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn admin_list(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Query(p): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("the admin API")?;
    let (users, total) = id
        .admin_list_users(p.page.unwrap_or(1), p.per_page.unwrap_or(50))
        .await?;
    Ok(Json(
        json!({ "users": users, "aud": crate::jwt::AUDIENCE, "total": total }),
    ))
}

async fn admin_create(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    JsonBody(new): JsonBody<AdminUserCreate>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("the admin API")?;
    Ok(Json(json!(id.admin_create_user(new).await?)))
}

async fn admin_get(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("the admin API")?;
    Ok(Json(json!(id.admin_get_user(&user).await?)))
}

async fn admin_update(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path(user): Path<String>,
    JsonBody(update): JsonBody<AdminUserUpdate>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("the admin API")?;
    Ok(Json(json!(id.admin_update_user(&user, update).await?)))
}

async fn admin_delete(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("the admin API")?;
    id.admin_delete_user(&user).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
    slug: Option<String>,
}

async fn orgs(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let (user, _) = signed_in(&principal)?;
    Ok(Json(json!(id.my_orgs(user).await?)))
}

async fn create_org(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<NewOrg>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (user, _) = signed_in(&principal)?;
    let org = id
        .create_org(user, &body.name, body.slug.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(json!(org))))
}

async fn members(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (user, _) = signed_in(&principal)?;
    Ok(Json(json!(id.members(user, &org).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

async fn set_role(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path((org, target)): Path<(String, String)>,
    JsonBody(body): JsonBody<RoleBody>,
) -> Result<StatusCode, ApiError> {
    let (user, _) = signed_in(&principal)?;
    id.set_member_role(user, &org, &target, &body.role).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_member(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path((org, target)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (user, _) = signed_in(&principal)?;
    id.remove_member(user, &org, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    email: String,
    role: Option<String>,
}

async fn invite(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<InviteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (user, _) = signed_in(&principal)?;
    let role = body.role.as_deref().unwrap_or("member");
    let invite = id.invite(user, &org, &body.email, role).await?;
    Ok((StatusCode::CREATED, Json(json!(invite))))
}

async fn leave(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    Path(org): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (user, _) = signed_in(&principal)?;
    id.leave(user, &org).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    token: String,
}

async fn accept_invite(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<AcceptBody>,
) -> Result<Json<Value>, ApiError> {
    let (user, _) = signed_in(&principal)?;
    Ok(Json(json!(id.accept_invite(user, &body.token).await?)))
}

#[derive(Debug, Deserialize)]
struct RecoverBody {
    email: String,
}

/// Always `{}`: whether the address has an account is not told.
async fn recover(
    State(id): State<Identity>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<RecoverBody>,
) -> Result<Json<Value>, ApiError> {
    id.recover(&body.email, Some(client.ip())).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct VerifyBody {
    #[serde(rename = "type")]
    kind: String,
    token: Option<String>,
    token_hash: Option<String>,
}

async fn verify(
    State(id): State<Identity>,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<Json<Value>, ApiError> {
    let token = body
        .token
        .or(body.token_hash)
        .ok_or_else(|| IdentityError::BadRequest("token is required".into()))?;
    Ok(Json(json!(id.verify(&body.kind, &token).await?)))
}

#[derive(Debug, Deserialize)]
struct VerifyLink {
    #[serde(rename = "type")]
    kind: String,
    token: String,
    redirect_to: Option<String>,
}

/// The link in an email: verifies, then sends the browser to the site with the session in
/// the URL fragment (never sent to a server), as GoTrue does. Only redirects within the
/// configured site URL are followed.
async fn verify_link(State(id): State<Identity>, Query(q): Query<VerifyLink>) -> Response {
    let site = id.config().site_url.trim_end_matches('/').to_string();
    let target = q
        .redirect_to
        .filter(|r| r == &site || r.starts_with(&format!("{site}/")))
        .unwrap_or(site);
    let fragment = match id.verify(&q.kind, &q.token).await {
        Ok(s) => format!(
            "access_token={}&refresh_token={}&expires_in={}&expires_at={}&token_type=bearer&type={}",
            s.access_token, s.refresh_token, s.expires_in, s.expires_at, q.kind
        ),
        Err(e) => {
            let e = ApiError::from(e);
            format!(
                "error={}&error_description={}",
                e.code,
                e.message.replace(' ', "+")
            )
        }
    };
    axum::response::Redirect::to(&format!("{target}#{fragment}")).into_response()
}

#[derive(Debug, Deserialize)]
struct MailboxQuery {
    to: Option<String>,
}

/// `reactor dev` only: the emails the server sent, newest first.
async fn mailbox(
    State(id): State<Identity>,
    Query(q): Query<MailboxQuery>,
) -> Result<Json<Value>, ApiError> {
    if !id.config().dev_mailbox {
        return Err(
            ApiError::not_found("the dev mailbox exists only under `reactor dev`")
                .with_hint("configure [smtp] in the server config to deliver email"),
        );
    }
    let to = q.to.map(|t| t.trim().to_lowercase());
    Ok(Json(json!(id.mailbox(to.as_deref()).await?)))
}

/// Makes a new signing key the signer; tokens signed by the old one keep working until they
/// expire, and every replica picks the new key up at its first unknown `kid`.
async fn rotate_signing_key(
    State(id): State<Identity>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("the admin API")?;
    let kid = id.rotate_signing_key().await?;
    Ok(Json(json!({ "kid": kid })))
}
