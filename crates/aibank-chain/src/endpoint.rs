//! A chain's JSON-RPC endpoint, and the redaction of RPC URLs from what it reports.

use crate::Chain;

/// One chain's JSON-RPC endpoint, as payments and wallets use it: every call bounded by a
/// timeout, failures described without the URL (hosted RPC URLs carry keys), and a check,
/// once per process while it matches, that the endpoint serves this chain.
pub struct Endpoint {
    pub chain: Chain,
    provider: alloy::providers::RootProvider,
    timeout: std::time::Duration,
    checked: tokio::sync::OnceCell<()>,
}

/// Why a call to an [`Endpoint`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The endpoint could not be reached or did not answer in time: nothing is known.
    Unreachable(String),
    /// The node answered with a JSON-RPC error.
    Refused(String),
    /// The endpoint serves another chain.
    WrongChain { expected: u64, actual: u64 },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) | CallError::Refused(m) => f.write_str(m),
            CallError::WrongChain { expected, actual } => {
                write!(f, "the endpoint serves chain id {actual}, not {expected}")
            }
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(chain: Chain, rpc_url: &str, timeout: std::time::Duration) -> Result<Self, String> {
        let url = rpc_url
            .parse()
            .map_err(|_| format!("the RPC URL for {} is not a valid URL", chain.name()))?;
        Ok(Endpoint {
            chain,
            provider: alloy::providers::RootProvider::new_http(url),
            timeout,
            checked: tokio::sync::OnceCell::new(),
        })
    }

    pub fn provider(&self) -> &alloy::providers::RootProvider {
        &self.provider
    }

    /// Runs one RPC call (`what` names it in messages) within the timeout.
    pub async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::IntoFuture<
            Output = Result<T, alloy::transports::RpcError<alloy::transports::TransportErrorKind>>,
        >,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, fut.into_future()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(alloy::transports::RpcError::ErrorResp(payload))) => Err(CallError::Refused(
                format!("{what}: {}", redact_urls(&payload.message)),
            )),
            Ok(Err(e)) => Err(CallError::Unreachable(format!(
                "{what}: {}",
                redact_urls(&e.to_string())
            ))),
            Err(_) => Err(CallError::Unreachable(format!(
                "{what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Checks that the endpoint serves this chain; remembered once it matched.
    pub async fn check_chain(&self) -> Result<(), CallError> {
        if self.checked.initialized() {
            return Ok(());
        }
        let actual = self
            .call(
                "eth_chainId",
                alloy::providers::Provider::get_chain_id(&self.provider),
            )
            .await?;
        let expected = self.chain.chain_id();
        if actual != expected {
            return Err(CallError::WrongChain { expected, actual });
        }
        let _ = self.checked.set(());
        Ok(())
    }
}

/// `text` with every URL replaced by `<rpc url>`: transport errors name the endpoint, and
/// an RPC URL often carries an API key in its path, so it must not reach a client or a log.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..at]);
        out.push_str("<rpc url>");
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | ',' | '>'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact_urls(
                "error sending request for url (https://rpc.example/v2/SECRET): refused"
            ),
            "error sending request for url (<rpc url>): refused"
        );
        assert_eq!(super::redact_urls("no url here"), "no url here");
        assert_eq!(
            super::redact_urls("http://a/x and http://b/y"),
            "<rpc url> and <rpc url>"
        );
    }
}
