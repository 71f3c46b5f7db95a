//! `GET /status` (admin token): the operator's page, and `GET /api/v1/activity` that
//! feeds its chart.
//!
//! The page shows the servers as `boxless status` does and, as an inline SVG drawn on the
//! server side, deposits and notices per minute over the last hour, summed over every
//! server (a router process asks each server's API, within a bound, as for messages). It
//! reloads itself every 15 s; no script, no external asset.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxless_core::now_ms;
use boxless_store::Activity;
use serde_json::Value;

use crate::ApiState;

const MINUTES: u32 = 60;

const STYLE: &str = "\
body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#111;background:#fff}\
main{max-width:60rem;margin:0 auto;padding:1rem}\
h1{font-size:1.35rem}h2{font-size:1.1rem;margin-top:1.5rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ccc}\
th.n,td.n{text-align:right;font-variant-numeric:tabular-nums}\
.up{color:#0a6b2d}.down{color:#b3261e}.draining{color:#8a5a00}\
svg{width:100%;height:auto;max-width:60rem}.note{color:#555}";

/// Summed activity of the stores in this process (zeros when it has none), each read on
/// its own reader.
async fn local(s: &ApiState, now: u64) -> Result<Activity, String> {
    let mut sum = Activity::empty(now, MINUTES);
    for st in &s.stores {
        let a = st
            .read(move |st| st.activity(now, MINUTES))
            .await
            .and_then(|r| r)
            .map_err(|e| e.to_string())?;
        add(&mut sum, &a);
    }
    Ok(sum)
}

fn add(sum: &mut Activity, a: &Activity) {
    for (x, y) in sum.deposits.iter_mut().zip(&a.deposits) {
        *x += y;
    }
    for (x, y) in sum.notices.iter_mut().zip(&a.notices) {
        *x += y;
    }
}

fn from_json(v: &Value) -> Option<Activity> {
    let list = |k: &str| -> Option<Vec<u32>> {
        v[k].as_array()?
            .iter()
            .map(|n| n.as_u64().map(|n| n.min(u64::from(u32::MAX)) as u32))
            .collect()
    };
    Some(Activity {
        from_ms: v["from_ms"].as_u64()?,
        deposits: list("deposits")?,
        notices: list("notices")?,
    })
}

/// Everything's activity: this process's stores, then each remote server's, asked at
/// once; the ids of those that did not answer.
async fn gather(s: &ApiState, headers: &HeaderMap) -> (Activity, Vec<String>) {
    let now = now_ms();
    let mut sum = local(s, now)
        .await
        .unwrap_or_else(|_| Activity::empty(now, MINUTES));
    let (answers, mut missing) = crate::ask_remotes(s, headers, "/api/v1/activity").await;
    for (id, v) in answers {
        match from_json(&v) {
            Some(a) if a.deposits.len() == MINUTES as usize => add(&mut sum, &a),
            _ => missing.push(id),
        }
    }
    missing.sort();
    (sum, missing)
}

/// `GET /api/v1/activity`: this process's stores' per-minute counts, last hour.
#[utoipa::path(get, path = "/api/v1/activity", tag = "servers",
    responses((status = 200, description = "Deposits and notices per minute, this process's servers", body = crate::schema::ActivityView)))]
pub(crate) async fn activity(State(s): State<ApiState>) -> Response {
    let now = now_ms();
    match local(&s, now).await {
        Ok(a) => axum::Json(crate::schema::ActivityView {
            from_ms: a.from_ms,
            minute_ms: 60_000,
            deposits: a.deposits,
            notices: a.notices,
        })
        .into_response(),
        Err(e) => crate::error(StatusCode::INTERNAL_SERVER_ERROR, "store", &e),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Two series of per-minute counts as bars (deposits) and a line (notices), with axes.
pub(crate) fn chart(a: &Activity) -> String {
    let (w, h, left, bottom, top) = (720.0_f64, 220.0_f64, 40.0, 28.0, 12.0);
    let n = a.deposits.len().max(1);
    let max = a
        .deposits
        .iter()
        .chain(&a.notices)
        .copied()
        .max()
        .unwrap_or(0)
        .max(4);
    let plot_w = w - left - 8.0;
    let plot_h = h - bottom - top;
    let x = |i: usize| left + plot_w * i as f64 / n as f64;
    let y = |v: u32| top + plot_h * (1.0 - f64::from(v) / f64::from(max));
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"chart-title\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"chart-title\">Deposits (bars) and notifications (line) per minute, last {n} minutes; peak {max}</title>"
    );
    // Grid and y labels at 0, max/2, max.
    for v in [0, max / 2, max] {
        let yy = y(v);
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">{v}</text>",
            w - 8.0,
            left - 6.0,
            yy + 4.0
        ));
    }
    let bw = (plot_w / n as f64 * 0.7).max(1.0);
    for (i, &v) in a.deposits.iter().enumerate() {
        if v > 0 {
            svg.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"#0b57d0\"><title>{v} deposits</title></rect>",
                x(i),
                y(v),
                y(0) - y(v)
            ));
        }
    }
    let points: Vec<String> = a
        .notices
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", x(i) + bw / 2.0, y(v)))
        .collect();
    svg.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#c5221f\" stroke-width=\"2\"/>",
        points.join(" ")
    ));
    // Time labels: -60, -45, -30, -15 min and now.
    for back in [60usize, 45, 30, 15, 0] {
        let i = n.saturating_sub(back);
        let label = if back == 0 {
            "now".to_string()
        } else {
            format!("−{back} min")
        };
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            x(i).min(w - 20.0),
            h - 8.0
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// `GET /status`.
pub(crate) async fn page(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let now = now_ms();
    let at = s.board.status_time(now);
    let mut rows = String::new();
    for slot in &s.board.slots {
        let v = slot.view();
        let state = v.effective_state(at, s.ttl_ms).as_str();
        let seen = if v.last_update_ms == 0 {
            "never".to_string()
        } else {
            format!(
                "{:.1} s ago",
                now.saturating_sub(v.last_update_ms) as f64 / 1000.0
            )
        };
        // "-": the server keeps its messages on its own disk only.
        let unreplicated = v.unreplicated.map_or("-".to_string(), |n| n.to_string());
        rows.push_str(&format!(
            "<tr><td>{}</td><td class=\"{state}\">{state}</td><td class=\"n\">{}/{}</td><td class=\"n\">{:.1} GiB</td><td class=\"n\">{seen}</td><td class=\"n\">{unreplicated}</td></tr>",
            esc(&slot.id),
            v.active,
            v.capacity,
            v.free_disk as f64 / (1u64 << 30) as f64,
        ));
    }
    let (a, missing) = gather(&s, &headers).await;
    let (dep, not): (u32, u32) = (a.deposits.iter().sum(), a.notices.iter().sum());
    let missing_note = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"note\">Not counted (their API did not answer): {}</p>",
            esc(&missing.join(", "))
        )
    };
    let health = crate::degraded(&s)
        .map(|d| format!("<p class=\"down\">{}</p>", esc(&d)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"15\"><title>Boxless status</title>\
         <style>{STYLE}</style></head><body><main><h1>Boxless status</h1>{health}\
         <table><thead><tr><th>ID</th><th>STATE</th><th class=\"n\">ACTIVE/CAP</th><th class=\"n\">FREE DISK</th><th class=\"n\">LAST SEEN</th><th class=\"n\">UNREPLICATED</th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <h2>Last hour: deposits {dep}, notifications {not}</h2>{chart}\
         <p class=\"note\">Bars: messages stored per minute. Line: notices sent per minute (SMS, e-mail, webhook). \
         Refreshes every 15 s; generated {gen}.</p>{missing_note}</main></body></html>",
        chart = chart(&a),
        gen = boxless_core::rfc3339(now),
    );
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        crate::page::sha256_b64(STYLE)
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_a_bar_per_busy_minute_and_one_line() {
        let mut a = Activity {
            from_ms: 0,
            deposits: vec![0; 60],
            notices: vec![0; 60],
        };
        a.deposits[10] = 3;
        a.deposits[59] = 7;
        a.notices[59] = 5;
        let svg = chart(&a);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("peak 7") && svg.contains(">now<"));
        assert!(svg.len() < 12 * 1024, "{} bytes", svg.len());
        let back = from_json(
            &serde_json::json!({"from_ms": 5, "deposits": a.deposits, "notices": a.notices}),
        )
        .unwrap();
        assert_eq!(back.deposits[59], 7);
        assert!(
            from_json(&serde_json::json!({"from_ms": 5, "deposits": [1, "x"], "notices": []}))
                .is_none()
        );
    }
}
