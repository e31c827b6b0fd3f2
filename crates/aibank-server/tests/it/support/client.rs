//! Typed callers of the server under test: a [`Caller`] sends as one credential, an
//! [`Agent`] and a [`Platform`] are the identities tests build, and a [`Resp`] is an answer
//! read whole with the assertions tests make on it. The builders here are the only places a
//! test creates agents and platforms.

use std::ops::Deref;

use serde_json::{json, Value};

use super::TestApp;

/// The credential header of an agent key (`ak_`, `gw_`).
pub fn api(key: &str) -> [(&str, &str); 1] {
    [("X-API-Key", key)]
}

/// The credential header of a platform's master key.
pub fn master(key: &str) -> [(&str, &str); 1] {
    [("X-Master-Key", key)]
}

/// Where the server listens, and the client that reaches it.
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    /// Sends a request; `body` is sent verbatim (as JSON content) when given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// A 2xx answer.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            (200..300).contains(&self.status),
            "expected a 2xx, got {}: {}",
            self.status,
            self.text
        );
        self
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.text);
        self
    }

    /// The error envelope with this status and code, and a message that says something.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert!(
            self.body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
        self
    }

    /// `400 INVALID_INPUT` naming `field`.
    #[track_caller]
    pub fn assert_invalid(&self, field: &str) -> &Self {
        self.assert_error(400, "INVALID_INPUT");
        assert_eq!(self.body["field"], field, "{}", self.text);
        self
    }

    /// A string member of the body.
    #[track_caller]
    pub fn str(&self, pointer: &str) -> String {
        self.body
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string at {pointer}: {}", self.text))
            .to_owned()
    }
}

/// Requests sent as one credential (its headers go on every request).
#[derive(Clone)]
pub struct Caller {
    http: Http,
    headers: Vec<(String, String)>,
}

impl Caller {
    pub fn new(http: Http, headers: &[(&str, &str)]) -> Caller {
        Caller {
            http,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.http
            .send(method, path, body.map(|b| b.to_string()), &headers)
            .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send("POST", path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send("PATCH", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None).await
    }
}

/// An agent, with its first key and its wallet, calling as that key.
#[derive(Clone)]
pub struct Agent {
    pub id: String,
    pub key: String,
    /// The id of its wallet.
    pub wallet: String,
    /// Its wallet's address on Base (the same EVM account on every EVM chain).
    pub address: String,
    /// Its wallet's address as listed for Ethereum.
    pub ethereum: String,
    caller: Caller,
}

impl Agent {
    /// From an answer of `POST /v1/agents/register` or `POST /v1/platform/agents`.
    #[track_caller]
    fn from_created(http: &Http, r: &Resp) -> Agent {
        r.assert_status(201);
        let key = r.str("/apiKey");
        Agent {
            id: r.str("/agentId"),
            wallet: r.str("/wallet/id"),
            address: r.str("/wallet/addresses/base"),
            ethereum: r.str("/wallet/addresses/ethereum"),
            caller: Caller::new(http.clone(), &api(&key)),
            key,
        }
    }
}

impl Deref for Agent {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// A platform, calling as one of its master keys.
#[derive(Clone)]
pub struct Platform {
    http: Http,
    caller: Caller,
}

impl Platform {
    fn new(http: &Http, master_key: &str) -> Platform {
        Platform {
            http: http.clone(),
            caller: Caller::new(http.clone(), &master(master_key)),
        }
    }

    /// A new agent of this platform: `POST /v1/platform/agents` with `body` (named
    /// `fleet-agent` unless `body` names it).
    pub async fn agent(&self, body: Value) -> Agent {
        let mut body = body;
        let fields = body.as_object_mut().expect("an object body");
        fields
            .entry("name")
            .or_insert_with(|| Value::from("fleet-agent"));
        let r = self.caller.post("/v1/platform/agents", body).await;
        Agent::from_created(&self.http, &r)
    }
}

impl Deref for Platform {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl TestApp {
    /// Requests sent as an agent key (`ak_`, `gw_`).
    pub fn with_key(&self, key: &str) -> Caller {
        Caller::new(self.http.clone(), &api(key))
    }

    /// Requests sent with no credential.
    pub fn anonymous(&self) -> Caller {
        Caller::new(self.http.clone(), &[])
    }

    /// A self-registered agent (`POST /v1/agents/register`, sign-up credits).
    pub async fn agent(&self) -> Agent {
        let r = self
            .anonymous()
            .post("/v1/agents/register", json!({}))
            .await;
        Agent::from_created(&self.http, &r)
    }

    /// A self-registered agent whose wallet holds 1 ETH and 100 USDC on the anvil chain.
    pub async fn funded_agent(&self, anvil: &super::anvil::Anvil) -> Agent {
        let agent = self.agent().await;
        anvil
            .fund(
                &agent.address,
                1_000_000_000_000_000_000,
                super::anvil::USDC_BASE_SEPOLIA,
                100_000_000,
            )
            .await;
        agent
    }

    /// The platform of the bootstrap master key.
    pub fn platform(&self) -> Platform {
        Platform::new(&self.http, &self.master_key)
    }

    /// The platform one of whose master keys is `master_key`.
    pub fn platform_with(&self, master_key: &str) -> Platform {
        Platform::new(&self.http, master_key)
    }
}
