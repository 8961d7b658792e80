//! The OpenAPI 3 document for the service, served at `GET /openapi.json`. Ops come
//! from [`Op::ALL`] and error codes from [`ErrorCode::ALL`]; each op's fields are
//! described in its own file, `api/ops/<op>.rs` ([`Op::doc`]), which does not compile
//! without its description.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use crate::api::op::API_PATHS;
use crate::api::ops::Op;
use crate::api::AppState;
use crate::config::Dialect;
use crate::domain::error::ErrorCode;

/// Characters an `appid` may not hold: controls and bidirectional formatting.
const NOT_IN_APPID: &str = r"\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069";

/// What the code checks of a field beyond its type, as schema keywords: an `appid` is
/// at most 128 characters, not blank once trimmed, and free of control characters.
fn constraints(name: &str) -> Value {
    match name {
        "appid" => {
            let allowed = format!("[^{NOT_IN_APPID}]*");
            json!({ "minLength": 1, "maxLength": 128, "pattern": format!("^{allowed}[^\\s{NOT_IN_APPID}]{allowed}$") })
        }
        _ => json!({}),
    }
}

fn properties(fields: &[(&str, &str, &str)]) -> Map<String, Value> {
    fields
        .iter()
        .map(|(name, kind, about)| {
            let mut schema = json!({ "type": kind, "description": about });
            if let (Some(schema), Value::Object(more)) = (schema.as_object_mut(), constraints(name)) {
                schema.extend(more);
            }
            (name.to_string(), schema)
        })
        .collect()
}

fn json_reply(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// Builds the document for replies in `dialect`.
pub fn document(dialect: Dialect) -> Value {
    let mut schemas = Map::new();
    let mut requests = Vec::new();
    let mut replies = Vec::new();
    // `result` keeps a success apart from an error whatever the op: the 200 reply's
    // branches must not overlap, and `op` alone is the op as sent, in errors too.
    let (ok, fail) = match dialect {
        Dialect::Mesibo => (json!("OK"), json!("FAIL")),
        Dialect::Json => (json!(true), json!(false)),
    };
    for op in Op::ALL {
        let doc = op.doc();
        let op = op.as_str();
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
        reply.insert("result".into(), json!({ "enum": [ok] }));
        schemas.insert(
            format!("{name}Reply"),
            json!({ "allOf": [{ "$ref": "#/components/schemas/Reply" }, { "type": "object", "properties": reply }] }),
        );
        requests.push(json!({ "$ref": format!("#/components/schemas/{name}Request") }));
        replies.push(json!({ "$ref": format!("#/components/schemas/{name}Reply") }));
    }
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    let code_list: Vec<String> = ErrorCode::ALL.iter().map(|code| format!("{code} (HTTP {}): {}", code.status(), code.meaning())).collect();
    schemas.insert(
        "Reply".into(),
        json!({
            "type": "object",
            "required": ["op", "result", "ts"],
            "properties": {
                "op": { "type": "string", "description": "The op as sent." },
                "result": match dialect {
                    Dialect::Mesibo => json!({ "type": "string", "enum": ["OK", "FAIL"] }),
                    Dialect::Json => json!({ "type": "boolean" }),
                },
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
                    "result": { "enum": [fail] },
                    "errmsg": { "type": "string", "description": "Human explanation for the app developer." },
                    "retry_after": { "type": "integer", "description": "Seconds to wait (RATELIMIT only; also a Retry-After header)." },
                },
            }],
        }),
    );
    let api_responses = match dialect {
        Dialect::Json => {
            let mut responses = Map::new();
            responses.insert("200".into(), json_reply("Success", json!({ "oneOf": replies })));
            for code in ErrorCode::ALL {
                add_error(&mut responses, &code.status().to_string(), code.as_str());
            }
            responses
        }
        // Application errors answer 200 with result FAIL; only a body over the limit keeps its 400.
        Dialect::Mesibo => {
            let mut responses = Map::new();
            let error = json!({ "$ref": "#/components/schemas/Error" });
            responses.insert(
                "200".into(),
                json_reply(
                    "Success (result OK), or an application error (result FAIL) with one of",
                    json!({ "oneOf": replies.iter().chain([&error]).collect::<Vec<_>>() }),
                ),
            );
            for code in ErrorCode::ALL {
                add_error(&mut responses, "200", code.as_str());
            }
            add_error(&mut responses, "400", "BADREQUEST");
            responses
        }
    };
    let api_request = json!({ "oneOf": requests, "discriminator": { "propertyName": "op" } });
    // The token may come as a field or as a bearer header; login needs neither.
    let session_or_none = json!([{ "session": [] }, {}]);
    let status = |what: &str| json_reply(what, json!({ "type": "object", "properties": { "status": { "type": "string" } } }));
    let api_path = json!({
        "post": {
            "summary": "Call an op; the body is a JSON object (whatever the Content-Type; JavaScript-style objects too), a form or a multipart form, with query-string fields merged in (body wins).",
            "security": session_or_none,
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": api_request },
                "application/x-www-form-urlencoded": { "schema": api_request },
                "multipart/form-data": { "schema": api_request },
            } },
            "responses": api_responses,
        },
        "get": {
            "summary": "Call an op with query-string fields (same fields as POST).",
            "security": session_or_none,
            "parameters": [{ "name": "op", "in": "query", "required": true, "schema": { "type": "string", "enum": Op::ALL.map(Op::as_str) } }],
            "responses": api_responses,
        },
    });
    let mut paths: Map<String, Value> = API_PATHS.iter().map(|path| (path.to_string(), api_path.clone())).collect();
    paths.extend([
        ("/healthz".to_string(), json!({ "get": { "summary": "The process is alive.", "responses": { "200": status("Alive") } } })),
        ("/readyz".to_string(), json!({ "get": {
            "summary": "The database is writable and, when READYZ_UPSTREAM_CACHE_SECS is set, upstream answers.",
            "responses": { "200": status("Ready"), "503": status("Not ready; checks says why") },
        } })),
        ("/metrics".to_string(), json!({ "get": {
            "summary": "Prometheus metrics.",
            "responses": { "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } } },
        } })),
        ("/files/{name}".to_string(), json!({ "get": {
            "summary": "A file uploaded with op=upload, by the name its reply gave (urls.download + photo, or file/url). Names are content hashes: cached for good.",
            "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[0-9a-f]{64}\\.[a-z0-9]{1,5}$" } }],
            "responses": {
                "200": { "description": "The file: images, audio, video and PDF with their type, anything else as an application/octet-stream attachment" },
                "404": { "description": "No such file" },
            },
        } })),
    ]);
    paths.extend(receipt_paths());
    paths.extend(operator_paths());
    schemas.extend(operator_schemas());
    let dialect_note = match dialect {
        Dialect::Mesibo => {
            "Replies in the mesibo dialect (API_DIALECT=mesibo): result is \"OK\" or \"FAIL\", and application errors answer HTTP 200."
        }
        Dialect::Json => "Replies in the json dialect (API_DIALECT=json): result is a boolean, and each error has its HTTP status.",
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "otpgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("{} {dialect_note}", env!("CARGO_PKG_DESCRIPTION")),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "operator": { "type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN" },
                "session": { "type": "http", "scheme": "bearer", "description": "The access token from login, instead of the token field (or auth, for upload)." },
            },
        },
    })
}

/// The providers' delivery receipts (`receipts.rs`): not for apps; each provider signs
/// its own, and without `PUBLIC_URL` none is taken (404).
fn receipt_paths() -> Vec<(String, Value)> {
    let text = |description: &str| json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } });
    let responses = json!({
        "200": { "description": "Taken; a report on a message this service did not send (or has sent again since) is ignored" },
        "400": text("Signed, but not a delivery receipt"),
        "403": text("The signature is missing, stale or made with no configured key"),
        "404": text("PUBLIC_URL is not set: no receipts are taken"),
        "413": text("The body is larger than 64 KiB"),
    });
    let fields = json!({ "type": "object", "additionalProperties": { "type": "string" } });
    let body = |media: &str| json!({ "required": true, "content": { media: { "schema": fields } } });
    let query = |names: &[&str]| -> Value {
        names.iter().map(|name| json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string" } })).collect()
    };
    let post = |summary: &str, media: &str| json!({ "summary": summary, "requestBody": body(media), "responses": responses });
    let get = |summary: &str, names: &[&str]| json!({ "summary": summary, "parameters": query(names), "responses": responses });
    vec![
        (
            "/delivery/twilio".into(),
            json!({ "post": post("A Twilio status callback, signed with X-Twilio-Signature.", "application/x-www-form-urlencoded") }),
        ),
        (
            "/delivery/vonage".into(),
            json!({
                "post": post("A Vonage delivery receipt, signed with its sig field.", "application/json"),
                "get": get("A Vonage delivery receipt in the query string.", &["messageId", "status", "err-code", "timestamp", "sig"]),
            }),
        ),
        (
            "/delivery/messagebird".into(),
            json!({
                "get": get("A MessageBird status report, signed with MessageBird-Signature-JWT.", &["id", "status", "statusErrorCode", "statusDatetime"]),
                "post": post("A MessageBird status report with a body.", "application/json"),
            }),
        ),
        (
            "/delivery/whatsapp".into(),
            json!({
                "post": post("A WhatsApp Cloud API notification, signed with X-Hub-Signature-256.", "application/json"),
                "get": {
                    "summary": "Meta's check of the webhook: the challenge is echoed when the verify token is one of the configured instances'.",
                    "parameters": query(&["hub.mode", "hub.challenge", "hub.verify_token"]),
                    "responses": {
                        "200": text("The challenge"),
                        "403": text("Not one of our verify tokens"),
                        "404": text("PUBLIC_URL is not set: no receipts are taken"),
                    },
                },
            }),
        ),
    ]
}

/// The operator API's reply bodies, as `admin.rs` writes them.
fn operator_schemas() -> Vec<(String, Value)> {
    let integer = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let object = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties });
    let session = object(
        &["session", "appid", "device", "created", "last_seen", "expires", "push"],
        json!({ "session": string, "appid": string, "device": string, "created": integer, "last_seen": integer, "expires": integer,
            "push": { "type": "boolean" } }),
    );
    let linked = object(&["address", "kind", "linked_at"], json!({ "address": string, "kind": string, "linked_at": integer }));
    let user = object(
        &["id", "uid", "name", "created", "last_login"],
        json!({ "id": integer, "phone": string, "email": string, "account": string, "uid": string, "name": string,
            "created": integer, "last_login": integer }),
    );
    let event = object(&["at", "event", "detail"], json!({ "at": integer, "event": string, "detail": string }));
    vec![
        (
            "OperatorError".into(),
            object(
                &["code", "error"],
                json!({ "code": { "type": "string", "description": "AUTHFAIL, RATELIMIT, NOUSER, BADPARAM, …" },
                "error": { "type": "string", "description": "Human explanation." } }),
            ),
        ),
        (
            "OperatorUser".into(),
            object(
                &["user", "sessions", "linked"],
                json!({ "user": user, "sessions": { "type": "array", "items": session },
                "linked": { "type": "array", "items": linked } }),
            ),
        ),
        ("OperatorEvents".into(), object(&["events"], json!({ "events": { "type": "array", "items": event } }))),
        ("OperatorEnded".into(), object(&["ended"], json!({ "ended": integer }))),
        ("OperatorDeleted".into(), object(&["deleted"], json!({ "deleted": { "type": "boolean" } }))),
    ]
}

/// The operator API: served only on the ADMIN_BIND listener, never on the public port.
/// Every operation may answer 401 (no or wrong token) and 429 (the client IP is out of
/// failures and did not send the right token).
fn operator_paths() -> Vec<(String, Value)> {
    let on_admin_bind = json!([{ "url": "http://{admin_bind}", "description": "the ADMIN_BIND listener only; the public port answers 404",
        "variables": { "admin_bind": { "default": "127.0.0.1:9090" } } }]);
    let reply = |what: &str, schema: &str| json_reply(what, json!({ "$ref": format!("#/components/schemas/{schema}") }));
    let refused = |what: &str| reply(what, "OperatorError");
    let responses = |ok: Value, more: &[(&str, &str)]| {
        let mut responses = Map::new();
        responses.insert("200".into(), ok);
        responses.insert("401".into(), refused("No or wrong bearer token (AUTHFAIL; WWW-Authenticate: Bearer)"));
        let mut limited =
            refused("RATELIMIT: this client IP is out of failed logins (ADMIN_FAILURES_PER_IP_PER_HOUR) and did not send the right token");
        limited["headers"] =
            json!({ "Retry-After": { "description": "Seconds until the IP's hour is over", "schema": { "type": "integer" } } });
        responses.insert("429".into(), limited);
        for (status, what) in more {
            responses.insert(status.to_string(), refused(what));
        }
        Value::Object(responses)
    };
    let operation = |summary: &str, parameters: Value, responses: Value| json!({ "summary": summary, "security": [{ "operator": [] }], "parameters": parameters, "responses": responses });
    let id = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } });
    let user_reply = reply("The user (id, phone or email, uid, name, created, last_login) and their live sessions (session, appid, device, created, last_seen, expires, push)", "OperatorUser");
    let lookup = json!(["phone", "email", "uid"].map(|name| json!({ "name": name, "in": "query", "schema": { "type": "string" } })));
    let ended = reply("How many sessions ended; the devices' next call answers AUTHFAIL", "OperatorEnded");
    let no_user = ("404", "No such user (NOUSER)");
    let bad_id = ("400", "The id is not a number (BADPARAM)");
    let path = |operations: Value| {
        let mut path = operations;
        path["servers"] = on_admin_bind.clone();
        path
    };
    vec![
        (
            "/admin/users".to_string(),
            path(json!({ "get": operation(
                "Find a user by exactly one of phone, email or uid. Recorded in the audit trail (operator_lookup).",
                lookup.clone(),
                responses(user_reply.clone(), &[("400", "Not exactly one of phone, email, uid, or a malformed one (BADPARAM)"), no_user]),
            ) })),
        ),
        (
            "/admin/users/{id}".to_string(),
            path(json!({
                "get": operation("A user by local id, with their live sessions. Recorded in the audit trail (operator_lookup).",
                    json!([id]), responses(user_reply, &[bad_id, no_user])),
                "delete": operation(
                    "Delete the account as op=deleteaccount does, without a code: every row of the user, their photo file, and the user on the platform (userdel, retried until taken).",
                    json!([id]), responses(reply("Deleted", "OperatorDeleted"), &[bad_id, no_user])),
            })),
        ),
        (
            "/admin/events".to_string(),
            path(json!({ "get": operation(
                "The security events of an address, newest first (at most 1000), kept AUDIT_RETENTION_DAYS: login, login_failed, locked_out, delivery_failed, sessions_revoked, operator_lookup, account_deleted, address_linked, address_unlinked. By phone or email: events outlive users. The lookup is recorded (operator_lookup) in this trail and the operator trail.",
                lookup,
                responses(reply("The events", "OperatorEvents"), &[("400", "Not exactly one of phone, email, or a uid (BADPARAM)")]),
            ) })),
        ),
        (
            "/admin/events/operator".to_string(),
            path(json!({ "get": operation(
                "The operator API's own events, newest first (at most 1000), kept AUDIT_RETENTION_DAYS: operator_lookup and sessions_revoked (who, and the user's id and masked address), and operator_auth_failed, whose detail is the client IP and `no token` or `wrong token`. A client IP with ADMIN_FAILURES_PER_IP_PER_HOUR failures is answered 429 for any token but the right one until its hour is over.",
                json!([]),
                responses(reply("The events", "OperatorEvents"), &[]),
            ) })),
        ),
        (
            "/admin/users/{id}/sessions".to_string(),
            path(
                json!({ "delete": operation("End every session of the user.", json!([id]), responses(ended.clone(), &[bad_id, no_user])) }),
            ),
        ),
        (
            "/admin/users/{id}/sessions/{session}".to_string(),
            path(json!({ "delete": operation(
                "End one session of the user, by the session id the user's entry lists.",
                json!([id, { "name": "session", "in": "path", "required": true, "schema": { "type": "string" } }]),
                responses(ended, &[bad_id, no_user]),
            ) })),
        ),
    ]
}

/// Lists `code` in the description of the reply with HTTP `status`.
fn add_error(responses: &mut Map<String, Value>, status: &str, code: &str) {
    let entry = responses.entry(status.to_string()).or_insert_with(|| json_reply("", json!({ "$ref": "#/components/schemas/Error" })));
    let description = entry["description"].as_str().unwrap_or_default();
    entry["description"] = match description {
        "" => code.into(),
        _ if description.ends_with("of") => format!("{description} {code}").into(),
        _ => format!("{description}, {code}").into(),
    };
}

pub async fn serve(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document(state.http.dialect))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `value` is valid against `schema` of `doc`, for the keywords this document
    /// uses (`$ref`, `allOf`, `oneOf`, `type`, `enum`, `required`, `properties`,
    /// `minLength`, `maxLength`; `pattern` is not read).
    fn valid(doc: &Value, schema: &Value, value: &Value) -> bool {
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.trim_start_matches("#/components/schemas/");
            return valid(doc, &doc["components"]["schemas"][name], value);
        }
        let type_ok = match schema["type"].as_str() {
            Some("object") => value.is_object(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("boolean") => value.is_boolean(),
            Some("array") => value.is_array(),
            _ => true,
        };
        let length = value.as_str().map(|text| text.chars().count() as u64);
        let within = |keyword: &str, ok: fn(u64, u64) -> bool| match (schema[keyword].as_u64(), length) {
            (Some(bound), Some(length)) => ok(length, bound),
            _ => true,
        };
        let list = |keyword: &str| schema[keyword].as_array().cloned().unwrap_or_default();
        type_ok
            && within("minLength", |length, bound| length >= bound)
            && within("maxLength", |length, bound| length <= bound)
            && schema["enum"].as_array().is_none_or(|allowed| allowed.contains(value))
            && list("required").iter().all(|name| value.get(name.as_str().unwrap()).is_some())
            && schema["properties"].as_object().is_none_or(|properties| {
                properties.iter().all(|(name, property)| value.get(name).is_none_or(|field| valid(doc, property, field)))
            })
            && list("allOf").iter().all(|part| valid(doc, part, value))
            && (schema["oneOf"].is_null() || branches(doc, schema, value) == 1)
    }

    /// How many branches of `schema`'s `oneOf` `value` is valid against.
    fn branches(doc: &Value, schema: &Value, value: &Value) -> usize {
        schema["oneOf"].as_array().unwrap().iter().filter(|branch| valid(doc, branch, value)).count()
    }

    fn reply_schema<'a>(doc: &'a Value, status: &str) -> &'a Value {
        &doc["paths"]["/api"]["post"]["responses"][status]["content"]["application/json"]["schema"]
    }

    #[test]
    fn every_reply_is_valid_against_exactly_one_branch_of_its_schema() {
        for (dialect, ok, fail, error_status) in
            [(Dialect::Mesibo, json!("OK"), json!("FAIL"), "200"), (Dialect::Json, json!(true), json!(false), "401")]
        {
            let doc = document(dialect);
            let success = json!({ "op": "me", "result": ok, "ts": 1, "profile": {}, "linked": [] });
            assert_eq!(branches(&doc, reply_schema(&doc, "200"), &success), 1, "{dialect:?}: {success}");
            let error = json!({ "op": "me", "result": fail, "ts": 1, "error": "AUTHFAIL", "errmsg": "log in again" });
            let schema = reply_schema(&doc, error_status);
            assert!(valid(&doc, schema, &error), "{dialect:?}: {error}");
            if schema["oneOf"].is_array() {
                assert_eq!(branches(&doc, schema, &error), 1, "{dialect:?}: an error is an error, not also the op's reply");
            }
            let unknown_op = json!({ "op": "nosuch", "result": fail, "ts": 1, "error": "BADOP", "errmsg": "no such op" });
            assert!(valid(&doc, reply_schema(&doc, if dialect == Dialect::Json { "400" } else { "200" }), &unknown_op));
        }
    }

    #[test]
    fn no_op_requires_the_token_field_that_a_bearer_header_replaces() {
        for dialect in [Dialect::Mesibo, Dialect::Json] {
            let doc = document(dialect);
            for op in Op::ALL.map(Op::as_str) {
                let name = format!("{}{}Request", op[..1].to_uppercase(), &op[1..]);
                let request = &doc["components"]["schemas"][&name];
                assert!(!request["required"].as_array().unwrap().contains(&json!("token")), "{name} requires token");
                let by_header = json!({ "op": op, "appid": "com.example.app", "phones": "18005550001", "gid": 1, "m": "18005550001" });
                assert!(valid(&doc, request, &by_header), "{name}: a request whose token is a header is valid");
            }
            assert_eq!(doc["components"]["securitySchemes"]["session"]["scheme"], "bearer");
            for method in ["get", "post"] {
                assert_eq!(doc["paths"]["/api"][method]["security"], json!([{ "session": [] }, {}]), "{method}: the header is optional");
            }
        }
    }

    #[test]
    fn a_blank_or_overlong_appid_is_not_valid() {
        let doc = document(Dialect::Json);
        for request in ["Login", "Deleteaccount", "Link"] {
            let appid = &doc["components"]["schemas"][format!("{request}Request")]["properties"]["appid"];
            assert!(valid(&doc, appid, &json!("com.example.app")));
            assert!(!valid(&doc, appid, &json!("")), "{request}: the code answers MISSINGAPPID");
            assert!(!valid(&doc, appid, &json!("a".repeat(129))), "{request}: the code answers BADPARAM");
            // Blank and control characters are left to the pattern: anchored, one non-space.
            let allowed = format!("[^{NOT_IN_APPID}]*");
            assert_eq!(appid["pattern"], format!("^{allowed}[^\\s{NOT_IN_APPID}]{allowed}$"));
        }
    }

    #[test]
    fn the_characters_an_appid_may_not_hold_are_those_the_code_refuses() {
        let ranges: Vec<(u32, u32)> = NOT_IN_APPID
            .split("\\u")
            .skip(1)
            .map(|item| u32::from_str_radix(&item[..4], 16).unwrap())
            .zip(NOT_IN_APPID.split("\\u").skip(1).map(|item| item.ends_with('-')))
            .fold(Vec::new(), |mut ranges, (code, opens_range)| {
                match ranges.last_mut() {
                    Some((_, end)) if *end == u32::MAX => *end = code,
                    _ => ranges.push((code, if opens_range { u32::MAX } else { code })),
                }
                ranges
            });
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let in_pattern = ranges.iter().any(|&(start, end)| (start..=end).contains(&u32::from(c)));
            let refused = crate::domain::account::refuse_control_characters("appid", &c.to_string()).is_err();
            assert_eq!(in_pattern, refused, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn every_operator_operation_documents_its_refusals_as_sent() {
        let doc = document(Dialect::Mesibo);
        let refusal = json!({ "code": "RATELIMIT", "error": "too many failed operator logins from 192.0.2.7; retry in 60 seconds" });
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap().iter().filter(|(path, _)| path.starts_with("/admin/")) {
            for method in ["get", "delete"].into_iter().filter(|method| item[method].is_object()) {
                let responses = &item[method]["responses"];
                for status in ["401", "429"] {
                    let schema = &responses[status]["content"]["application/json"]["schema"];
                    assert!(valid(&doc, schema, &refusal), "{method} {path} {status}");
                    assert!(!valid(&doc, schema, &json!({ "error": "no code" })), "{method} {path} {status}");
                }
                assert_eq!(responses["429"]["headers"]["Retry-After"]["schema"]["type"], "integer", "{method} {path}");
                operations += 1;
            }
        }
        assert_eq!(operations, 7);
    }
}
