//! Path policy: which paths reach an upstream at all. A path is forwarded only when it is
//! plain (nothing an HTTP client or upstream would resolve into another endpoint) and its
//! dialect names it as an endpoint, metered or free.

use crate::dialect::{Dialect, Endpoint};

/// The router keeps `%2F` escaped; SDKs that escape the `/` in a model id (OpenAI's Node
/// SDK) mean a `/`, which is how the other SDKs send it.
pub(crate) fn unescape_slashes(tail: &str) -> String {
    if tail.contains('%') {
        tail.replace("%2F", "/").replace("%2f", "/")
    } else {
        tail.to_owned()
    }
}

/// What `method tail` is at `dialect`; `None`: not forwarded.
pub(crate) fn endpoint(dialect: &dyn Dialect, method: &str, tail: &str) -> Option<Endpoint> {
    if !plain_path(tail) {
        return None;
    }
    dialect.endpoint(method, tail.trim_end_matches('/'))
}

/// Whether a path is safe to append to a provider's base URL as it is: segments of
/// letters, digits and `-._~:@+`, none empty (a trailing `/` aside), none `.` or `..`.
/// The URL parser would resolve dot segments (and `\` as `/`) before sending, so
/// `v1/models/../chat/completions` would reach an endpoint the gateway never allowed, with
/// the platform's key. Percent escapes are refused too: the router has decoded the path
/// already, except the escapes (`%25`, `%2B`; `%2F` is read as `/` before this check) an
/// upstream could decode again.
pub(crate) fn plain_path(tail: &str) -> bool {
    let tail = tail.strip_suffix('/').unwrap_or(tail);
    !tail.is_empty()
        && tail.split('/').all(|segment| {
            !matches!(segment, "" | "." | "..")
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~:@+".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_are_forwarded() {
        for ok in [
            "v1/messages",
            "v1/models/gpt-4o",
            "v1/models/ft:gpt-4o:org:x@1/",
            "v1/models/meta-llama/Llama-3.3",
        ] {
            assert!(plain_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "v1/models/..",
            "v1/models/./x",
            "v1//models",
            "v1/models/a%2Fb",
            "v1/models/..\\x",
            "v1/models/a b",
            "v1/models/ä",
        ] {
            assert!(!plain_path(bad), "{bad}");
        }
    }
}
