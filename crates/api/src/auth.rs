//! API authentication (`http.auth = "token"`): bearer tokens checked against the SHA-256
//! values in `[[http.tokens]]`, each with a scope.
//!
//! The config holds hashes, never tokens, so a leaked config file opens nothing. A
//! presented token is hashed and compared with every configured hash in constant time,
//! without stopping at the first match, so timing says nothing about which one is near.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use boxless_core::config::{ApiToken, Scope};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who may call the API.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// False with `auth = "none"` (loopback only, checked at start-up).
    pub required: bool,
    /// The configured tokens.
    pub tokens: Vec<ApiToken>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, a malformed header or an unknown token: `401`.
    Unauthenticated,
    /// A known token whose scope does not cover the request: `403`.
    Forbidden,
}

impl Auth {
    /// Checks the `Authorization` header of a request to `path`; `write` for anything
    /// but GET/HEAD. Returns the token's name when one was used.
    ///
    /// `/healthz` is open; web playback (`/m/...`) is opened by its own token in the path;
    /// the operator's page `/status` needs an `admin` token even to read, and also takes it
    /// as the password of HTTP Basic, which a browser asks for by itself.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        write: bool,
    ) -> Result<Option<&str>, Refusal> {
        if !self.required || path == "/healthz" || path.starts_with("/m/") {
            return Ok(None);
        }
        let write = write || path == "/status";
        let token = authorization
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                if scheme.eq_ignore_ascii_case("bearer") {
                    Some(rest.trim().to_string())
                } else if scheme.eq_ignore_ascii_case("basic") {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(rest.trim())
                        .ok()?;
                    let pair = String::from_utf8(raw).ok()?;
                    Some(pair.split_once(':')?.1.to_string())
                } else {
                    None
                }
            })
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthenticated)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&ApiToken> = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let t = found.ok_or(Refusal::Unauthenticated)?;
        if write && t.scope < Scope::Admin {
            return Err(Refusal::Forbidden);
        }
        Ok(Some(&t.name))
    }
}

/// A fresh token (32 random bytes from the OS, hex) and its SHA-256 (hex).
pub fn new_token() -> std::io::Result<(String, String)> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
    let token = hex(&raw);
    let sha = hex(&Sha256::digest(token.as_bytes()));
    Ok((token, sha))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The middleware: every route but `/healthz` passes [`Auth::check`].
pub(crate) async fn layer(
    State(auth): State<std::sync::Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let path = req.uri().path().to_string();
    match auth.check(&path, presented, write) {
        Ok(_) => next.run(req).await,
        Err(Refusal::Unauthenticated) => {
            metrics::counter!("boxless_http_refused_total", "code" => "401").increment(1);
            let mut r = crate::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send `Authorization: Bearer <token>`; tokens are made with `boxless token new`",
            );
            // The status page is for a browser: Basic makes it ask for the token.
            let challenge = if path == "/status" {
                "Basic realm=\"boxless status\", charset=\"UTF-8\""
            } else {
                "Bearer realm=\"boxless\""
            };
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
            r
        }
        Err(Refusal::Forbidden) => {
            metrics::counter!("boxless_http_refused_total", "code" => "403").increment(1);
            crate::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token's scope is `read`; changes need an `admin` token",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (Auth, String, String) {
        let (admin, admin_sha) = new_token().unwrap();
        let (read, read_sha) = new_token().unwrap();
        let parse = |h: &str| {
            let mut o = [0u8; 32];
            for i in 0..32 {
                o[i] = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
            }
            o
        };
        let a = Auth {
            required: true,
            tokens: vec![
                ApiToken {
                    name: "ops".into(),
                    sha256: parse(&admin_sha),
                    scope: Scope::Admin,
                },
                ApiToken {
                    name: "dash".into(),
                    sha256: parse(&read_sha),
                    scope: Scope::Read,
                },
            ],
        };
        (a, admin, read)
    }

    #[test]
    fn tokens_and_scopes() {
        let (a, admin, read) = auth();
        assert_eq!(admin.len(), 64, "256 random bits");
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        let p = "/api/v1/messages";
        assert_eq!(a.check(p, None, false), Err(Refusal::Unauthenticated));
        assert_eq!(
            a.check(p, Some(b"Bearer "), false),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            a.check(p, Some(b"Basic abc"), false),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            a.check(p, Some(&bearer("nope")), false),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(a.check(p, Some(&bearer(&read)), false), Ok(Some("dash")));
        assert_eq!(
            a.check(p, Some(&bearer(&read)), true),
            Err(Refusal::Forbidden)
        );
        assert_eq!(a.check(p, Some(&bearer(&admin)), true), Ok(Some("ops")));
        assert_eq!(
            a.check(p, Some(format!("bearer  {admin} ").as_bytes()), false),
            Ok(Some("ops")),
            "scheme is case-insensitive, blanks trimmed"
        );
        assert_eq!(
            a.check("/healthz", None, false),
            Ok(None),
            "health stays open"
        );
        assert_eq!(
            a.check("/metrics", None, false),
            Err(Refusal::Unauthenticated)
        );
        let open = Auth::default();
        assert_eq!(open.check(p, None, true), Ok(None));
    }

    #[test]
    fn web_links_need_no_token_and_the_status_page_wants_admin_even_by_basic() {
        use base64::Engine as _;
        let (a, admin, read) = auth();
        assert_eq!(a.check("/m/s1.AbCdEfGhIjKlMnOpQr-_", None, true), Ok(None));
        assert_eq!(
            a.check("/status", None, false),
            Err(Refusal::Unauthenticated)
        );
        let basic = |t: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("ops:{t}"))
            )
            .into_bytes()
        };
        assert_eq!(
            a.check("/status", Some(&basic(&read)), false),
            Err(Refusal::Forbidden),
            "a read token does not open the operator's page"
        );
        assert_eq!(
            a.check("/status", Some(&basic(&admin)), false),
            Ok(Some("ops"))
        );
        assert_eq!(
            a.check("/status", Some(&basic("wrong")), false),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            a.check("/api/v1/messages", Some(&basic(&read)), false),
            Ok(Some("dash")),
            "Basic carries a token anywhere Bearer does"
        );
        // `/m` without the slash is no web link.
        assert_eq!(a.check("/mx", None, false), Err(Refusal::Unauthenticated));
    }
}
