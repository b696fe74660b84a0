//! The OpenAPI 3.1 document of this sidecar, generated from the live
//! configuration: one `POST /webhooks/{name}` per enabled webhook (its
//! signature headers or security scheme, its JSON Schema as the body, every
//! answer the route gives), the login routes of each usable SSO provider,
//! and the fixed routes. It is built from names, schemes and schemas only:
//! a webhook's secrets and a provider's configuration are never read here.
//! `GET /openapi.json` serves it from [`DocCache`], rebuilt on the first
//! request after either configuration was reloaded (LISTEN/NOTIFY), with a
//! strong `ETag` (a hash of the bytes, so every replica with the same
//! configuration gives the same one) and `If-None-Match` answered 304.

use crate::errors::json_error;
use crate::sso::{Loaded, Provider};
use crate::state::AppState;
use crate::webhooks::{Table, Webhook};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use axum::Router;
use integration_core::webhooks::{DeliveryId, Encoding, Scheme, MAX_DELIVERY_ID_BYTES};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use utoipa::openapi::path::{Operation, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HeaderBuilder, HttpMethod, InfoBuilder, OpenApi,
    OpenApiBuilder, Paths, Ref, RefOr, Required, Response, ResponseBuilder, ServerBuilder,
};

/// The name of the schema component of the JSON error body.
const ERROR: &str = "Error";
/// Seconds a 503 asks to wait (`Retry-After`), as the webhook route says.
const RETRY_AFTER: &str = "Retry-After";

/// What the document is generated from.
pub struct Inputs<'a> {
    /// `PUBLIC_URL`, without a trailing slash.
    pub public_url: &'a str,
    /// `info.version`: the extension's version where known.
    pub version: &'a str,
    /// Every configured webhook; disabled ones are left out (they answer 404).
    pub webhooks: Vec<&'a Webhook>,
    /// Every configured provider; disabled or unusable ones are left out
    /// (they answer 404 and 503 to everything).
    pub providers: Vec<&'a Provider>,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve))
}

/// The document last served and the loads it was built from.
struct Built {
    webhooks: Arc<Table>,
    sso: Arc<Loaded>,
    body: Bytes,
    etag: HeaderValue,
}

/// The document of the configuration loaded now, built once per load.
#[derive(Default)]
pub struct DocCache(RwLock<Option<Arc<Built>>>);

impl DocCache {
    /// The document of the loads current now (each load replaces its table
    /// as a whole, so the same `Arc`s mean nothing changed), or `None`
    /// before the first loads.
    fn current(&self, state: &AppState) -> Option<Arc<Built>> {
        let webhooks = state.webhooks.cache.snapshot()?;
        let sso = state.sso.cache.current()?;
        let cached = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(built) = cached {
            if Arc::ptr_eq(&built.webhooks, &webhooks) && Arc::ptr_eq(&built.sso, &sso) {
                return Some(built);
            }
        }
        let inputs = Inputs {
            public_url: &state.sso.issuer,
            version: webhooks
                .extension_version
                .as_deref()
                .unwrap_or(env!("CARGO_PKG_VERSION")),
            webhooks: webhooks.webhooks.values().map(AsRef::as_ref).collect(),
            providers: sso.providers.values().map(AsRef::as_ref).collect(),
        };
        let body = Bytes::from(document(&inputs).to_string());
        let built = Arc::new(Built {
            etag: etag(&body),
            body,
            webhooks,
            sso,
        });
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(built.clone());
        Some(built)
    }
}

/// A strong validator: the first 128 bits of the SHA-256 of the bytes.
fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex in quotes is a header value")
}

/// Whether `If-None-Match` names `etag` (or is `*`): compared weakly, as
/// RFC 9110 says for this header.
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// `GET /openapi.json`.
async fn serve(State(state): State<AppState>, headers: HeaderMap) -> HttpResponse {
    let Some(built) = state.openapi.current(&state) else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the configuration is not loaded yet: the database is unreachable",
        );
    };
    let mut response = if none_match(&headers, &built.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = built.body.clone().into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, built.etag.clone());
    // Revalidate every time: a configuration change shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The document as JSON.
pub fn document(inputs: &Inputs<'_>) -> Value {
    let mut webhooks: Vec<&Webhook> = inputs
        .webhooks
        .iter()
        .copied()
        .filter(|w| w.enabled)
        .collect();
    webhooks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut paths = Paths::new();
    fixed_routes(&mut paths);
    for webhook in &webhooks {
        paths.add_path_operation(
            format!("/webhooks/{}", webhook.name),
            vec![HttpMethod::Post],
            webhook_operation(webhook),
        );
    }
    let mut providers = inputs.providers.clone();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    for provider in providers {
        provider_routes(&mut paths, provider);
    }
    let openapi: OpenApi = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("pg_integration sidecar")
                .version(inputs.version)
                .description(Some(format!(
                    "Webhook ingress, SSO logins, health and metrics of pg_integration. \
                     Generated from the configuration in the database; it changes when \
                     a webhook or an SSO provider does. The SQL functions, views and \
                     settings are in the [SQL API reference]({}/docs/sql).",
                    inputs.public_url
                )))
                .build(),
        )
        .servers(Some([ServerBuilder::new().url(inputs.public_url).build()]))
        .paths(paths)
        .components(Some(components()))
        .build();
    let mut document = serde_json::to_value(&openapi).unwrap_or_else(|e| {
        // Only a map with non-string keys can fail, and the model has none.
        tracing::error!(error = %e, "cannot serialize the OpenAPI document");
        Value::Null
    });
    // utoipa's schema model cannot hold every JSON Schema keyword (`if`,
    // `const`, `$defs`, …), so each webhook's schema goes in as written,
    // its local references rebased to where it now sits in the document.
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for webhook in &webhooks {
            if let Some(schema) = &webhook.schema_source {
                let name = body_schema_name(&webhook.name);
                let mut schema = schema.clone();
                rebase_refs(&mut schema, &format!("#/components/schemas/{name}"));
                schemas.insert(name, schema);
            }
        }
    }
    document
}

/// Points the document-local references of a schema (`"$ref": "#/$defs/x"`)
/// at `base`, where the schema is placed: inside the OpenAPI document `#` is
/// the document's root (tools ignore an embedded `$id`). Literal values
/// (`const`, `enum`, `default`, `examples`) are data and stay as they are.
fn rebase_refs(schema: &mut Value, base: &str) {
    match schema {
        Value::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                match (key.as_str(), value) {
                    ("$ref" | "$dynamicRef", Value::String(target)) => {
                        if let Some(pointer) = target.strip_prefix('#') {
                            *target = format!("{base}{pointer}");
                        }
                    }
                    ("const" | "enum" | "default" | "examples", _) => {}
                    (_, value) => rebase_refs(value, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rebase_refs(item, base)),
        _ => {}
    }
}

fn body_schema_name(webhook: &str) -> String {
    format!("webhook.{webhook}")
}

fn error_ref() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(ERROR))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// Text PostgreSQL can store: no NUL character (a payload with one is 422).
fn text() -> ObjectBuilder {
    string().pattern(Some("^[^\\u0000]*$"))
}

fn integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

fn nullable(kind: Type) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([kind, Type::Null]))
}

/// The component of [`storable_json`].
const STORABLE_JSON: &str = "StorableJson";

/// Any JSON value PostgreSQL can store as jsonb: no NUL in a string or a
/// key (a payload with one is 422); recursive through its own `$ref`.
fn storable_json() -> Schema {
    let itself = || RefOr::Ref(Ref::from_schema_name(STORABLE_JSON));
    utoipa::openapi::schema::AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(SchemaType::from_iter([
            Type::Null,
            Type::Boolean,
            Type::Number,
        ])))
        .item(text())
        .item(ArrayBuilder::new().items(itself()))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(text()))
                .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::RefOr(
                    itself(),
                ))),
        )
        .into()
}

fn any() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .into()
}

/// An answer with a JSON body of schema `schema`.
fn json_answer(description: &str, schema: impl Into<RefOr<Schema>>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// An error answer (the shared JSON error body).
fn error(description: &str) -> Response {
    json_answer(description, error_ref())
}

/// A 503: the error body and when to retry.
fn unavailable(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(error_ref())).build(),
        )
        .header(
            RETRY_AFTER,
            HeaderBuilder::new()
                .schema(integer())
                .description(Some("seconds to wait before retrying"))
                .build(),
        )
        .build()
}

fn components() -> utoipa::openapi::Components {
    let schema_error = ObjectBuilder::new()
        .property(
            "path",
            string().description(Some("JSON pointer into the payload")),
        )
        .property("message", string())
        .required("path")
        .required("message");
    let error = ObjectBuilder::new()
        .description(Some("Every error answer of the sidecar."))
        .property("error", string().description(Some("what went wrong")))
        .property(
            "request_id",
            string().description(Some("quote it to the operator; it is in the server log")),
        )
        .property(
            "details",
            ArrayBuilder::new()
                .items(schema_error)
                .description(Some("the JSON Schema violations (422 of a webhook)")),
        )
        .required("error");
    let stored = ObjectBuilder::new()
        .description(Some(
            "A delivery stored (or a duplicate of one stored before).",
        ))
        .property("event_id", integer())
        .property(
            "duplicate",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some("true when this delivery id was stored before")),
        )
        .property("delivery_id", nullable(Type::String))
        .required("event_id")
        .required("duplicate")
        .required("delivery_id");
    let tokens = ObjectBuilder::new()
        .description(Some(
            "A login's session token (also set as the session cookie).",
        ))
        .property(
            "access_token",
            string().description(Some("a JWT, see /.well-known/jwks.json")),
        )
        .property("token_type", string().enum_values(Some(["Bearer"])))
        .property("expires_at", integer().description(Some("Unix seconds")))
        .property("role", string())
        .property("sub", string())
        .property("idp_sub", string())
        .property("email", nullable(Type::String))
        .required("access_token")
        .required("token_type")
        .required("expires_at")
        .required("role")
        .required("sub");
    ComponentsBuilder::new()
        .schema(ERROR, error)
        .schema("WebhookStored", stored)
        .schema("SessionToken", tokens)
        .schema(STORABLE_JSON, storable_json())
        .security_scheme(
            "apiKeyBearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .security_scheme(
            "apiKeyHeader",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        )
        .security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        )
        .security_scheme(
            "sessionCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::sso::session::COOKIE,
            ))),
        )
        .security_scheme(
            "sessionBearer",
            SecurityScheme::Http({
                let mut http = Http::new(HttpAuthScheme::Bearer);
                http.bearer_format = Some("JWT".to_owned());
                http
            }),
        )
        .build()
}

/// A required (or optional) request header with a string schema.
fn header(
    name: &str,
    required: bool,
    schema: ObjectBuilder,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

const HEX64: &str = "[0-9a-fA-F]{64}";
const TIMESTAMP: &str = "^[0-9]+$";

/// The headers a scheme requires, with their formats.
fn signature_headers(scheme: &Scheme) -> Vec<utoipa::openapi::path::Parameter> {
    let timestamp = || string().pattern(Some(TIMESTAMP));
    match scheme {
        Scheme::Github => vec![header(
            "X-Hub-Signature-256",
            true,
            string().pattern(Some(format!("^sha256={HEX64}$"))),
            "HMAC-SHA256 of the raw body with the webhook's secret, as sha256=<hex>",
        )],
        Scheme::Stripe => vec![header(
            "Stripe-Signature",
            true,
            // Stripe adds other schemes (v0 in test mode): they are ignored.
            string().pattern(Some("^t=[0-9]+(,v[0-9]+=[0-9a-fA-F]+)+$")),
            "t=<Unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">[,v1=…]; \
             t within the webhook's tolerance; signatures of other versions are ignored",
        )],
        Scheme::Slack => vec![
            header(
                "X-Slack-Signature",
                true,
                string().pattern(Some(format!("^v0={HEX64}$"))),
                "v0=<hex HMAC-SHA256 of \"v0:<timestamp>:<raw body>\">",
            ),
            header(
                "X-Slack-Request-Timestamp",
                true,
                timestamp(),
                "Unix seconds, within the webhook's tolerance",
            ),
        ],
        Scheme::Standard => vec![
            header(
                "webhook-id",
                true,
                string()
                    .min_length(Some(1))
                    .max_length(Some(MAX_DELIVERY_ID_BYTES)),
                "the message id (Standard Webhooks); also the delivery id",
            ),
            header(
                "webhook-timestamp",
                true,
                timestamp(),
                "Unix seconds, within the webhook's tolerance",
            ),
            header(
                "webhook-signature",
                true,
                string().pattern(Some(
                    "^v1a?,[A-Za-z0-9+/]+={0,2}( v1a?,[A-Za-z0-9+/]+={0,2})*$",
                )),
                "space-separated v1,<base64 HMAC-SHA256> or v1a,<base64 ed25519> \
                 signatures of \"<id>.<timestamp>.<raw body>\"",
            ),
        ],
        Scheme::HmacSha256 {
            header: name,
            encoding,
        } => {
            let (digest, spelled) = match encoding {
                Encoding::Hex => (HEX64.to_owned(), "hex"),
                Encoding::Base64 => ("[A-Za-z0-9+/]{43}=".to_owned(), "base64"),
            };
            vec![header(
                name,
                true,
                string().pattern(Some(format!("^(sha256=)?{digest}$"))),
                &format!(
                    "HMAC-SHA256 of the raw body with the webhook's secret, in {spelled}, \
                     optionally prefixed sha256="
                ),
            )]
        }
        Scheme::ApiKey | Scheme::Basic | Scheme::None => Vec::new(),
    }
}

fn webhook_operation(webhook: &Webhook) -> Operation {
    let mut op = OperationBuilder::new()
        .tag("webhooks")
        .operation_id(Some(format!("deliver.{}", webhook.name)))
        .summary(Some(format!(
            "Deliver an event to webhook {}",
            webhook.name
        )));
    let mut description = vec![format!(
        "Answered 2xx only once the event is committed. Bodies up to {} bytes.",
        webhook.max_body_bytes
    )];
    let signed = signature_headers(&webhook.scheme);
    if !signed.is_empty() {
        description.push(
            "Signed: this page cannot sign for you (the secret never leaves the database). \
             Build the signed string each signature header describes from the exact body \
             you send, sign it with the webhook's secret as the header says (an \
             HMAC-SHA256 in hex: `printf '%s' \"$STRING\" | openssl dgst -sha256 -hmac \
             \"$SECRET\"`), put it in the header in the form shown, then execute."
                .to_owned(),
        );
    }
    for parameter in signed {
        op = op.parameter(parameter);
    }
    if let Some(DeliveryId::Header(name)) = &webhook.delivery_id {
        let signed = signature_headers(&webhook.scheme)
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name));
        if !signed {
            op = op.parameter(header(
                name,
                false,
                string()
                    .min_length(Some(1))
                    .max_length(Some(MAX_DELIVERY_ID_BYTES)),
                "the delivery id: a delivery repeating one already stored is answered \
                 as a duplicate and not stored again",
            ));
        }
    }
    if let Some(DeliveryId::JsonPointer(pointer)) = &webhook.delivery_id {
        description.push(format!(
            "The delivery id is read at JSON pointer {pointer} of the payload."
        ));
    }
    match webhook.scheme {
        Scheme::ApiKey => {
            op = op
                .security(SecurityRequirement::new(
                    "apiKeyBearer",
                    Vec::<String>::new(),
                ))
                .security(SecurityRequirement::new(
                    "apiKeyHeader",
                    Vec::<String>::new(),
                ));
            description.push(format!(
                "An API key with scope webhooks:{} is required.",
                webhook.name
            ));
        }
        Scheme::Basic => {
            op = op.security(SecurityRequirement::new("basic", Vec::<String>::new()));
        }
        _ => {}
    }
    let schema_ref = webhook
        .schema_source
        .as_ref()
        .map(|_| RefOr::Ref(Ref::from_schema_name(body_schema_name(&webhook.name))));
    let mut body = RequestBodyBuilder::new();
    match &schema_ref {
        Some(schema) => {
            // A form is an object of strings, which a schema with other
            // types never admits: only JSON (and JSON sent as text) is
            // documented for a webhook with a schema.
            description.push(
                "The JSON payload must match the webhook's JSON Schema, else 422 \
                 (a form body is checked as an object of strings)."
                    .to_owned(),
            );
            body = body
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema.clone())).build(),
                )
                .content(
                    "text/plain",
                    ContentBuilder::new().schema(Some(schema.clone())).build(),
                );
        }
        None => {
            let form = ObjectBuilder::new()
                .property_names(Some(text()))
                .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::RefOr(
                    RefOr::T(Schema::OneOf(
                        utoipa::openapi::schema::OneOfBuilder::new()
                            .item(text())
                            .item(ArrayBuilder::new().items(text()))
                            .build(),
                    )),
                )));
            body = body
                .required(Some(Required::False))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(STORABLE_JSON)))
                        .build(),
                )
                .content(
                    "application/x-www-form-urlencoded",
                    ContentBuilder::new().schema(Some(form)).build(),
                )
                // Not `text()`: a generator wraps this string in an element,
                // and XML cannot carry the NUL the pattern is about.
                .content(
                    "application/xml",
                    ContentBuilder::new().schema(Some(string())).build(),
                )
                .content(
                    "text/plain",
                    ContentBuilder::new().schema(Some(text())).build(),
                );
        }
    }
    if matches!(&webhook.schema, Some(Err(_))) {
        description.push(
            "Its JSON Schema does not compile: deliveries with a payload are answered 500 \
             until it is fixed."
                .to_owned(),
        );
    }
    op = op
        .request_body(Some(body.build()))
        .response(
            "200",
            json_answer(
                "stored, or a duplicate of a delivery stored before",
                RefOr::Ref(Ref::from_schema_name("WebhookStored")),
            ),
        )
        .response(
            "400",
            error("the delivery id is empty, too long or not visible ASCII"),
        )
        .response(
            "404",
            error("the webhook was dropped or disabled meanwhile"),
        )
        .response(
            "413",
            error("the body is larger than the webhook's max_body_bytes"),
        )
        .response(
            "415",
            error("a content type that is not accepted, or a text body that is not UTF-8"),
        )
        .response(
            "422",
            error(
                "the payload is not valid JSON, holds a NUL character, does not match the \
                 JSON Schema (listed in details) or cannot be stored",
            ),
        )
        .response(
            "500",
            error("the webhook's handler or target table failed; nothing was stored"),
        )
        .response(
            "503",
            unavailable("the database is unavailable; nothing was stored, retry later"),
        );
    if webhook.scheme != Scheme::None {
        op = op.response(
            "401",
            error("a missing, malformed, stale or wrong signature or key"),
        );
    }
    if webhook.allowed.is_some() {
        op = op.response("403", error("this address may not deliver to this webhook"));
    }
    if webhook.has_handler {
        op = op.response(
            "default",
            json_answer(
                "the answer of the webhook's handler function (any status and JSON body)",
                any(),
            ),
        );
    }
    op.description(Some(description.join(" "))).build()
}

/// The errors every SSO route can answer.
fn sso_errors(op: OperationBuilder) -> OperationBuilder {
    op.response(
        "400",
        error("a bad request (such as a redirect_to not allowed)"),
    )
    .response("401", error("the login was refused"))
    .response(
        "403",
        error("the identity maps to no role, or a cross-origin post"),
    )
    .response("404", error("no such provider (or it was disabled)"))
    .response("500", error("an internal error"))
    .response("502", error("the identity provider failed"))
    .response(
        "503",
        error("the configuration or the database is unavailable"),
    )
}

fn login_answers(op: OperationBuilder) -> OperationBuilder {
    op.response(
        "200",
        json_answer(
            "logged in; the session cookie is set too",
            RefOr::Ref(Ref::from_schema_name("SessionToken")),
        ),
    )
    .response(
        "303",
        ResponseBuilder::new()
            .description("logged in; redirected to redirect_to with the token in the fragment")
            .header("Location", HeaderBuilder::new().schema(string()).build())
            .build(),
    )
}

fn redirect_to() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("redirect_to")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "where to send the browser after the login (one of the provider's allowed redirects)",
        ))
        .schema(Some(
            string().format(Some(SchemaFormat::Custom("uri".to_owned()))),
        ))
        .build()
}

fn provider_routes(paths: &mut Paths, provider: &Provider) {
    let Ok(protocol) = &provider.protocol else {
        return;
    };
    if !provider.enabled {
        return;
    }
    let name = &provider.name;
    let tag = "sso";
    if protocol.takes_password() {
        let form: Schema = ObjectBuilder::new()
            .property("username", string())
            .property(
                "password",
                string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Password))),
            )
            .property("redirect_to", string())
            .required("username")
            .required("password")
            .into();
        let op = OperationBuilder::new()
            .tag(tag)
            .operation_id(Some(format!("login.{name}")))
            .summary(Some(format!("Log in with {name} (username and password)")))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(form.clone())).build(),
                    )
                    .content(
                        "application/x-www-form-urlencoded",
                        ContentBuilder::new().schema(Some(form)).build(),
                    )
                    .build(),
            ))
            .response("413", error("the login body is too large"));
        paths.add_path_operation(
            format!("/auth/{name}/login"),
            vec![HttpMethod::Post],
            sso_errors(login_answers(op)).build(),
        );
        return;
    }
    let login = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(format!("login.{name}")))
        .summary(Some(format!("Start a login with {name}")))
        .parameter(redirect_to())
        .response(
            "302",
            ResponseBuilder::new()
                .description("to the identity provider, with a short-lived login cookie")
                .header("Location", HeaderBuilder::new().schema(string()).build())
                .header("Set-Cookie", HeaderBuilder::new().schema(string()).build())
                .build(),
        );
    paths.add_path_operation(
        format!("/auth/{name}/login"),
        vec![HttpMethod::Get],
        sso_errors(login).build(),
    );
    let callback = |method: &str| {
        sso_errors(login_answers(
            OperationBuilder::new()
                .tag(tag)
                .operation_id(Some(format!("callback.{method}.{name}")))
                .summary(Some(format!("Where {name} sends the browser back"))),
        ))
    };
    paths.add_path_operation(
        format!("/auth/{name}/callback"),
        vec![HttpMethod::Get],
        callback("get").build(),
    );
    let form = ObjectBuilder::new().additional_properties(Some(
        utoipa::openapi::schema::AdditionalProperties::RefOr(RefOr::T(string().into())),
    ));
    paths.add_path_operation(
        format!("/auth/{name}/callback"),
        vec![HttpMethod::Post],
        callback("post")
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/x-www-form-urlencoded",
                        ContentBuilder::new().schema(Some(form)).build(),
                    )
                    .build(),
            ))
            .build(),
    );
    if protocol.sp_metadata().is_some() {
        let op = OperationBuilder::new()
            .tag(tag)
            .operation_id(Some(format!("metadata.{name}")))
            .summary(Some(format!("SAML service-provider metadata of {name}")))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("the SP metadata (EntityDescriptor)")
                    .content(
                        "application/samlmetadata+xml",
                        ContentBuilder::new().schema(Some(string())).build(),
                    )
                    .build(),
            )
            .response("404", error("no such provider (or it was disabled)"))
            .response("503", error("the configuration is unavailable"));
        paths.add_path_operation(
            format!("/auth/{name}/metadata"),
            vec![HttpMethod::Get],
            op.build(),
        );
    }
}

fn fixed_routes(paths: &mut Paths) {
    let status = |values: &[&str]| {
        ObjectBuilder::new()
            .property("status", string().enum_values(Some(values.iter().copied())))
            .required("status")
    };
    let get = |id: &str, tag: &str, summary: &str| {
        OperationBuilder::new()
            .tag(tag)
            .operation_id(Some(id))
            .summary(Some(summary))
    };
    paths.add_path_operation(
        "/healthz",
        vec![HttpMethod::Get],
        get("healthz", "operations", "The process is alive")
            .response("200", json_answer("alive", status(&["ok"])))
            .build(),
    );
    paths.add_path_operation(
        "/readyz",
        vec![HttpMethod::Get],
        get("readyz", "operations", "The database is reachable")
            .response(
                "200",
                json_answer(
                    "ready",
                    status(&["ready"]).property("database", string().enum_values(Some(["ok"]))),
                ),
            )
            .response(
                "503",
                json_answer(
                    "the database is unreachable",
                    status(&["unavailable"])
                        .property("database", string())
                        .property("request_id", string()),
                ),
            )
            .build(),
    );
    paths.add_path_operation(
        "/metrics",
        vec![HttpMethod::Get],
        get(
            "metrics",
            "operations",
            "Prometheus metrics (OpenMetrics text)",
        )
        .response(
            "200",
            ResponseBuilder::new()
                .description("the metrics")
                .content(
                    "application/openmetrics-text",
                    ContentBuilder::new().schema(Some(string())).build(),
                )
                .build(),
        )
        .build(),
    );
    paths.add_path_operation(
        "/openapi.json",
        vec![HttpMethod::Get],
        get("openapi", "operations", "This document")
            .response(
                "200",
                ResponseBuilder::new()
                    .description("the OpenAPI 3.1 document, with a strong ETag")
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(any())).build(),
                    )
                    .header("ETag", HeaderBuilder::new().schema(string()).build())
                    .build(),
            )
            .response(
                "304",
                ResponseBuilder::new()
                    .description("unchanged since the If-None-Match ETag")
                    .build(),
            )
            .response("503", error("the configuration is not loaded yet"))
            .build(),
    );
    let jwk = ObjectBuilder::new()
        .property("kty", string())
        .property("kid", string())
        .required("kty");
    paths.add_path_operation(
        "/.well-known/jwks.json",
        vec![HttpMethod::Get],
        get("jwks", "sso", "The public keys that verify session tokens")
            .response(
                "200",
                json_answer(
                    "the JSON Web Key Set",
                    ObjectBuilder::new()
                        .property("keys", ArrayBuilder::new().items(jwk))
                        .required("keys"),
                ),
            )
            .response("503", error("the signing keys are not loaded yet"))
            .build(),
    );
    let session = get("session", "sso", "The current session's claims")
        .security(SecurityRequirement::new(
            "sessionCookie",
            Vec::<String>::new(),
        ))
        .security(SecurityRequirement::new(
            "sessionBearer",
            Vec::<String>::new(),
        ))
        .response(
            "200",
            json_answer(
                "the session is valid",
                ObjectBuilder::new()
                    .property(
                        "session",
                        ObjectBuilder::new().description(Some("the token's claims")),
                    )
                    .required("session"),
            ),
        )
        .response(
            "401",
            error("no session, or an expired, invalid or ended one"),
        )
        .response(
            "503",
            error("the database or the configuration is unavailable"),
        );
    paths.add_path_operation("/auth/session", vec![HttpMethod::Get], session.build());
    let logout = OperationBuilder::new()
        .tag("sso")
        .operation_id(Some("logout"))
        .summary(Some("End the session and clear its cookie"))
        .response(
            "200",
            json_answer(
                "logged out",
                ObjectBuilder::new()
                    .property(
                        "logged_out",
                        ObjectBuilder::new().schema_type(Type::Boolean),
                    )
                    .property(
                        "session_ended",
                        ObjectBuilder::new().schema_type(Type::Boolean),
                    )
                    .property("end_session_url", nullable(Type::String))
                    .required("logged_out")
                    .required("session_ended")
                    .required("end_session_url"),
            ),
        )
        .response("403", error("posted from another origin than PUBLIC_URL"))
        .response("503", error("the end of the session cannot be recorded"));
    paths.add_path_operation("/auth/logout", vec![HttpMethod::Post], logout.build());
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    const URL: &str = "https://hooks.example.com";

    fn doc(webhooks: &[Webhook], providers: &[Provider]) -> Value {
        document(&Inputs {
            public_url: URL,
            version: "1.2.3",
            webhooks: webhooks.iter().collect(),
            providers: providers.iter().collect(),
        })
    }

    fn scheme(name: &str, header: Option<&str>, encoding: Option<&str>) -> Scheme {
        Scheme::parse(name, header, encoding).expect("a scheme")
    }

    fn hook(name: &str, scheme: Scheme) -> Webhook {
        Webhook::example(name, scheme, &["whsec_c2VjcmV0LXNlY3JldA=="], None)
    }

    /// The header parameters of `POST /webhooks/{name}` by name: (required, pattern).
    fn headers(doc: &Value, name: &str) -> Vec<(String, bool, Option<String>)> {
        doc["paths"][format!("/webhooks/{name}")]["post"]["parameters"]
            .as_array()
            .map(|params| {
                params
                    .iter()
                    .map(|p| {
                        assert_eq!(p["in"], "header", "{p}");
                        (
                            p["name"].as_str().expect("a name").to_owned(),
                            p["required"] == true,
                            p["schema"]["pattern"].as_str().map(str::to_owned),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn operation<'a>(doc: &'a Value, name: &str) -> &'a Value {
        &doc["paths"][format!("/webhooks/{name}")]["post"]
    }

    fn statuses(op: &Value) -> Vec<String> {
        op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .cloned()
            .collect()
    }

    fn matches(pattern: &str, value: &str) -> bool {
        jsonschema::is_valid(
            &json!({ "type": "string", "pattern": pattern }),
            &json!(value),
        )
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_version_and_public_url() {
        let doc = doc(&[], &[]);
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "1.2.3");
        assert_eq!(doc["servers"], json!([{ "url": URL }]));
        let about = doc["info"]["description"].as_str().expect("a description");
        assert!(
            about.contains(&format!("[SQL API reference]({URL}/docs/sql)")),
            "{about}"
        );
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/.well-known/jwks.json",
            "/auth/session",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}: {doc}");
        }
        assert!(doc["paths"]["/auth/logout"]["post"].is_object(), "{doc}");
        assert_eq!(
            doc["components"]["schemas"][ERROR]["required"],
            json!(["error"])
        );
    }

    #[test]
    fn github_requires_its_signature_header_in_sha256_hex() {
        let doc = doc(&[hook("gh", scheme("github", None, None))], &[]);
        let headers = headers(&doc, "gh");
        let (name, required, pattern) = &headers[0];
        assert_eq!(name, "X-Hub-Signature-256");
        assert!(required);
        let pattern = pattern.as_deref().expect("a pattern");
        assert!(matches(pattern, &format!("sha256={}", "ab".repeat(32))));
        assert!(!matches(pattern, &"ab".repeat(32)));
        // The delivery id header is documented, not required.
        assert!(
            headers.contains(&("x-github-delivery".to_owned(), false, None)),
            "{headers:?}"
        );
        let op = operation(&doc, "gh");
        assert!(statuses(op).contains(&"401".to_owned()));
        let how = op["description"].as_str().expect("a description");
        assert!(how.contains("this page cannot sign for you"), "{how}");
        assert!(how.contains("openssl dgst -sha256 -hmac"), "{how}");
        assert!(op.get("security").is_none(), "{op}");
    }

    #[test]
    fn stripe_slack_and_standard_name_every_header_they_check() {
        let doc = doc(
            &[
                hook("st", scheme("stripe", None, None)),
                hook("sl", scheme("slack", None, None)),
                hook("sw", scheme("standard", None, None)),
            ],
            &[],
        );
        let stripe = headers(&doc, "st");
        assert_eq!(stripe.len(), 1, "{stripe:?}");
        assert_eq!(stripe[0].0, "Stripe-Signature");
        let pattern = stripe[0].2.as_deref().expect("a pattern");
        let hex = "0f".repeat(32);
        assert!(matches(pattern, &format!("t=1700000000,v1={hex}")));
        assert!(matches(pattern, &format!("t=1700000000,v1={hex},v1={hex}")));
        assert!(matches(pattern, &format!("t=1700000000,v1={hex},v0={hex}")));
        assert!(!matches(pattern, &format!("v1={hex}")));
        assert!(!matches(pattern, "t=1700000000"));
        assert!(operation(&doc, "st")["description"]
            .as_str()
            .is_some_and(|d| d.contains("JSON pointer /id")));

        let slack: Vec<_> = headers(&doc, "sl")
            .into_iter()
            .map(|h| (h.0, h.1))
            .collect();
        assert_eq!(
            slack,
            [
                ("X-Slack-Signature".to_owned(), true),
                ("X-Slack-Request-Timestamp".to_owned(), true)
            ]
        );

        let standard = headers(&doc, "sw");
        let names: Vec<_> = standard.iter().map(|h| (h.0.as_str(), h.1)).collect();
        assert_eq!(
            names,
            [
                ("webhook-id", true),
                ("webhook-timestamp", true),
                ("webhook-signature", true)
            ]
        );
        let signature = standard[2].2.as_deref().expect("a pattern");
        assert!(matches(
            signature,
            "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
        ));
        assert!(matches(signature, "v1,AAAA v1a,BBBB"));
        assert!(!matches(signature, "sha256=abc"));
        assert!(matches(
            standard[1].2.as_deref().expect("a pattern"),
            "1700000000"
        ));
    }

    #[test]
    fn a_generic_hmac_names_its_configured_header_and_encoding() {
        let doc = doc(
            &[hook(
                "h",
                scheme("hmac-sha256", Some("X-Sig"), Some("base64")),
            )],
            &[],
        );
        let headers = headers(&doc, "h");
        assert_eq!(headers[0].0, "x-sig");
        let pattern = headers[0].2.as_deref().expect("a pattern");
        let digest = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(matches(pattern, &digest));
        assert!(matches(pattern, &format!("sha256={digest}")));
        assert!(!matches(pattern, &"07".repeat(32)));
    }

    #[test]
    fn api_key_and_basic_are_security_schemes_and_none_needs_nothing() {
        let doc = doc(
            &[
                hook("k", scheme("api-key", None, None)),
                hook("b", scheme("basic", None, None)),
                hook("n", scheme("none", None, None)),
            ],
            &[],
        );
        assert_eq!(
            operation(&doc, "k")["security"],
            json!([{ "apiKeyBearer": [] }, { "apiKeyHeader": [] }])
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["apiKeyHeader"],
            json!({ "type": "apiKey", "in": "header", "name": "X-API-Key" })
        );
        assert_eq!(operation(&doc, "b")["security"], json!([{ "basic": [] }]));
        let none = operation(&doc, "n");
        assert!(
            none.get("security").is_none() && none.get("parameters").is_none(),
            "{none}"
        );
        for name in ["n", "k"] {
            let how = operation(&doc, name)["description"].to_string();
            assert!(!how.contains("cannot sign"), "{name}: {how}");
        }
        let statuses = statuses(none);
        assert!(!statuses.contains(&"401".to_owned()), "{statuses:?}");
        for status in ["200", "400", "404", "413", "415", "422", "500", "503"] {
            assert!(
                statuses.contains(&status.to_owned()),
                "{status}: {statuses:?}"
            );
        }
        assert_eq!(
            none["responses"]["503"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
    }

    #[test]
    fn the_json_schema_is_the_body_schema_as_written() {
        let schema = json!({
            "type": "object",
            "required": ["id"],
            "properties": { "id": { "$ref": "#/$defs/id" }, "kind": { "const": "order" } },
            "$defs": { "id": { "type": "integer", "minimum": 1 } },
            "if": { "required": ["kind"] }, "then": { "required": ["id"] }
        });
        let webhook = Webhook::example("orders", Scheme::None, &[], Some(schema.clone()));
        let doc = doc(&[webhook], &[]);
        // As written, but for the reference, which points where the schema now is.
        let mut placed = schema.clone();
        placed["properties"]["id"]["$ref"] = json!("#/components/schemas/webhook.orders/$defs/id");
        assert_eq!(doc["components"]["schemas"]["webhook.orders"], placed);
        assert_eq!(
            doc.pointer("/components/schemas/webhook.orders/$defs/id/minimum"),
            Some(&json!(1))
        );
        let body = &operation(&doc, "orders")["requestBody"];
        assert_eq!(body["required"], true);
        for content_type in ["application/json", "text/plain"] {
            assert_eq!(
                body["content"][content_type]["schema"]["$ref"],
                "#/components/schemas/webhook.orders",
                "{content_type}: {body}"
            );
        }
        // XML has no JSON payload to validate: refused with 422, so not
        // offered; a form's values are strings, which the schema's integer
        // never admits (schemathesis found the form documented here).
        for content_type in ["application/xml", "application/x-www-form-urlencoded"] {
            assert!(body["content"].get(content_type).is_none(), "{body}");
        }
        // Without a schema, text and form values say they hold no NUL.
        let plain = self::doc(&[Webhook::example("plain", Scheme::None, &[], None)], &[]);
        let content = &operation(&plain, "plain")["requestBody"]["content"];
        let form = &content["application/x-www-form-urlencoded"]["schema"];
        assert_eq!(form["propertyNames"]["pattern"], "^[^\\u0000]*$", "{form}");
        assert_eq!(content["text/plain"]["schema"]["pattern"], "^[^\\u0000]*$");
        assert_eq!(
            content["application/json"]["schema"]["$ref"],
            "#/components/schemas/StorableJson"
        );
        let storable = &plain["components"]["schemas"]["StorableJson"]["anyOf"];
        assert_eq!(storable[1]["pattern"], "^[^\\u0000]*$", "{storable}");
        assert_eq!(
            storable[3]["additionalProperties"]["$ref"],
            "#/components/schemas/StorableJson"
        );
    }

    #[test]
    fn if_none_match_matches_our_etag_weakly_or_a_star() {
        let tag = etag(b"{}");
        assert_eq!(tag, etag(b"{}"));
        assert_ne!(tag, etag(b"{ }"));
        let text = tag.to_str().expect("ASCII").to_owned();
        assert!(
            text.starts_with('"') && text.ends_with('"') && text.len() == 34,
            "{text}"
        );
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(value).expect("a value"),
            );
            none_match(&headers, &tag)
        };
        assert!(with(&text));
        assert!(with(&format!("W/{text}")));
        assert!(with(&format!("\"other\", {text}")));
        assert!(with("*"));
        assert!(!with("\"other\""));
        assert!(!with(text.trim_matches('"')));
        assert!(!none_match(&HeaderMap::new(), &tag));
    }

    #[test]
    fn only_references_are_rebased_not_literal_values() {
        let mut schema = json!({
            "items": [{ "$ref": "#" }, { "$ref": "https://example.com/s.json#/a" }],
            "const": { "$ref": "#/kept" },
            "enum": [{ "$ref": "#/kept" }],
            "properties": { "$ref": { "$ref": "#/$defs/x" } }
        });
        rebase_refs(&mut schema, "#/components/schemas/webhook.w");
        assert_eq!(
            schema,
            json!({
                "items": [
                    { "$ref": "#/components/schemas/webhook.w" },
                    { "$ref": "https://example.com/s.json#/a" }
                ],
                "const": { "$ref": "#/kept" },
                "enum": [{ "$ref": "#/kept" }],
                "properties": { "$ref": { "$ref": "#/components/schemas/webhook.w/$defs/x" } }
            })
        );
    }

    #[test]
    fn allowed_ips_add_403_and_a_handler_adds_its_own_answers() {
        let mut guarded = hook("guarded", Scheme::None);
        guarded.allowed = Some(vec!["10.0.0.0/8".parse().expect("a network")]);
        let mut handled = hook("handled", Scheme::None);
        handled.has_handler = true;
        let doc = doc(&[guarded, handled, hook("bare", Scheme::None)], &[]);
        let guarded = statuses(operation(&doc, "guarded"));
        assert!(guarded.contains(&"403".to_owned()) && !guarded.contains(&"default".to_owned()));
        // The networks themselves are not published.
        assert!(!doc.to_string().contains("10.0.0.0"), "{doc}");
        let handled = statuses(operation(&doc, "handled"));
        assert!(handled.contains(&"default".to_owned()) && !handled.contains(&"403".to_owned()));
        let bare = statuses(operation(&doc, "bare"));
        assert!(!bare.contains(&"403".to_owned()) && !bare.contains(&"default".to_owned()));
    }

    #[test]
    fn disabled_webhooks_are_left_out() {
        let mut off = hook("off", Scheme::None);
        off.enabled = false;
        let doc = doc(&[off, hook("on", Scheme::None)], &[]);
        assert!(doc["paths"].get("/webhooks/off").is_none());
        assert!(doc["paths"]["/webhooks/on"]["post"].is_object());
    }

    #[test]
    fn each_provider_gets_the_routes_of_its_protocol() {
        let ldap = Provider::example(
            "corp",
            "ldap",
            &json!({ "url": "ldap://127.0.0.1:389", "user_dn_template": "uid={username},dc=example" }),
            &json!({}),
        );
        let oauth2 = Provider::example(
            "gh",
            "oauth2",
            &json!({
                "authorize_url": "https://idp.example/authorize",
                "token_url": "https://idp.example/token",
                "userinfo_url": "https://idp.example/userinfo",
                "client_id": "sidecar"
            }),
            &json!({ "client_secret": "s3cret-client" }),
        );
        assert!(ldap.protocol.is_ok() && oauth2.protocol.is_ok());
        let doc = doc(&[], &[ldap, oauth2]);
        let paths = &doc["paths"];
        assert!(paths["/auth/corp/login"]["post"]["requestBody"].is_object());
        assert!(paths["/auth/corp/login"].get("get").is_none());
        assert!(paths.get("/auth/corp/callback").is_none());
        assert!(paths["/auth/gh/login"]["get"]["responses"]["302"].is_object());
        assert!(paths["/auth/gh/callback"]["get"].is_object());
        assert!(paths["/auth/gh/callback"]["post"].is_object());
        assert!(paths.get("/auth/gh/metadata").is_none());
    }

    #[test]
    fn no_secret_or_hash_of_one_appears_anywhere() {
        let secrets = [
            "whsec_c3RhbmRhcmQtc2VjcmV0LXZhbHVl",
            "github-secret-value-1",
            "stripe-secret-value-2",
            "slack-secret-value-3",
            "hmac-secret-value-4",
            "basic-user:basic-password-5",
        ];
        let webhooks = [
            Webhook::example("sw", scheme("standard", None, None), &secrets[..1], None),
            Webhook::example("gh", scheme("github", None, None), &secrets[1..2], None),
            Webhook::example("st", scheme("stripe", None, None), &secrets[2..3], None),
            Webhook::example("sl", scheme("slack", None, None), &secrets[3..4], None),
            Webhook::example(
                "h",
                scheme("hmac-sha256", Some("x-sig"), None),
                &secrets[4..5],
                Some(json!({ "type": "object" })),
            ),
            Webhook::example("b", scheme("basic", None, None), &secrets[5..], None),
        ];
        let providers = [
            Provider::example(
                "corp",
                "ldap",
                &json!({
                    "url": "ldap://127.0.0.1:389", "search_base": "dc=example",
                    "search_filter": "(uid={username})", "bind_dn": "cn=reader,dc=example"
                }),
                &json!({ "bind_password": "ldap-bind-password-6" }),
            ),
            Provider::example(
                "gh",
                "oauth2",
                &json!({
                    "authorize_url": "https://idp.example/authorize",
                    "token_url": "https://idp.example/token",
                    "userinfo_url": "https://idp.example/userinfo",
                    "client_id": "sidecar"
                }),
                &json!({ "client_secret": "oauth2-client-secret-7" }),
            ),
        ];
        assert!(providers.iter().all(|p| p.protocol.is_ok()));
        let text = doc(&webhooks, &providers).to_string();
        let mut forbidden: Vec<String> = vec![
            "ldap-bind-password-6".into(),
            "oauth2-client-secret-7".into(),
            "c3RhbmRhcmQtc2VjcmV0LXZhbHVl".into(),
            "basic-password-5".into(),
        ];
        for secret in secrets {
            forbidden.push(secret.to_owned());
            let hash = Sha256::digest(secret.as_bytes());
            forbidden.push(hash.iter().map(|b| format!("{b:02x}")).collect());
            forbidden.push(base64::engine::general_purpose::STANDARD.encode(hash));
        }
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} is in the document"
            );
        }
        // The document does describe them all: the test looks where secrets could go.
        for path in [
            "/webhooks/sw",
            "/webhooks/b",
            "/auth/corp/login",
            "/auth/gh/callback",
        ] {
            assert!(text.contains(path), "{path}");
        }
    }
}
