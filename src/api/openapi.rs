//! The OpenAPI 3 document for the service, served at `GET /openapi.json`. Ops come
//! from [`Op::ALL`] and error codes from [`ErrorCode::ALL`]; each op's fields are
//! described in [`op_doc`], whose match does not compile without every op.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use crate::api::op::Op;
use crate::api::op::API_PATHS;
use crate::api::AppState;
use crate::config::Dialect;
use crate::domain::error::ErrorCode;

/// Request and reply fields of one op: `(name, JSON type, description)`.
pub struct OpDoc {
    pub summary: &'static str,
    pub request: &'static [(&'static str, &'static str, &'static str)],
    pub required: &'static [&'static str],
    pub reply: &'static [(&'static str, &'static str, &'static str)],
}

/// The fields of `op`.
pub fn op_doc(op: Op) -> OpDoc {
    match op {
        Op::Login => OpDoc {
            summary: "Without otp/code: send a one-time code. With it: verify the code and return the user's access token. With provider and id_token instead: sign in with the ID token of a provider in OIDC_PROVIDERS, in one request.",
            request: &[
                ("appid", "string", "The app's id (e.g. its bundle id); a code is valid only for the app that asked for it. At most 128 characters."),
                ("phone", "string", "The user's number; spaces, dashes, dots, parentheses, a leading + and leading zeros are dropped; 9-15 digits must remain."),
                ("email", "string", "Instead of phone, for e-mail logins."),
                ("name", "string", "Optional display name (at most 64 characters), passed to upstream useradd."),
                ("otp", "string", "The code, when verifying."),
                ("code", "string", "Older name of otp."),
                ("device", "string", "Optional installation id for multi-device logins (at most 128 characters)."),
                ("challenge", "string", "The challenge id of the start reply, when verifying: the guess is bound to that code and counted apart from guesses without it. Required when REQUIRE_CHALLENGE is on."),
                PROVIDER_FIELD,
                ID_TOKEN_FIELD,
                NONCE_FIELD,
            ],
            required: &["appid"],
            reply: &[
                ("challenge", "string", "Start only: an id to send back with the code (none for TEST_OTPS numbers)."),
                ("title", "string", "Start only, when APP_SETTINGS sets start.title: the title of the notice below."),
                ("message", "string", "Start only, when APP_SETTINGS sets start.message: a notice the Android app shows as an alert."),
                ("delay", "integer", "Start only, when APP_SETTINGS sets start.delay: milliseconds before the app shows the code field."),
                ("token", "string", "The user's access token (verify only)."),
                ("uid", "string", "Upstream user id, a number or a string as upstream gave it (verify only)."),
                ("phone", "string", "The normalised phone (verify of a phone login)."),
                ("email", "string", "The normalised e-mail address (verify of an e-mail login, or of an ID token whose provider signs in by e-mail)."),
                ("account", "string", "provider:subject (an ID token whose provider signs in by subject)."),
                ("cc", "string", "The phone's country calling code, e.g. \"44\"; empty for e-mail (verify only)."),
                ("name", "string", "The user's display name (verify only)."),
                ("status", "string", "The user's status text (verify only)."),
                ("photo", "string", "The user's photo, empty when none (verify only)."),
                ("urls", "object", "upload and download: where the app uploads files and finds downloads (verify only; APP_SETTINGS)."),
                ("share", "object", "text, subject and title of the app's invite (verify only; APP_SETTINGS)."),
                ("invite", "string", "The invite text (verify only; APP_SETTINGS)."),
                ("linked", "object", "Multi-device field passed through from upstream, when present."),
                ("linkto", "object", "Multi-device field passed through from upstream, when present."),
            ],
        },
        Op::Logout => OpDoc {
            summary: "End this session, or with all:true every session of the user. An already ended token still succeeds.",
            request: &[TOKEN_FIELD, ("all", "boolean", "End every session of the user (1, true or yes).")],
            required: &[],
            reply: &[("ended", "integer", "How many sessions were ended.")],
        },
        Op::Devices => OpDoc {
            summary: "The caller's live sessions, most recently used first, without tokens.",
            request: &[TOKEN_FIELD],
            required: &[],
            reply: &[
                (
                    "devices",
                    "array",
                    "Entries with device, appid, created, last_seen, current (the session making the request), push (a push token is registered) and dt.",
                ),
                LINKED_FIELD,
            ],
        },
        Op::GetContacts => OpDoc {
            summary: "Record uploaded phones as the caller's contacts and return those that use the app; without phones, the contacts changed since ts.",
            request: &[
                TOKEN_FIELD,
                ("phones", "string", "Phones as a JSON array or a comma-separated list; at most MAX_CONTACTS_PER_REQUEST."),
                ("ts", "integer", "Without phones: only contacts changed at or after this time (unix seconds). Default 0."),
                ("reset", "boolean", "Forget the caller's previous contacts first."),
                ("cursor", "string", "Continue a reply that had more:true."),
                ("hidden", "integer", "Sent by the 2021 apps; not used."),
            ],
            required: &[],
            reply: &[
                ("contacts", "array", "Entries with phone, name, status, photo, ts and tn; never the caller, never a non-user. Without phones, the caller's groups changed since ts follow (gid, name, photo, tn, ts, members, an empty phone)."),
                ("me", "object", "The caller's own profile: phone or email, name, status, photo, ts, tn."),
                ("more", "boolean", "More entries follow; ask again with cursor."),
                ("cursor", "string", "Where the next page starts (with more:true)."),
                ("invalid", "integer", "Uploaded entries that were not phones."),
                ("ts", "integer", "The value to send as ts next time."),
            ],
        },
        Op::DelContacts => OpDoc {
            summary: "Remove phones from the caller's contacts.",
            request: &[TOKEN_FIELD, ("phones", "string", "Phones as a JSON array or a comma-separated list.")],
            required: &["phones"],
            reply: &[("removed", "integer", "How many contacts were removed."), ("invalid", "integer", "Entries that were not phones.")],
        },
        Op::Profile => OpDoc {
            summary: "Change the caller's name, status and/or photo; contacts see the change at their next sync.",
            request: &[
                TOKEN_FIELD,
                ("name", "string", "At most 64 characters."),
                ("status", "string", "At most 140 characters."),
                ("photo", "string", "An http(s) URL, at most 512 characters; or send the photo as a multipart file part."),
            ],
            required: &[],
            reply: &[("profile", "object", "json dialect only (the 2021 Android app reads profile as a number): phone or email, name, status, photo, ts, tn and uid.")],
        },
        Op::Me => OpDoc {
            summary: "The caller's own profile, and the addresses linked to the account.",
            request: &[TOKEN_FIELD],
            required: &[],
            reply: &[PROFILE_FIELD, LINKED_FIELD],
        },
        Op::Upload => OpDoc {
            summary: "Multipart: store a chat attachment (profile=0), or set or delete (delete=1) the caller's photo (profile=1). The first file part is taken whatever its name (the apps name it photo).",
            request: &[
                TOKEN_FIELD,
                ("auth", "string", "Another name of token, as the iOS app sends it with attachments."),
                ("profile", "integer", "1: the caller's photo; 0 (default): a chat attachment."),
                ("gid", "integer", "With profile=1: a group's photo (admins and owner only); 0 for the caller's own."),
                ("delete", "integer", "1: remove the photo."),
                ("mid", "string", "The app's message id; not used."),
            ],
            required: &[],
            reply: &[
                ("file", "string", "The stored file's full URL (attachment, or the new photo)."),
                ("url", "string", "Attachments: the same URL."),
                ("photo", "string", "profile=1: the photo's file name under urls.download; empty when deleted."),
                ("tn", "string", "profile=1: base64 of the 100x100 JPEG thumbnail."),
                ("profile", "integer", "profile as asked."),
                ("gid", "integer", "gid as asked."),
                ("phone", "string", "profile=1: the caller's phone; else empty."),
                ("name", "string", "profile=1: the caller's name."),
                ("status", "string", "profile=1: the caller's status."),
            ],
        },
        Op::SetNotify => OpDoc {
            summary: "Keep this device's push registration with its session (replaced by the next call, removed at logout; an empty notifytoken removes it).",
            request: &[
                TOKEN_FIELD,
                ("notifytoken", "string", "The push service's token for the device, at most 4096 characters."),
                ("fcmid", "string", "The push sender id."),
                ("dt", "string", "The platform SDK's device type."),
            ],
            required: &[],
            reply: &[],
        },
        Op::SetGroup => OpDoc {
            summary: "Create a group (gid 0; the caller becomes its owner) or change one the caller runs: name, photo (a multipart file part) and with m its members. The platform is asked first; nothing changes here if it refuses.",
            request: &[
                TOKEN_FIELD,
                GID_FIELD,
                ("name", "string", "The group's name, at most 64 characters (percent-encoding is decoded); empty keeps the old one."),
                ("m", "string", "Member phones, comma-separated, without the caller; replaces the members (the owner stays)."),
            ],
            required: &[],
            reply: GROUP_REPLY,
        },
        Op::GetGroup => OpDoc {
            summary: "A group the caller is a member of.",
            request: &[TOKEN_FIELD, GID_FIELD],
            required: &["gid"],
            reply: GROUP_REPLY,
        },
        Op::EditMembers => OpDoc {
            summary: "Add members to a group the caller runs, or with delete=1 remove them (never the owner).",
            request: &[
                TOKEN_FIELD,
                GID_FIELD,
                ("m", "string", "Phones, comma-separated."),
                ("delete", "integer", "1: remove them."),
            ],
            required: &["gid", "m"],
            reply: &[GID_FIELD, MEMBERS_FIELD],
        },
        Op::SetAdmin => OpDoc {
            summary: "Make members admins (admin=1) or members again (admin=0) in a group the caller runs; the owner's role never changes.",
            request: &[
                TOKEN_FIELD,
                GID_FIELD,
                ("m", "string", "Phones, comma-separated."),
                ("admin", "integer", "1: admin; 0: member."),
            ],
            required: &["gid", "m"],
            reply: &[GID_FIELD, MEMBERS_FIELD],
        },
        Op::DelGroup => OpDoc {
            summary: "The owner deletes the group; any other member leaves it.",
            request: &[TOKEN_FIELD, GID_FIELD],
            required: &["gid"],
            reply: &[GID_FIELD],
        },
        Op::DeleteAccount => OpDoc {
            summary: "Deletes the caller's account: sessions, address book, profile, photo, push registrations and group memberships, and the user on the platform. First start a login for the caller's own phone or e-mail: its code proves the request (an account signed in with an ID token sends one issued within the last 5 minutes instead).",
            request: &[
                TOKEN_FIELD,
                ("appid", "string", "The app the code was asked for."),
                ("otp", "string", "The code the login start sent (or code)."),
                ("challenge", "string", "The challenge id of that start reply, when the app has it."),
                PROVIDER_FIELD,
                ID_TOKEN_FIELD,
                NONCE_FIELD,
            ],
            required: &["appid"],
            reply: &[],
        },
        Op::Link => OpDoc {
            summary: "Links a further address to the caller's account: first start a login for it (op=login with its phone or email), then send its code here; or send an ID token. From then on a login through it is the same user, its token minted with linkto = the account's own address.",
            request: &[
                TOKEN_FIELD,
                ("appid", "string", "The app the code was asked for."),
                ("phone", "string", "The phone to link, with otp."),
                ("email", "string", "The e-mail address to link, with otp."),
                ("otp", "string", "The code the login start for that address sent (or code)."),
                ("challenge", "string", "The challenge id of that start reply, when the app has it."),
                PROVIDER_FIELD,
                ID_TOKEN_FIELD,
                NONCE_FIELD,
            ],
            required: &["appid"],
            reply: &[LINKED_FIELD],
        },
        Op::Unlink => OpDoc {
            summary: "Unlinks a linked address and ends the sessions that logged in through it; the platform is asked to delete the user it made of it (userdel). The account's own address cannot be unlinked.",
            request: &[
                TOKEN_FIELD,
                ("phone", "string", "The linked phone to unlink."),
                ("email", "string", "The linked e-mail address to unlink."),
                ("account", "string", "The linked provider:subject to unlink."),
            ],
            required: &[],
            reply: &[LINKED_FIELD, ("ended", "integer", "How many sessions that came through the address ended.")],
        },
    }
}

const LINKED_FIELD: (&str, &str, &str) = (
    "linked",
    "array",
    "The addresses linked to the account, oldest first: entries with address, kind (phone, email or account) and linked_at.",
);

const PROVIDER_FIELD: (&str, &str, &str) =
    ("provider", "string", "A sign-in provider named in OIDC_PROVIDERS (e.g. google, apple), with id_token.");
const ID_TOKEN_FIELD: (&str, &str, &str) = (
    "id_token",
    "string",
    "The provider's ID token, as its sign-in SDK returned it: signature, issuer, audience and authorized party (OIDC_PROVIDERS client_ids), lifetime and e-mail verification are checked.",
);
const NONCE_FIELD: (&str, &str, &str) = ("nonce", "string", "The nonce the app asked the provider to embed; the token must carry it.");
const GID_FIELD: (&str, &str, &str) = ("gid", "integer", "The group's id (the platform's).");
const MEMBERS_FIELD: (&str, &str, &str) =
    ("members", "string", "n:phone,phone,...: the owner and admins first, n of them, then the members.");
const GROUP_REPLY: &[(&str, &str, &str)] = &[
    GID_FIELD,
    ("name", "string", "The group's name."),
    ("status", "string", "Always empty."),
    ("photo", "string", "The photo's file name under urls.download; empty without one."),
    ("tn", "string", "Base64 of the photo's 100x100 JPEG thumbnail, when there is a photo."),
    ("ts", "integer", "Unix seconds of the last change."),
    MEMBERS_FIELD,
];

/// Session ops also take the token as `Authorization: Bearer <token>` (the `session`
/// security scheme), so no op requires the field.
const TOKEN_FIELD: (&str, &str, &str) = ("token", "string", "The access token from login (or send Authorization: Bearer).");

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
const PROFILE_FIELD: (&str, &str, &str) = ("profile", "object", "phone or email, name, status, photo, ts and uid.");

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
        let doc = op_doc(op);
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
