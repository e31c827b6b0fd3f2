//! The daily-spend chart: one bar per day as inline SVG, scaled in integer arithmetic so
//! money never passes through a float. It uses presentation attributes only (no `style`
//! attribute), which the dashboard's CSP allows.

use aibank_core::clock::rfc3339;
use aibank_core::Usd;
use maud::{html, Markup};

use super::pages::money;

const WIDTH: i64 = 600;
const HEIGHT: i64 = 160;
/// Room under the bars for the first and last day's dates.
const LABELS: i64 = 18;
const GAP: i64 = 2;

/// The bar's height in pixels for `micros` when the tallest bar is `max` micros.
fn bar_height(micros: i64, max: i64) -> i64 {
    if max <= 0 || micros <= 0 {
        return 0;
    }
    let h = i128::from(micros) * i128::from(HEIGHT - LABELS) / i128::from(max);
    // At least a pixel, so a day with any spending shows.
    i64::try_from(h).unwrap_or(HEIGHT - LABELS).max(1)
}

fn day_label(day_ms: i64) -> String {
    rfc3339(day_ms).chars().take(10).collect()
}

/// `days` as (start of the UTC day in ms, spent), oldest first.
pub fn daily_spend(days: &[(i64, Usd)]) -> Markup {
    let n = i64::try_from(days.len()).unwrap_or(1).max(1);
    let slot = WIDTH / n;
    let max = days.iter().map(|(_, u)| u.micros()).max().unwrap_or(0);
    let base = HEIGHT - LABELS;
    let total = days
        .iter()
        .try_fold(Usd::ZERO, |acc, (_, u)| acc.checked_add(*u))
        .unwrap_or(Usd::ZERO);
    html! {
        svg #spend-chart xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT)
            aria-label={ "Daily spend over the last " (days.len()) " days, " (money(total)) " in all" }
            data-days=(days.len()) data-max-micros=(max) {
            line x1="0" y1=(base) x2=(WIDTH) y2=(base) stroke="#c4c8cf" stroke-width="1" {}
            @for (i, (day, spent)) in (0_i64..).zip(days) {
                @let h = bar_height(spent.micros(), max);
                rect .bar x=(i * slot + GAP / 2) y=(base - h) width=(slot - GAP) height=(h)
                    fill="#2457d6" data-day=(day_label(*day)) data-micros=(spent.micros()) {
                    title { (day_label(*day)) ": " (money(*spent)) }
                }
            }
            @if let (Some((first, _)), Some((last, _))) = (days.first(), days.last()) {
                text x="0" y=(HEIGHT - 4) font-size="11" fill="#5b6270" { (day_label(*first)) }
                text x=(WIDTH) y=(HEIGHT - 4) font-size="11" fill="#5b6270" text-anchor="end" {
                    (day_label(*last))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bars_scale_to_the_tallest_and_any_spend_shows() {
        assert_eq!(bar_height(0, 0), 0);
        assert_eq!(bar_height(0, 10), 0);
        assert_eq!(bar_height(10, 10), HEIGHT - LABELS);
        assert_eq!(bar_height(5, 10), (HEIGHT - LABELS) / 2);
        assert_eq!(bar_height(1, i64::MAX), 1);
        assert_eq!(bar_height(i64::MAX, i64::MAX), HEIGHT - LABELS);
    }

    #[test]
    fn one_bar_per_day() {
        let days: Vec<(i64, Usd)> = (0..30)
            .map(|i| (i * 86_400_000, Usd::from_micros(i * 1000)))
            .collect();
        let svg = daily_spend(&days).into_string();
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 30);
        assert!(svg.contains("data-day=\"1970-01-30\" data-micros=\"29000\""));
        assert!(!svg.contains("style="));
    }
}
