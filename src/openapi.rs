//! The OpenAPI 3 document for the service, served at `GET /openapi.json`. Ops come
//! from [`http::OPS`] and error codes from [`error::ERROR_CODES`]; each op's fields
//! are described in [`op_doc`], which fails the OpenAPI test for an op it lacks.

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use crate::error::ERROR_CODES;
use crate::http::OPS;

/// Request and reply fields of one op: `(name, JSON type, description)`.
pub struct OpDoc {
    pub summary: &'static str,
    pub request: &'static [(&'static str, &'static str, &'static str)],
    pub required: &'static [&'static str],
    pub reply: &'static [(&'static str, &'static str, &'static str)],
}

/// The fields of `op`, or `None` for an op without documentation.
pub fn op_doc(op: &str) -> Option<OpDoc> {
    match op {
        "login" => Some(OpDoc {
            summary: "Without otp/code: send a one-time code. With it: verify the code and return the user's access token.",
            request: &[
                ("appid", "string", "The app's id (e.g. its bundle id); a code is valid only for the app that asked for it. At most 128 characters."),
                ("phone", "string", "The user's number; spaces, dashes, dots, parentheses, a leading + and leading zeros are dropped; 9-15 digits must remain."),
                ("email", "string", "Instead of phone, for e-mail logins."),
                ("name", "string", "Optional display name (at most 64 characters), passed to upstream useradd."),
                ("otp", "string", "The code, when verifying."),
                ("code", "string", "Older name of otp."),
                ("device", "string", "Optional installation id for multi-device logins (at most 128 characters)."),
            ],
            required: &["appid"],
            reply: &[
                ("token", "string", "The user's access token (verify only)."),
                ("uid", "string", "Upstream user id, a number or a string as upstream gave it (verify only)."),
                ("phone", "string", "The normalised phone (verify of a phone login)."),
                ("email", "string", "The normalised e-mail address (verify of an e-mail login)."),
                ("linked", "object", "Multi-device field passed through from upstream, when present."),
                ("linkto", "object", "Multi-device field passed through from upstream, when present."),
            ],
        }),
        "logout" => Some(OpDoc {
            summary: "End this session, or with all:true every session of the user. An already ended token still succeeds.",
            request: &[TOKEN_FIELD, ("all", "boolean", "End every session of the user (1, true or yes).")],
            required: &["token"],
            reply: &[("ended", "integer", "How many sessions were ended.")],
        }),
        "devices" => Some(OpDoc {
            summary: "The caller's live sessions, most recently used first, without tokens.",
            request: &[TOKEN_FIELD],
            required: &["token"],
            reply: &[("devices", "array", "Entries with device, appid, created, last_seen and current (the session making the request).")],
        }),
        "getcontacts" => Some(OpDoc {
            summary: "Record uploaded phones as the caller's contacts and return those that use the app; without phones, the contacts changed since ts.",
            request: &[
                TOKEN_FIELD,
                ("phones", "string", "Phones as a JSON array or a comma-separated list; at most MAX_CONTACTS_PER_REQUEST."),
                ("ts", "integer", "Without phones: only contacts changed at or after this time (unix seconds). Default 0."),
                ("reset", "boolean", "Forget the caller's previous contacts first."),
                ("cursor", "string", "Continue a reply that had more:true."),
            ],
            required: &["token"],
            reply: &[
                ("contacts", "array", "Entries with phone, name, status, photo and ts; never the caller, never a non-user."),
                ("more", "boolean", "More entries follow; ask again with cursor."),
                ("cursor", "string", "Where the next page starts (with more:true)."),
                ("invalid", "integer", "Uploaded entries that were not phones."),
                ("ts", "integer", "The value to send as ts next time."),
            ],
        }),
        "delcontacts" => Some(OpDoc {
            summary: "Remove phones from the caller's contacts.",
            request: &[TOKEN_FIELD, ("phones", "string", "Phones as a JSON array or a comma-separated list.")],
            required: &["token", "phones"],
            reply: &[("removed", "integer", "How many contacts were removed."), ("invalid", "integer", "Entries that were not phones.")],
        }),
        "profile" => Some(OpDoc {
            summary: "Change the caller's name, status and/or photo; contacts see the change at their next sync.",
            request: &[
                TOKEN_FIELD,
                ("name", "string", "At most 64 characters."),
                ("status", "string", "At most 140 characters."),
                ("photo", "string", "An http(s) URL, at most 512 characters."),
            ],
            required: &["token"],
            reply: &[PROFILE_FIELD],
        }),
        "me" => Some(OpDoc {
            summary: "The caller's own profile.",
            request: &[TOKEN_FIELD],
            required: &["token"],
            reply: &[PROFILE_FIELD],
        }),
        _ => None,
    }
}

/// Session ops also take the token as `Authorization: Bearer <token>`.
const TOKEN_FIELD: (&str, &str, &str) = ("token", "string", "The access token from login (or send Authorization: Bearer).");
const PROFILE_FIELD: (&str, &str, &str) = ("profile", "object", "phone or email, name, status, photo, ts and uid.");

fn properties(fields: &[(&str, &str, &str)]) -> Map<String, Value> {
    fields.iter().map(|(name, kind, about)| (name.to_string(), json!({ "type": kind, "description": about }))).collect()
}

fn json_reply(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// Builds the document; an op in [`OPS`] without [`op_doc`] is left out (and the test fails).
pub fn document() -> Value {
    let mut schemas = Map::new();
    let mut requests = Vec::new();
    let mut replies = Vec::new();
    for op in OPS {
        let Some(doc) = op_doc(op) else { continue };
        let name = format!("{}{}", op[..1].to_uppercase(), &op[1..]);
        let mut request = properties(doc.request);
        request.insert("op".into(), json!({ "type": "string", "enum": [op] }));
        let mut required = vec!["op"];
        required.extend(doc.required);
        schemas.insert(
            format!("{name}Request"),
            json!({ "type": "object", "description": doc.summary, "properties": request, "required": required }),
        );
        let mut reply = properties(doc.reply);
        reply.insert("op".into(), json!({ "type": "string", "enum": [op] }));
        schemas.insert(
            format!("{name}Reply"),
            json!({ "allOf": [{ "$ref": "#/components/schemas/Reply" }, { "type": "object", "properties": reply }] }),
        );
        requests.push(json!({ "$ref": format!("#/components/schemas/{name}Request") }));
        replies.push(json!({ "$ref": format!("#/components/schemas/{name}Reply") }));
    }
    let codes: Vec<&str> = ERROR_CODES.iter().map(|(code, _, _)| *code).collect();
    let code_list: Vec<String> = ERROR_CODES.iter().map(|(code, status, about)| format!("{code} (HTTP {status}): {about}")).collect();
    schemas.insert(
        "Reply".into(),
        json!({
            "type": "object",
            "required": ["op", "result", "ts"],
            "properties": {
                "op": { "type": "string", "description": "The op as sent." },
                "result": { "type": "boolean" },
                "ts": { "type": "integer", "description": "Server time, unix seconds." },
            },
        }),
    );
    schemas.insert(
        "Error".into(),
        json!({
            "allOf": [{ "$ref": "#/components/schemas/Reply" }, {
                "type": "object",
                "required": ["error", "errmsg"],
                "properties": {
                    "error": { "type": "string", "enum": codes, "description": code_list.join("\n") },
                    "errmsg": { "type": "string", "description": "Human explanation for the app developer." },
                    "retry_after": { "type": "integer", "description": "Seconds to wait (RATELIMIT only; also a Retry-After header)." },
                },
            }],
        }),
    );
    let mut error_replies = Map::new();
    for (code, status, _) in ERROR_CODES {
        let entry =
            error_replies.entry(status.to_string()).or_insert_with(|| json_reply("", json!({ "$ref": "#/components/schemas/Error" })));
        let description = entry["description"].as_str().unwrap_or_default();
        entry["description"] = if description.is_empty() { (*code).into() } else { format!("{description}, {code}").into() };
    }
    let mut api_responses = Map::new();
    api_responses.insert("200".into(), json_reply("Success", json!({ "oneOf": replies })));
    api_responses.extend(error_replies);
    let api_request = json!({ "oneOf": requests, "discriminator": { "propertyName": "op" } });
    let status = |what: &str| json_reply(what, json!({ "type": "object", "properties": { "status": { "type": "string" } } }));
    json!({
        "openapi": "3.0.3",
        "info": { "title": "otpgate", "version": env!("CARGO_PKG_VERSION"), "description": env!("CARGO_PKG_DESCRIPTION") },
        "paths": {
            "/api": {
                "post": {
                    "summary": "Call an op; the body is a JSON object or a form, with query-string fields merged in (body wins).",
                    "requestBody": { "required": true, "content": {
                        "application/json": { "schema": api_request },
                        "application/x-www-form-urlencoded": { "schema": api_request },
                    } },
                    "responses": api_responses,
                },
                "get": {
                    "summary": "Call an op with query-string fields (same fields as POST).",
                    "parameters": [{ "name": "op", "in": "query", "required": true, "schema": { "type": "string", "enum": OPS } }],
                    "responses": api_responses,
                },
            },
            "/healthz": { "get": { "summary": "The process is alive.", "responses": { "200": status("Alive") } } },
            "/readyz": { "get": {
                "summary": "The database is writable and, when READYZ_UPSTREAM_CACHE_SECS is set, upstream answers.",
                "responses": { "200": status("Ready"), "503": status("Not ready; checks says why") },
            } },
            "/metrics": { "get": {
                "summary": "Prometheus metrics.",
                "responses": { "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } } },
            } },
        },
        "components": { "schemas": schemas },
    })
}

pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
