//! The model a call names, checked against its key's and its agent's `allowedModels`
//! before anything is held. (Requests and tokens per minute are counted with the hold, in
//! `billing`.)

use aibank_auth::limits::allows;
use aibank_auth::{ApiKeyAuth, KeyLimits};
use aibank_core::ApiError;

/// 403 naming `model` unless both the agent's and the key's patterns (where set) allow it.
pub(crate) fn check_model(caller: &ApiKeyAuth, model: &str) -> Result<(), ApiError> {
    for (whose, limits) in [
        ("agent", KeyLimits::of_agent(&caller.agent)),
        ("key", caller.limits.clone()),
    ] {
        if let Some(patterns) = limits.models() {
            if !allows(&patterns, model) {
                return Err(ApiError::forbidden(format!(
                    "Model `{model}` is not allowed for this API key"
                ))
                .with("field", "model")
                .with("model", model)
                .with("allowedModels", patterns)
                .with("limitedBy", whose));
            }
        }
    }
    Ok(())
}
