//! [`AdminRequest`] and [`AdminResponse`]: the plain-data HTTP exchange between the node's admin
//! socket and a plugin's routes, with the parsing helpers every plugin needs.
//!
//! The node strips `/admin/plugins/<name>/` from the request target and builds the request with
//! [`AdminRequest::from_target`]; the plugin matches on [`AdminRequest::segments`], whose
//! elements are percent-decoded *after* splitting on `/`, so an id containing `/` (written `%2F`)
//! stays one segment.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::PluginError;

/// Largest admin request body a plugin route accepts, in bytes: a DSP statement of a large
/// catalogue (100,000 rows of about 80 bytes) fits in 16 MiB. The node should refuse larger
/// bodies before reading them.
pub const MAX_ADMIN_BODY_BYTES: usize = 16 << 20;

/// An admin request to one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminRequest {
    /// `GET`, `POST` or `DELETE` (uppercase).
    pub method: String,
    /// The path after `/admin/plugins/<name>/`, still percent-encoded, without the query:
    /// `balance/artist%201`.
    pub path: String,
    /// The query parameters, percent-decoded (`+` is a space), in request order.
    pub query: Vec<(String, String)>,
    /// The request body (JSON for most `POST` routes, CSV for DSP imports), when it is at
    /// most [`MAX_ADMIN_BODY_BYTES`].
    pub body: Vec<u8>,
    /// A larger body (up to [`MAX_SPOOLED_BODY_BYTES`], for file imports such as a DSP's
    /// sales report) is spooled by the node to this file, and `body` is empty: read it with
    /// [`AdminRequest::body_reader`].
    pub spooled: Option<std::path::PathBuf>,
}

/// Largest request body the node spools to disk for a plugin (a DSP's monthly sales report).
pub const MAX_SPOOLED_BODY_BYTES: u64 = 8 << 30;

/// A plugin's answer to an [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` of `body`.
    pub content_type: String,
    /// The response body.
    pub body: Vec<u8>,
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`), refusing malformed escapes
/// and results that are not UTF-8.
fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, PluginError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        PluginError::BadRequest(format!("bad percent escape in {s:?}"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| PluginError::BadRequest(format!("{s:?} is not UTF-8")))
}

impl AdminRequest {
    /// A request with no query and no body.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        AdminRequest {
            method: method.into(),
            path: path.into(),
            query: Vec::new(),
            body: Vec::new(),
            spooled: None,
        }
    }

    /// Builds a request from the target after `/admin/plugins/<name>/` (`path?query`, still
    /// percent-encoded as received), decoding the query.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] for a malformed percent escape or non-UTF-8 query, or a body
    /// over [`MAX_ADMIN_BODY_BYTES`].
    pub fn from_target(
        method: impl Into<String>,
        target: &str,
        body: Vec<u8>,
    ) -> Result<Self, PluginError> {
        if body.len() > MAX_ADMIN_BODY_BYTES {
            return Err(PluginError::BadRequest(format!(
                "body of {} bytes, at most {MAX_ADMIN_BODY_BYTES}",
                body.len()
            )));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((percent_decode(k, true)?, percent_decode(v, true)?));
        }
        Ok(AdminRequest {
            method: method.into().to_ascii_uppercase(),
            path: path.trim_start_matches('/').to_string(),
            query: pairs,
            body,
            spooled: None,
        })
    }

    /// Sets the body (builder style, for tests and the CLI).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a query parameter (builder style).
    pub fn with_query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// The path split on `/` (empty segments dropped, so a trailing slash does not matter), each
    /// segment percent-decoded.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] for a malformed escape or a segment that is not UTF-8.
    pub fn segments(&self) -> Result<Vec<String>, PluginError> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect()
    }

    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Query parameter `key` parsed as `T`, `None` when absent.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] naming the parameter when it does not parse.
    pub fn param_parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, PluginError>
    where
        T::Err: std::fmt::Display,
    {
        self.param(key)
            .map(|v| {
                v.parse().map_err(|e| {
                    PluginError::BadRequest(format!("query parameter {key}={v:?}: {e}"))
                })
            })
            .transpose()
    }

    /// The `format` parameter: `json` (the default) or `csv`; `true` for CSV.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] for any other value.
    pub fn wants_csv(&self) -> Result<bool, PluginError> {
        match self.param("format") {
            None | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(other) => Err(PluginError::BadRequest(format!(
                "format={other:?}: expected json or csv"
            ))),
        }
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] with serde's message (which names line and column).
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        if self.spooled.is_some() {
            return Err(PluginError::BadRequest(format!(
                "a JSON body is at most {MAX_ADMIN_BODY_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| PluginError::BadRequest(format!("request body: {e}")))
    }
}

impl AdminRequest {
    /// The body as a stream, wherever it is: in memory or spooled to a file.
    ///
    /// # Errors
    /// [`PluginError::Other`] (retryable) if the spooled file cannot be opened.
    pub fn body_reader(&self) -> Result<Box<dyn std::io::BufRead + '_>, PluginError> {
        match &self.spooled {
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|e| PluginError::Other {
                    message: format!("opening the spooled request body: {e}"),
                    retryable: true,
                })?;
                Ok(Box::new(std::io::BufReader::with_capacity(
                    256 * 1024,
                    file,
                )))
            }
            None => Ok(Box::new(self.body.as_slice())),
        }
    }
}

impl AdminResponse {
    /// `status` with `value` as a JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                AdminResponse {
                    status,
                    content_type: "application/json".into(),
                    body,
                }
            }
            // Only maps with non-string keys fail, which no route returns; answer rather than
            // panic if one ever does.
            Err(e) => Self::error(500, &format!("encoding the response: {e}")),
        }
    }

    /// 200 with `value` as JSON.
    pub fn ok<T: Serialize + ?Sized>(value: &T) -> Self {
        Self::json(200, value)
    }

    /// 200 with a body of the given content type.
    pub fn bytes(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        AdminResponse {
            status: 200,
            content_type: content_type.into(),
            body: body.into(),
        }
    }

    /// 200 with a CSV body.
    pub fn csv(body: impl Into<Vec<u8>>) -> Self {
        Self::bytes("text/csv; charset=utf-8", body)
    }

    /// `status` with `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        let mut body = serde_json::json!({ "error": message })
            .to_string()
            .into_bytes();
        body.push(b'\n');
        AdminResponse {
            status,
            content_type: "application/json".into(),
            body,
        }
    }

    /// The response for a plugin error: its [`PluginError::http_status`] and
    /// `{"error": ..., "retryable": ...}`.
    pub fn from_error(err: &PluginError) -> Self {
        let mut body = serde_json::json!({
            "error": err.to_string(),
            "retryable": err.is_retryable(),
        })
        .to_string()
        .into_bytes();
        body.push(b'\n');
        AdminResponse {
            status: err.http_status(),
            content_type: "application/json".into(),
            body,
        }
    }

    /// The body as UTF-8 text (lossy), for logs and tests.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`PluginError::BadRequest`] when the body is not that JSON (for clients and tests).
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| PluginError::BadRequest(format!("response body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_decoded_segments_and_query() {
        let req = AdminRequest::from_target(
            "get",
            "/statement/a%2Fb%20c/2025-03?format=csv&x=1+2%21",
            vec![],
        )
        .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "statement/a%2Fb%20c/2025-03");
        assert_eq!(req.segments().unwrap(), ["statement", "a/b c", "2025-03"]);
        assert_eq!(req.param("format"), Some("csv"));
        assert_eq!(req.param("x"), Some("1 2!"));
        assert_eq!(req.param("y"), None);
        assert!(req.wants_csv().unwrap());
        // '+' in a path segment is literal.
        assert_eq!(
            AdminRequest::new("GET", "a+b/").segments().unwrap(),
            ["a+b"]
        );
    }

    #[test]
    fn malformed_targets_are_bad_requests() {
        for t in ["a?x=%zz", "a?x=%4", "a?%ff=1"] {
            let err = AdminRequest::from_target("GET", t, vec![]).unwrap_err();
            assert_eq!(err.http_status(), 400, "{t}");
        }
        assert!(AdminRequest::new("GET", "a/%e9").segments().is_err());
        let big = vec![0; MAX_ADMIN_BODY_BYTES + 1];
        assert!(AdminRequest::from_target("POST", "dsp", big).is_err());
    }

    #[test]
    fn params_parse_or_name_the_parameter() {
        let req = AdminRequest::new("GET", "x")
            .with_query("size", "12")
            .with_query("old", "x")
            .with_query("format", "xml");
        assert_eq!(req.param_parsed::<u64>("size").unwrap(), Some(12));
        assert_eq!(req.param_parsed::<u64>("new").unwrap(), None);
        let err = req.param_parsed::<u64>("old").unwrap_err();
        assert!(err.to_string().contains("old"), "{err}");
        assert!(req.wants_csv().is_err());
    }

    #[test]
    fn responses_render_errors_and_json() {
        let r = AdminResponse::from_error(&PluginError::NotFound("artist x".into()));
        assert_eq!(r.status, 404);
        let v: serde_json::Value = r.json_body().unwrap();
        assert_eq!(v["error"], "not found: artist x");
        assert_eq!(v["retryable"], false);
        let ok = AdminResponse::ok(&vec![1, 2]);
        assert_eq!(
            (ok.status, ok.json_body::<Vec<u8>>().unwrap()),
            (200, vec![1, 2])
        );
        assert_eq!(
            AdminResponse::csv("a,b\r\n").content_type,
            "text/csv; charset=utf-8"
        );
        let req = AdminRequest::new("POST", "x").with_body("{\"a\":1}");
        let v: serde_json::Value = req.json_body().unwrap();
        assert_eq!(v["a"], 1);
        assert!(req.with_body("{").json_body::<serde_json::Value>().is_err());
    }
}
