//! Logging. Everything goes to stderr (stdout is reserved for command output such as a new
//! key); `AIBANK_LOG` or `RUST_LOG` sets the filter, `AIBANK_LOG_FORMAT=json` the format.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = std::env::var("AIBANK_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(secret_safe(filter))
        .with_writer(std::io::stderr);
    let res = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Already initialised (tests, embedding): keep the existing subscriber.
    drop(res);
}

/// Caps the log filter where dependencies would print secrets at debug level: alloy's HTTP
/// transport opens a debug span carrying the RPC URL, and hosted RPC URLs embed an API key.
pub fn secret_safe(filter: EnvFilter) -> EnvFilter {
    match "alloy_transport_http=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}
