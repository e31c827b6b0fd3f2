//! Following an SSE stream for the usage it reports, whatever the dialect.
//!
//! The dialect's metered API reads each event (see [`Metered::stream_event`]); this module
//! splits the bytes into events, wherever the chunks break. When a stream ends without its
//! usage — cut off, timed out, or the client left — the meter still knows what it saw:
//! whatever usage events did arrive, and the text streamed so far, counted as one token per
//! 4 characters.

use serde_json::Value;

use crate::dialect::{Metered, Seen};
use crate::prices::Tokens;

/// Characters per token when counting streamed text without a usage report.
pub const CHARS_PER_TOKEN: u64 = 4;
/// An event larger than this without a delimiter is dropped rather than buffered.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Follows an SSE stream and keeps the usage it reports.
pub struct SseMeter {
    api: &'static dyn Metered,
    buf: Vec<u8>,
    seen: Seen,
}

impl std::fmt::Debug for SseMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseMeter")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl SseMeter {
    pub fn new(api: &'static dyn Metered) -> Self {
        SseMeter {
            api,
            buf: Vec::new(),
            seen: Seen::default(),
        }
    }

    /// Feeds raw bytes as they arrive; events may be split anywhere.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        while let Some((end, skip)) = find_event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
            self.event(&event);
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            self.buf.clear();
        }
    }

    fn event(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) else {
            return;
        };
        self.api.stream_event(&v, &mut self.seen);
    }

    /// True once the stream has reported its final usage.
    pub fn complete(&self) -> bool {
        self.seen.prompt_reported && self.seen.output_reported
    }

    /// The usage the upstream reported, without estimates.
    pub fn reported(&self) -> Tokens {
        self.seen.tokens
    }

    /// The usage to bill: what was reported, with gaps filled from what was seen —
    /// `prompt_estimate` when the prompt side never arrived, and streamed text at
    /// [`CHARS_PER_TOKEN`] when the output count never arrived (or is lower).
    pub fn billable(&self, prompt_estimate: u64) -> Tokens {
        let mut t = self.seen.tokens;
        if !self.seen.prompt_reported {
            t.input = prompt_estimate;
        }
        if !self.seen.output_reported {
            t.output = t.output.max(self.seen.text_chars.div_ceil(CHARS_PER_TOKEN));
        }
        t
    }
}

/// The end of the first complete event in `buf` and the delimiter length.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
