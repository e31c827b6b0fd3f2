//! Cursor pagination shared by every list endpoint.

use serde::{Deserialize, Serialize};

use crate::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// `?limit=&cursor=`; the cursor is the `next_cursor` of the previous page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Where a page starts: strictly after the item with this (created_at, id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl PageQuery {
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid_field(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }

    pub fn cursor(&self) -> Result<Option<Cursor>, ApiError> {
        let Some(raw) = self.cursor.as_deref() else {
            return Ok(None);
        };
        let bad = || ApiError::invalid_field("cursor", "cursor is not one this server issued");
        // Exactly what `encode` writes (and the document's pattern says): digits, a dot, an id.
        let (ts, id) = raw.split_once('.').ok_or_else(bad)?;
        let digits = !ts.is_empty() && ts.len() <= 18 && ts.bytes().all(|b| b.is_ascii_digit());
        let id_chars = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if !digits || id.is_empty() || id.len() > 64 || !id.bytes().all(id_chars) {
            return Err(bad());
        }
        let created_at = ts.parse::<i64>().map_err(|_| bad())?;
        Ok(Some(Cursor {
            created_at,
            id: id.to_owned(),
        }))
    }
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }
}

/// One page of a list, newest first.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: u32,
        key: impl Fn(&R) -> Cursor,
        map: impl FnMut(R) -> T,
    ) -> Self {
        let limit = limit as usize;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more {
            rows.last().map(|r| key(r).encode())
        } else {
            None
        };
        Page {
            data: rows.into_iter().map(map).collect(),
            has_more,
            next_cursor,
        }
    }
}
