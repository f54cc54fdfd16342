// The dashboard: fetches /api/* every few seconds and draws it (plotly.js, served locally).
// Amounts arrive as exact decimal strings; Number() them only to draw.
"use strict";

const REFRESH_MS = 3000;
const LAYOUT = {
  margin: { l: 48, r: 12, t: 6, b: 36 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
  font: { family: "-apple-system, Segoe UI, Roboto, Arial, sans-serif", size: 12, color: "#1d2433" },
  xaxis: { gridcolor: "#eef0f3" }, yaxis: { gridcolor: "#eef0f3", rangemode: "tozero" },
};
const CONFIG = { displayModeBar: false, responsive: true };
const ACCENT = "#2f6fed";
let currency = "USD";

const money = (v) => v == null ? "–" : Number(v).toLocaleString(undefined, { style: "currency", currency, maximumFractionDigits: 2 });
const count = (v) => v == null ? "–" : Number(v).toLocaleString();
const percent = (v) => v == null ? "–" : (100 * Number(v)).toFixed(1) + "%";
const seconds = (v) => v == null ? "–" : v < 90 ? v.toFixed(1) + " s" : (v / 60).toFixed(1) + " min";

async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function empty(id, message) {
  const el = document.getElementById(id);
  Plotly.purge(el);
  el.innerHTML = `<div class="empty">${message}</div>`;
}

function plot(id, traces, layout) {
  const el = document.getElementById(id);
  if (el.querySelector(".empty")) el.innerHTML = "";
  // A fresh copy per chart: Plotly writes its computed axis type and range back into the
  // layout it is given, which would leak one chart's axes (say, categories) into another.
  const base = structuredClone(LAYOUT);
  const own = layout || {};
  Plotly.react(el, traces, { ...base, ...own, xaxis: { ...base.xaxis, ...own.xaxis },
    yaxis: { ...base.yaxis, ...own.yaxis } }, CONFIG);
}

function drawKpis(k) {
  currency = k.currency || currency;
  const formats = { revenue: money, paid_orders: count, conversion_rate: percent, avg_order_value: money, visitors: count };
  for (const [key, format] of Object.entries(formats)) {
    const now = k.current ? k.current[key] : null;
    const before = k.previous ? k.previous[key] : null;
    document.getElementById("kpi-" + key).textContent = format(now);
    const delta = document.getElementById("delta-" + key);
    delta.className = "delta";
    if (now != null && before != null && Number(before) !== 0) {
      const change = (Number(now) - Number(before)) / Math.abs(Number(before));
      delta.textContent = (change >= 0 ? "▲ " : "▼ ") + Math.abs(100 * change).toFixed(1) + "% vs yesterday";
      delta.classList.add(change >= 0 ? "up" : "down");
    } else {
      delta.textContent = before == null ? "no data for yesterday" : "";
    }
  }
  document.getElementById("kpi-note").textContent = k.message || `Day ${k.day} (${currency}).`;
}

const MINUTE_MS = 60000;

function drawGmv(p) {
  if (!p.rows.length) return empty("gmv", p.message);
  // Always the whole last hour, so a bar is a minute wide however few minutes have sales.
  const newest = Math.max(...p.rows.map((r) => Date.parse(r.minute_bucket)));
  const end = Math.max(Date.now(), newest + MINUTE_MS);
  plot("gmv", [
    { x: p.rows.map((r) => r.minute_bucket), y: p.rows.map((r) => Number(r.gmv)), type: "bar", name: "GMV",
      width: p.rows.map(() => 0.8 * MINUTE_MS), marker: { color: ACCENT }, hovertemplate: "%{x|%H:%M}<br>%{y:,.2f} " + currency + "<extra></extra>" },
  ], { xaxis: { type: "date", tickformat: "%H:%M", range: [end - 60 * MINUTE_MS, end], dtick: 10 * MINUTE_MS },
       yaxis: { type: "linear", title: { text: currency } } });
}

function drawFunnel(p) {
  if (!p.rows.length) return empty("funnel", p.message);
  const r = p.rows[0];
  const steps = ["Sessions", "Product view", "Add to cart", "Checkout", "Purchase"];
  const values = [r.sessions, r.product_view_sessions, r.cart_sessions, r.checkout_sessions, r.purchase_sessions];
  plot("funnel", [{ type: "funnel", y: steps, x: values, textinfo: "value+percent previous",
    marker: { color: ["#2f6fed", "#4b83f0", "#6a98f2", "#8aaef5", "#a9c3f7"] } }],
    { margin: { l: 96, r: 12, t: 6, b: 10 } });
}

function drawProducts(p) {
  const el = document.getElementById("products");
  if (!p.rows.length) { el.innerHTML = `<div class="empty">${p.message}</div>`; return; }
  const rows = p.rows.map((r) => `<tr><td>${r.product_name || r.product_id}</td><td>${r.category || ""}</td>` +
    `<td class="num">${count(r.total_views)}</td><td class="num">${money(r.revenue)}</td>` +
    `<td class="num">${Number(r.recommendation_score).toFixed(2)}</td></tr>`).join("");
  el.innerHTML = `<table><thead><tr><th>Product</th><th>Category</th><th class="num">Views</th>` +
    `<th class="num">Revenue</th><th class="num">Score</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function drawCategories(p) {
  if (!p.rows.length) return empty("categories", p.message);
  const rows = [...p.rows].reverse();
  plot("categories", [{ type: "bar", orientation: "h", y: rows.map((r) => r.category), x: rows.map((r) => Number(r.revenue)),
    marker: { color: ACCENT }, hovertemplate: "%{y}: %{x:,.2f} " + currency + "<extra></extra>" }],
    { margin: { l: 96, r: 12, t: 6, b: 30 } });
}

function drawSegments(p) {
  if (!p.rows.length) return empty("segments", p.message);
  plot("segments", [{ type: "pie", hole: 0.55, labels: p.rows.map((r) => r.segment), values: p.rows.map((r) => r.customers),
    textinfo: "label+percent", sort: false,
    marker: { colors: ["#2f6fed", "#1a9a5a", "#f0a030", "#8a63d2", "#d2403a", "#6b7385"] } }],
    { showlegend: false, margin: { l: 10, r: 10, t: 6, b: 6 } });
}

function figures(id, pairs) {
  document.getElementById(id).innerHTML = pairs.map(([k, v]) => `<div class="k">${k}</div><div class="v">${v}</div>`).join("");
}

function drawQuality(p, runtime) {
  // No report rows yet (nothing arrived, or the report not computed yet): dashes, not zeros.
  const t = p.rows.length && p.totals ? p.totals : { rows_in: null, quarantined: null, duplicates: null, late: null, reasons: {} };
  const rate = t.rows_in ? (100 * t.quarantined / t.rows_in).toFixed(2) + "%" : "–";
  const pairs = [["Records in", count(t.rows_in)], ["Quarantined", `${count(t.quarantined)} (${rate})`],
    ["Duplicates dropped", count(t.duplicates)], ["Late events", count(t.late)]];
  const rejected = (runtime && runtime.rejected_at_gateway) || {};
  const total = Object.values(rejected).reduce((a, b) => a + b, 0);
  if (runtime) pairs.push(["Rejected at the gateway", count(total)]);
  figures("quality-figures", pairs);
  const merged = { ...t.reasons };
  for (const [reason, n] of Object.entries(rejected)) merged[reason] = (merged[reason] || 0) + n;
  const reasons = Object.entries(merged).sort((a, b) => b[1] - a[1]);
  if (!reasons.length) return empty("quality", p.message || "No record rejected or quarantined today.");
  plot("quality", [{ type: "bar", orientation: "h", y: reasons.map(([r]) => r), x: reasons.map(([, n]) => n),
    marker: { color: "#d2403a" } }], { margin: { l: 120, r: 12, t: 6, b: 24 } });
}

function drawHealth(h) {
  const f = h.freshness_s || {};
  const r = h.runtime || {};
  const rate = (v) => v == null ? "–" : count(Math.round(v)) + "/s";
  const ms = (v) => v == null ? "–" : (v * 1000).toFixed(0) + " ms";
  figures("health", [
    ["Transport lag", h.lag == null ? "–" : count(h.lag) + " records"],
    ["Accepted", rate(r.accepted_per_s)],
    ["Bronze", rate(r.bronze_per_s)], ["Silver", rate(r.silver_per_s)],
    ["Latency p50", ms(r.latency_p50_s)], ["Latency p95", ms(r.latency_p95_s)],
    ["Last bronze commit", seconds(f.bronze) + " ago"], ["Last silver commit", seconds(f.silver) + " ago"],
    ["Last gold commit", seconds(f.gold) + " ago"],
  ]);
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [kpis, gmv, funnel, products, categories, segments, quality, health] = await Promise.all(
      ["/api/kpis", "/api/gmv", "/api/funnel", "/api/products", "/api/categories", "/api/segments",
       "/api/quality", "/api/health"].map(get));
    drawKpis(kpis); drawGmv(gmv); drawFunnel(funnel); drawProducts(products);
    drawCategories(categories); drawSegments(segments); drawQuality(quality, health.runtime); drawHealth(health);
    status.className = "status live";
    document.getElementById("status-text").textContent = "live · updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (err) {
    status.className = "status down";
    document.getElementById("status-text").textContent = "cannot reach the pipeline — retrying";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
