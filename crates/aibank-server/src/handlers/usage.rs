//! Usage listings shared by the agent and platform views.

use aibank_core::clock::parse_rfc3339;
use aibank_core::{ApiError, Page, PageQuery, Usd};
use aibank_store::repo::cursor_of;
use aibank_store::repo::usage::{self, Range};
use aibank_store::{DbPool, StoreError};
use serde::{Deserialize, Serialize};

use crate::views::usage::UsageItem;

/// `?from=&to=&limit=&cursor=`; times are RFC 3339 or epoch milliseconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn parse_time(field: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    // Epoch milliseconds are plain digits (as the document's pattern says): no sign.
    let millis = v.len() <= 15 && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    millis
        .then(|| v.parse::<i64>().ok())
        .flatten()
        .or_else(|| parse_rfc3339(v))
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!("`{field}` must be an RFC 3339 timestamp or epoch milliseconds"),
            )
        })
}

#[derive(Debug, Serialize)]
pub struct Totals {
    count: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: Usd,
}

#[derive(Debug, Serialize)]
pub struct UsagePage {
    #[serde(flatten)]
    page: Page<UsageItem>,
    /// Over the whole filtered range, not only this page.
    totals: Totals,
}

/// One page of an agent's usage in the requested range, with totals.
pub async fn page(pool: &DbPool, agent_id: String, q: UsageQuery) -> Result<UsagePage, ApiError> {
    let pq = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let (limit, cursor) = (pq.limit()?, pq.cursor()?);
    let range = Range {
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
    };
    let (rows, (count, input_tokens, output_tokens, cost)) = pool
        .run(move |c| {
            let rows =
                usage::list_for_agent(c, &agent_id, range, cursor.as_ref(), i64::from(limit) + 1)?;
            let totals = usage::totals(c, &agent_id, range)?;
            Ok::<_, StoreError>((rows, totals))
        })
        .await?;
    Ok(UsagePage {
        page: Page::from_rows(
            rows,
            limit,
            |r| cursor_of(r.created_at, &r.id),
            UsageItem::from,
        ),
        totals: Totals {
            count,
            input_tokens,
            output_tokens,
            cost_usd: Usd::from_micros(cost),
        },
    })
}
