//! The HTTP surface: the API (JSON, relaxed JSON, form, multipart or query string in;
//! JSON out, in the dialect of `API_DIALECT`) at every path the apps post to, uploaded
//! files (`/files/...`), and the operational routes (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::api::ops::{self, Op};
use crate::api::reply::reply;
use crate::api::request::{access_token, Field, Params, Sent};
use crate::api::request_log;
use crate::api::state::UploadPlace;
use crate::api::{AppState, HttpSettings};
use crate::domain::account::{token_hash, Caller};
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::uploads::UploadedFile;

pub(crate) async fn api(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let dialect = state.http.dialect;
    let (params, upload) = match read_params(&request, payload, &state).await {
        Ok(read) => read,
        Err(e) => {
            request_log::note_api_call(&request, Op::label(""), Some(e.code.as_str()));
            return reply(dialect, "", Err(e));
        }
    };
    // The reference lower-cases the op before dispatch.
    let op = params.get("op").map(|op| op.text().trim().to_ascii_lowercase()).unwrap_or_default();
    let op = op.as_str();
    let client_ip = state.proxies.client_ip(&request);
    let result = match Op::parse(op) {
        // The upload's place, if it holds one, is kept until the request is answered.
        Some(op) => ops::handle(&state, op, Sent::new(&params, request.headers(), upload.file), upload.caller, &client_ip).await,
        None if op.is_empty() => Err(ApiError::new(ErrorCode::BadOp, "op is required")),
        None => Err(ApiError::new(ErrorCode::BadOp, "unknown op")),
    };
    request_log::note_api_call(&request, Op::label(op), result.as_ref().err().map(|e| e.code.as_str()));
    let echoed: String = op.chars().take(32).collect();
    reply(dialect, &echoed, result)
}

/// Reads the request's fields and its first file part (see [`parse_request`]). Contact
/// ops carry whole address books and may send up to `max_contacts_body_bytes`; ops that
/// take a file may add `max_upload_bytes` in a multipart body; every other op is held to
/// `max_body_bytes`, checked once the op is known. A multipart body is read as it
/// arrives, and its file part only once its token is checked (see [`SessionGate`]): the
/// session comes back with the file.
async fn read_params(request: &HttpRequest, payload: web::Payload, state: &AppState) -> Result<(Params, Upload), ApiError> {
    let limits = &state.http;
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if is_multipart(content_type) {
        return read_multipart(request, content_type, payload, state).await;
    }
    let read_limit = limits.max_contacts_body_bytes.max(limits.max_body_bytes);
    let body = payload
        .to_bytes_limited(read_limit)
        .await
        .map_err(|_| too_large(read_limit))?
        .map_err(|_| bad_request("the request body could not be read"))?;
    let size = body.len();
    let (params, _) = parse_request(request.query_string(), content_type, body).await?;
    check_size(&params, size, false, limits)?;
    Ok((params, Upload::default()))
}

/// What a request brings besides its fields: its first file part, the session checked
/// before the file was read, and the user's upload place, held until it is answered.
#[derive(Default)]
struct Upload {
    file: Option<UploadedFile>,
    caller: Option<Caller>,
    _place: Option<UploadPlace>,
}

/// Holds a request's size to its op's limit (see [`read_params`]).
fn check_size(params: &Params, size: usize, multipart: bool, limits: &HttpSettings) -> Result<Option<Op>, ApiError> {
    let op = params.get("op").and_then(|op| Op::parse_any_case(op.text().trim()));
    let limit = match op {
        Some(op) if op.carries_address_book() => limits.max_contacts_body_bytes,
        Some(op) if op.carries_file() && multipart => limits.max_body_bytes + limits.max_upload_bytes,
        _ => limits.max_body_bytes,
    };
    if size > limit {
        return Err(too_large(limit));
    }
    Ok(op)
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn too_large(limit: usize) -> ApiError {
    ApiError { keeps_status: true, ..bad_request(&format!("the request body is larger than {limit} bytes")) }
}

/// A multipart request, read from the connection as it arrives.
async fn read_multipart(
    request: &HttpRequest,
    content_type: &str,
    mut payload: web::Payload,
    state: &AppState,
) -> Result<(Params, Upload), ApiError> {
    let limits = FormLimits::of(&state.http);
    // The form reader wants a stream it can send between threads, which actix's payload
    // is not: a channel of one chunk carries it, so the body is read only as far as the
    // form reader has got.
    let (chunks, received) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(1);
    let body = futures_util::stream::unfold(received, |mut received| async move { received.recv().await.map(|chunk| (chunk, received)) });
    let feed = async move {
        while let Some(chunk) = payload.next().await {
            let failed = chunk.is_err();
            if chunks.send(chunk.map_err(std::io::Error::other)).await.is_err() || failed {
                break;
            }
        }
    };
    let gate = SessionGate { state, request };
    let query = url_encoded_params(request.query_string())?;
    let length = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let form = multipart_form(content_type, query, body, length, &limits, &gate);
    futures_util::pin_mut!(feed, form);
    let form = match futures_util::future::select(form, feed).await {
        futures_util::future::Either::Left((form, _)) => form,
        futures_util::future::Either::Right(((), form)) => form.await,
    }?;
    let op = check_size(&form.params, form.size, true, &state.http)?;
    let file = form.file.filter(|_| op.is_some_and(Op::carries_file));
    let Some(admitted) = form.admitted else { return Ok((form.params, Upload { file, ..Upload::default() })) };
    let token = access_token(&form.params, request.headers());
    let caller = match admitted.caller {
        // A second token after the file part must not stand for the one checked.
        Some(caller) if token.map(token_hash).as_ref() != Some(&caller.token_sha256) => {
            return Err(ops::authfail("the token changed within the request"));
        }
        Some(caller) => Some(caller),
        None if file.is_some() => Some(ops::caller_of(state, token).await?),
        None => None,
    };
    let file = file.map(|file| UploadedFile { counted: admitted.counted, ..file });
    Ok((form.params, Upload { file, caller, _place: admitted.place }))
}

/// Decides at the first file part of a multipart form whether its bytes are read, from
/// the fields read before it.
trait FileGate {
    /// What an admitted file keeps until the form is read.
    type Admitted;
    /// `None`: the file is skipped, its bytes not kept. `file_bytes`: the most the file
    /// can hold, when the body's length says it.
    async fn admit(&self, known: &Params, file_bytes: Option<usize>) -> Result<Option<Self::Admitted>, ApiError>;
    /// When the rest of the form must have been read, if ever.
    fn deadline(_: &Self::Admitted) -> Option<tokio::time::Instant> {
        None
    }
}

/// Every file is read: a form held in memory costs no more for it.
struct AdmitEvery;

impl FileGate for AdmitEvery {
    type Admitted = ();
    async fn admit(&self, _: &Params, _: Option<usize>) -> Result<Option<()>, ApiError> {
        Ok(Some(()))
    }
}

/// A file is read only for an op that takes one, and only once its token is checked:
/// a bad token is answered `AUTHFAIL`, a user with `MAX_CONCURRENT_UPLOADS_PER_USER`
/// uploads under way or past their upload limits `RATELIMIT`, before the file is read.
/// The apps send the token before the file; a file before its token is read while
/// fewer than `MAX_UPLOADS_BEFORE_TOKEN` others are, for at most
/// `UPLOAD_BEFORE_TOKEN_TIMEOUT_SECS`, and its token checked once the form is read.
struct SessionGate<'a> {
    state: &'a AppState,
    request: &'a HttpRequest,
}

struct Admitted {
    caller: Option<Caller>,
    /// The file was counted against the caller's upload limits.
    counted: bool,
    place: Option<UploadPlace>,
    _before_token: Option<tokio::sync::OwnedSemaphorePermit>,
    deadline: Option<tokio::time::Instant>,
}

impl FileGate for SessionGate<'_> {
    type Admitted = Admitted;
    async fn admit(&self, known: &Params, file_bytes: Option<usize>) -> Result<Option<Admitted>, ApiError> {
        let op = known.get("op").and_then(|op| Op::parse_any_case(op.text().trim()));
        if op.is_some_and(|op| !op.carries_file()) {
            return Ok(None);
        }
        if let Some(token) = access_token(known, self.request.headers()) {
            let caller = ops::caller_of(self.state, Some(token)).await?;
            let Some(place) = self.state.uploads_per_user.take(caller.user_id) else {
                return Err(ApiError::rate_limited(1, "this user has as many uploads under way as allowed; retry once one is answered"));
            };
            let file_bytes = file_bytes.map(|bytes| bytes.min(self.state.http.max_upload_bytes));
            if let Some(bytes) = file_bytes {
                self.state.files.limits.admit(caller.user_id, bytes).await?;
            }
            let counted = file_bytes.is_some();
            return Ok(Some(Admitted { caller: Some(caller), counted, place: Some(place), _before_token: None, deadline: None }));
        }
        match std::sync::Arc::clone(&self.state.uploads_before_token).try_acquire_owned() {
            Ok(permit) => {
                let deadline = tokio::time::Instant::now() + self.state.http.upload_before_token_timeout;
                Ok(Some(Admitted { caller: None, counted: false, place: None, _before_token: Some(permit), deadline: Some(deadline) }))
            }
            Err(_) => Err(ApiError::busy(1, "too many uploads are being read before their token; send the token before the file")),
        }
    }

    fn deadline(admitted: &Admitted) -> Option<tokio::time::Instant> {
        admitted.deadline
    }
}

/// How much of a multipart form is read: the whole body, its text fields together, and
/// its file part.
struct FormLimits {
    body: usize,
    text: usize,
    file: usize,
}

impl FormLimits {
    fn of(limits: &HttpSettings) -> FormLimits {
        FormLimits {
            body: limits.max_contacts_body_bytes.max(limits.max_body_bytes + limits.max_upload_bytes),
            text: limits.max_contacts_body_bytes.max(limits.max_body_bytes),
            file: limits.max_upload_bytes,
        }
    }
}

/// A multipart form as read: its fields merged over the query string's, its first file
/// part, the bytes of every part, and what the gate admitted the file with.
struct MultipartForm<A> {
    params: Params,
    file: Option<UploadedFile>,
    size: usize,
    admitted: Option<A>,
}

fn is_multipart(content_type: &str) -> bool {
    const MULTIPART: &str = "multipart/form-data";
    content_type.trim_start().as_bytes().get(..MULTIPART.len()).is_some_and(|start| start.eq_ignore_ascii_case(MULTIPART.as_bytes()))
}

/// The request's fields (see [`parse_request`]) without its file.
pub async fn parse_fields(query: &str, content_type: &str, body: web::Bytes) -> Result<Params, ApiError> {
    Ok(parse_request(query, content_type, body).await?.0)
}

/// Merges query-string parameters with the body's (JSON object, relaxed JSON, form or
/// multipart form); body fields win. A multipart body's first file part comes apart.
pub async fn parse_request(query: &str, content_type: &str, body: web::Bytes) -> Result<(Params, Option<UploadedFile>), ApiError> {
    let bad = bad_request;
    let mut params = url_encoded_params(query)?;
    if is_multipart(content_type) {
        let limits = FormLimits { body: body.len(), text: body.len(), file: body.len() };
        let length = Some(body.len() as u64);
        let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let form = multipart_form(content_type, params, body, length, &limits, &AdmitEvery).await?;
        return Ok((form.params, form.file));
    }
    let text = std::str::from_utf8(&body).map_err(|_| bad("the request body is not UTF-8"))?.trim();
    // JSON whatever the Content-Type (the iOS app sends none, `curl -d` a form type).
    if content_type.contains("json") || text.starts_with('{') {
        params.extend(json_fields(text)?);
    } else if !text.is_empty() {
        let fields = url_encoded(text).ok_or_else(|| bad("the request body is not valid form encoding of UTF-8 text"))?;
        params.extend(fields.into_iter().map(|(name, value)| (name, Field::Text(value))));
    }
    Ok((params, None))
}

fn url_encoded_params(query: &str) -> Result<Params, ApiError> {
    let fields = url_encoded(query).ok_or_else(|| bad_request("the query string is not valid URL encoding of UTF-8 text"))?;
    Ok(fields.into_iter().map(|(name, value)| (name, Field::Text(value))).collect())
}

/// The fields of a URL-encoded form or query string. serde_urlencoded decodes bytes that
/// are not UTF-8 into U+FFFD, which turned a malformed request into a bad phone or code:
/// every part is checked first.
fn url_encoded(text: &str) -> Option<Vec<(String, String)>> {
    let utf8 = |part: &str| percent_encoding::percent_decode_str(&part.replace('+', " ")).decode_utf8().is_ok();
    text.split(['&', '=']).all(utf8).then(|| serde_urlencoded::from_str(text).ok()).flatten()
}

/// Largest body tried as JSON5 once strict JSON fails. The JavaScript-style objects the
/// apps and the platform's examples send are a few hundred bytes, while the JSON5 parser
/// costs about a second of CPU per megabyte: any unauthenticated client could otherwise
/// keep the request threads busy with bodies that are not strict JSON.
const MAX_JSON5_BODY_BYTES: usize = 4 * 1024;

/// The fields of a JSON object; arrays as their items, numbers, booleans and objects as
/// their JSON text. JavaScript-style objects (unquoted keys, single quotes), as the
/// platform's own examples write them, are read as JSON5 when strict JSON fails and the
/// body is at most [`MAX_JSON5_BODY_BYTES`].
fn json_fields(text: &str) -> Result<Vec<(String, Field)>, ApiError> {
    let not_an_object = || ApiError::new(ErrorCode::BadRequest, "the request body is not a JSON object");
    let object: Map<String, Value> = match serde_json::from_str(text) {
        Ok(object) => object,
        Err(_) if text.len() <= MAX_JSON5_BODY_BYTES => json5::from_str(text).map_err(|_| not_an_object())?,
        Err(_) => return Err(not_an_object()),
    };
    Ok(object
        .into_iter()
        .filter_map(|(key, value)| match value {
            Value::Null => None,
            Value::String(s) => Some((key, Field::Text(s))),
            Value::Array(items) => Some((key, Field::array(items))),
            other => Some((key, Field::Text(json_text(&other)))),
        })
        .collect())
}

fn json_text(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value always serializes")
}

/// Reads a multipart form (the 2021 apps' encoding when a file is attached) as it
/// arrives: its text fields over `params`, and its first file part, whatever its name,
/// as the reference took it, once `gate` admits it. Later file parts are skipped.
/// `length`: the body's, when it is known.
async fn multipart_form<G: FileGate>(
    content_type: &str,
    mut params: Params,
    body: impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> + Send + 'static,
    length: Option<u64>,
    limits: &FormLimits,
    gate: &G,
) -> Result<MultipartForm<G::Admitted>, ApiError> {
    let not_a_form = || bad_request("the request body is not a valid multipart form");
    let read_error = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } => too_large(limits.body),
        multer::Error::StreamReadFailed(e) if PartScanner::refused(e.as_ref()) => bad_request(&format!(
            "a multipart part's headers, or the text before the first part, are longer than {MAX_PART_HEAD_BYTES} bytes"
        )),
        _ => not_a_form(),
    };
    let boundary = multer::parse_boundary(content_type).map_err(|_| bad_request("the multipart Content-Type has no boundary"))?;
    // What follows a file's bytes at the least: the closing delimiter.
    let closing = format!("\r\n--{boundary}--").len() as u64;
    let scanner = PartScanner::new(&boundary);
    let content_starts = std::sync::Arc::clone(&scanner.content_starts);
    let body = scanner.watch(body);
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limits.body as u64));
    let mut form = multer::Multipart::with_constraints(body, boundary, constraints);
    let (mut file, mut admitted, mut size, mut text_size) = (None, None, 0, 0);
    let (mut file_seen, mut deadline) = (false, None);
    while let Some(mut field) = within(deadline, form.next_field()).await?.map_err(read_error)? {
        let content_starts_at = content_starts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop_front();
        let file_name = field.file_name().map(String::from);
        let name = field.name().map(String::from);
        let keep = match &file_name {
            Some(_) if !file_seen => {
                file_seen = true;
                let file_bytes = length.zip(content_starts_at).map(|(length, start)| length.saturating_sub(start + closing));
                admitted = gate.admit(&params, file_bytes.map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX))).await?;
                deadline = admitted.as_ref().and_then(G::deadline);
                admitted.is_some()
            }
            Some(_) => false,
            None => name.is_some(),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = within(deadline, field.chunk()).await?.map_err(read_error)? {
            size += chunk.len();
            if file_name.is_none() {
                text_size += chunk.len();
                if text_size > limits.text {
                    return Err(too_large(limits.text));
                }
            } else if keep && bytes.len() + chunk.len() > limits.file {
                return Err(ApiError { keeps_status: true, ..bad_request(&format!("the file is larger than {} bytes", limits.file)) });
            }
            if keep {
                bytes.extend_from_slice(&chunk);
            }
        }
        match (file_name, name) {
            (Some(file_name), _) if keep => file = Some(UploadedFile { file_name, bytes, counted: false }),
            (None, Some(name)) => {
                let value = String::from_utf8(bytes).map_err(|_| bad_request("a multipart field is not text"))?;
                params.insert(name, Field::Text(value));
            }
            _ => {}
        }
    }
    Ok(MultipartForm { params, file, size, admitted })
}

/// `read`, unless `deadline` passes first.
async fn within<T>(deadline: Option<tokio::time::Instant>, read: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
    let Some(deadline) = deadline else { return Ok(read.await) };
    tokio::time::timeout_at(deadline, read).await.map_err(|_| {
        ApiError::new(ErrorCode::Timeout, "the form was not all received in time after its file; send the token before the file")
    })
}

/// Most bytes before a multipart body's first boundary, and of a part's head (from its
/// boundary to the blank line that ends its headers). The form reader keeps them whole
/// until they end, with no bound of its own; the apps' parts have two short headers.
const MAX_PART_HEAD_BYTES: usize = 8 * 1024;

/// Watches a multipart body on its way to the form reader, finding its boundaries as
/// the reader does: a body whose preamble or part head runs past
/// [`MAX_PART_HEAD_BYTES`] is refused, and where each part's content starts is noted.
struct PartScanner {
    /// `\r\n--<boundary>`; the first delimiter is found without its line break.
    delimiter: Vec<u8>,
    stage: ScanStage,
    /// Bytes of the current preamble or part head so far.
    head: usize,
    /// The last bytes scanned in this stage that may begin what it looks for.
    carry: Vec<u8>,
    scanned: u64,
    /// Offsets in the body where parts' contents start, in order, until the form reader
    /// takes the part.
    content_starts: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u64>>>,
}

#[derive(Clone, Copy, PartialEq)]
enum ScanStage {
    /// Before the first boundary.
    Preamble,
    /// The rest of a boundary's line.
    BoundaryLine,
    /// A part's headers, up to the blank line.
    Headers,
    /// A part's content, up to the next delimiter.
    Content,
}

impl PartScanner {
    fn new(boundary: &str) -> PartScanner {
        PartScanner {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            stage: ScanStage::Preamble,
            head: 0,
            carry: Vec::new(),
            scanned: 0,
            content_starts: std::sync::Arc::default(),
        }
    }

    fn watch(
        mut self,
        body: impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> + Send + 'static,
    ) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> + Send + 'static {
        body.map(move |chunk| {
            let chunk = chunk?;
            self.scan(&chunk)?;
            Ok(chunk)
        })
    }

    /// Whether the form reader's stream `error` is this scanner's refusal.
    fn refused(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::InvalidData)
    }

    fn scan(&mut self, chunk: &[u8]) -> Result<(), std::io::Error> {
        let mut rest = chunk;
        loop {
            let (pattern, next): (&[u8], ScanStage) = match self.stage {
                ScanStage::Preamble => (&self.delimiter[2..], ScanStage::BoundaryLine),
                ScanStage::BoundaryLine => (b"\r\n", ScanStage::Headers),
                ScanStage::Headers => (b"\r\n\r\n", ScanStage::Content),
                ScanStage::Content => (&self.delimiter, ScanStage::BoundaryLine),
            };
            let found = find_after(&self.carry, rest, pattern);
            let scanned = found.unwrap_or(rest.len());
            if self.stage != ScanStage::Content {
                self.head += scanned;
                if self.head > MAX_PART_HEAD_BYTES {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a multipart part's head is too long"));
                }
            }
            self.scanned += scanned as u64;
            let Some(end) = found else {
                let keep = pattern.len() - 1;
                let mut carry = std::mem::take(&mut self.carry);
                carry.extend_from_slice(&rest[rest.len().saturating_sub(keep)..]);
                self.carry = carry.split_off(carry.len().saturating_sub(keep));
                return Ok(());
            };
            if next == ScanStage::Content {
                self.content_starts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push_back(self.scanned);
            }
            if next != ScanStage::Headers {
                self.head = 0;
            }
            self.stage = next;
            self.carry.clear();
            rest = &rest[end..];
        }
    }
}

/// Where `pattern` ends in `rest` (the index just past it), when it starts in `carry`
/// (the bytes before `rest`, fewer than the pattern's) or in `rest`.
fn find_after(carry: &[u8], rest: &[u8], pattern: &[u8]) -> Option<usize> {
    if !carry.is_empty() {
        let mut joined = carry.to_vec();
        joined.extend_from_slice(&rest[..rest.len().min(pattern.len() - 1)]);
        if let Some(at) = memchr::memmem::find(&joined, pattern) {
            return Some(at + pattern.len() - carry.len());
        }
    }
    memchr::memmem::find(rest, pattern).map(|at| at + pattern.len())
}

/// `GET /files/{name}`: an uploaded file. Names are content hashes, so a file never
/// changes and may be cached for good; types outside a short list are served as
/// downloads, and nothing is run by a browser (`nosniff`, a sandboxing CSP).
pub(crate) async fn serve_file(name: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let found = match state.files.store.get(&name).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!("reading an uploaded file failed: {e}");
            return HttpResponse::ServiceUnavailable().finish();
        }
    };
    let Some((bytes, extension)) = found else { return HttpResponse::NotFound().finish() };
    let (content_type, inline) = crate::domain::images::served_type(&extension);
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox"));
    if !inline {
        response.insert_header((header::CONTENT_DISPOSITION, "attachment"));
    }
    response.body(bytes)
}
