//! The OpenAPI document of the API, [`ApiDoc`], made from each handler's
//! `#[utoipa::path]` and the answer types of [`crate::schema`]; served at
//! `GET /api/v1/openapi.json`. Its tests hold it to the routes the router serves.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::schema::{
    ActivityView, ControlView, ErrorBody, GreetingDeleted, GreetingView, Health, MessageDeleted,
    MessageView, NotificationView, RecipientDeleted, RecipientView, ServerView,
};

/// The OpenAPI document of `/api/v1` (and `/healthz`, `/metrics`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Boxless HTTP API",
        description = "Voice messages without mailboxes: servers, messages, recipients. \
                       The reference is docs/http.md in the repository."
    ),
    paths(
        crate::healthz,
        crate::health,
        crate::metrics_text,
        crate::servers,
        crate::messages,
        crate::message,
        crate::audio,
        crate::delete,
        crate::recipients::get,
        crate::recipients::put,
        crate::recipients::delete,
        crate::greetings::get,
        crate::greetings::put,
        crate::greetings::delete,
        crate::status::activity,
        crate::openapi_json,
    ),
    components(schemas(
        ErrorBody,
        ServerView,
        NotificationView,
        MessageView,
        Health,
        ControlView,
        ActivityView,
        RecipientView,
        RecipientDeleted,
        GreetingView,
        GreetingDeleted,
        MessageDeleted
    )),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// `Authorization: Bearer <token>` (with `http.auth = "token"`).
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme =
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", scheme);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn doc() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// Every route the API serves under `/api/v1`, `/healthz` and `/metrics` is in the
    /// document with each of its methods, and the document names no other: read from the
    /// router's own source, so a new route without its `#[utoipa::path]` fails here.
    #[test]
    fn the_document_has_exactly_the_api_s_routes_and_methods() {
        let src = include_str!("lib.rs");
        let mut served = BTreeSet::new();
        for chunk in src.split(".route(").skip(1) {
            let Some(path) = chunk.split('"').nth(1) else {
                continue;
            };
            if !(path.starts_with("/api/") || path == "/healthz" || path == "/metrics") {
                continue;
            }
            // A route's methods stand before the next route (or the merge after the last).
            let end = [".merge(", ".fallback("]
                .iter()
                .filter_map(|m| chunk.find(m))
                .min()
                .unwrap_or(chunk.len());
            for m in ["get", "put", "delete", "post"] {
                if chunk[..end].contains(&format!("{m}(")) {
                    served.insert(format!("{m} {path}"));
                }
            }
        }
        let d = doc();
        let mut documented = BTreeSet::new();
        for (path, item) in d["paths"].as_object().unwrap() {
            for m in item.as_object().unwrap().keys() {
                documented.insert(format!("{m} {path}"));
            }
        }
        assert!(served.len() >= 12, "{served:?}");
        assert_eq!(served, documented);
        // OpenAPI wants each operation named once.
        let ids: Vec<_> = d["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap().to_string())
            .collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "operation ids repeat: {ids:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_its_schemas_and_the_bearer_scheme() {
        let d = doc();
        assert!(d["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemas = d["components"]["schemas"].as_object().unwrap();
        for s in [
            "MessageView",
            "NotificationView",
            "ServerView",
            "ErrorBody",
            "RecipientView",
        ] {
            assert!(schemas.contains_key(s), "{s}");
        }
        assert_eq!(
            d["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // /healthz stays open.
        assert_eq!(
            d["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
    }

    /// The entry the API documents is the one core parses: the same fields (but `number`,
    /// which only answers carry).
    #[test]
    fn a_recipient_s_documented_fields_are_the_ones_parsed() {
        let parsed = serde_json::to_value(boxless_core::recipient::PrefsInput::default()).unwrap();
        let parsed: BTreeSet<_> = parsed.as_object().unwrap().keys().cloned().collect();
        let d = doc();
        let documented: BTreeSet<_> = d["components"]["schemas"]["RecipientView"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "number")
            .cloned()
            .collect();
        assert_eq!(parsed, documented);
    }
}
