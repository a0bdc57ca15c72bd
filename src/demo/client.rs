//! HTTPS clients of the demo's parties: each presents its own client
//! certificate (mTLS) and, for an auditor, a user JWT, exactly as an
//! agency's system would.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::DemoError;

/// Prefix of every problem `type` (DESIGN §5).
const PROBLEM_PREFIX: &str = "urn:samgate:problem:";

/// One party's client towards the gateway.
#[derive(Clone)]
pub struct PartyClient {
    /// The party id.
    pub party: String,
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

/// A response: status, raw text and parsed JSON (`Null` if not JSON).
#[derive(Debug)]
pub struct Rsp {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub text: String,
    /// The body as JSON, or `Null`.
    pub json: Value,
}

impl Rsp {
    /// The problem code of an `application/problem+json` response.
    pub fn problem(&self) -> Option<&str> {
        self.json
            .get("type")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix(PROBLEM_PREFIX))
    }

    /// The problem's `detail`, or an empty string.
    pub fn detail(&self) -> &str {
        self.json
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// True if the endpoint does not exist in this build (the router's
    /// fallback `not_found`, or 405/501), as opposed to a real outcome.
    pub fn unavailable(&self) -> bool {
        (self.status == 404 && matches!(self.problem(), Some("not_found") | None))
            || self.status == 405
            || self.status == 501
    }

    /// `problem-code: detail` or `HTTP <status>` for display.
    pub fn reason(&self) -> String {
        match self.problem() {
            Some(code) if self.detail().is_empty() => format!("{} {code}", self.status),
            Some(code) => format!("{} {code}: {}", self.status, self.detail()),
            None => format!("HTTP {}", self.status),
        }
    }
}

impl PartyClient {
    /// A client for `party` using `pki/<party>.pem` / `.key` under `dir`.
    pub fn new(
        dir: &Path,
        party: &str,
        gateway: SocketAddr,
        bearer: Option<String>,
    ) -> Result<PartyClient, DemoError> {
        let tls = crate::tls::client_config(
            &dir.join("pki/ca.pem"),
            &dir.join(format!("pki/{party}.pem")),
            &dir.join(format!("pki/{party}.key")),
        )?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DemoError::Client(e.to_string()))?;
        Ok(PartyClient {
            party: party.to_owned(),
            http,
            base: format!("https://127.0.0.1:{}", gateway.port()),
            bearer,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Rsp, DemoError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Rsp, DemoError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Rsp, DemoError> {
        let rb = match &self.bearer {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let r = rb
            .send()
            .await
            .map_err(|e| DemoError::Request(e.without_url().to_string()))?;
        let status = r.status().as_u16();
        let text = r
            .text()
            .await
            .map_err(|e| DemoError::Request(e.without_url().to_string()))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Rsp { status, text, json })
    }
}
