// An officer's own page: their alerts and outcomes, their measurements within the retention
// window, who read their data and why, and an export of everything. Purpose: officer_self_access.
import { PRIORITY_ICON, fill, api, el, explain, labels, startPage, when } from "./common.js";
import { hrPlot } from "./hrplot.js";

const PURPOSE = "officer_self_access";
const MAX_ROWS = 100000;  // the API's cap per read; the export has no cap
const $ = (id) => document.getElementById(id);

async function loadAlerts() {
  try {
    const [rows, words] = await Promise.all([api("/alerts", { query: { limit: 500 } }), labels()]);
    const priority = (p) => (words.priorities[p] ? `${PRIORITY_ICON[p] || ""} ${p} — ${words.priorities[p]}` : String(p));
    fill($("my-alerts"), ...rows.map((a) => el("tr", {},
      el("td", {}, when(a.raised_at)), el("td", {}, a.title || a.kind), el("td", {}, priority(a.priority)),
      el("td", {}, words.states[a.state] || a.state), el("td", {}, a.outcome ? words.outcomes[a.outcome] || a.outcome : "—"))));
    $("my-alerts-empty").hidden = rows.length > 0;
  } catch (err) {
    $("my-alerts-empty").hidden = false;
    $("my-alerts-empty").textContent = explain(err, "Your alerts");
  }
}

/** Hours derived features are kept, read from the policy document in force. */
async function retentionHours() {
  try {
    const p = await api("/policy", { query: { document: "true" } });
    const m = /derived_features:[\s\S]*?max_age_hours:\s*(\d+)/.exec(p.document || "");
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function loadVitals() {
  const hours = await retentionHours();
  $("retention").textContent = hours
    ? `Vigil keeps these measurements for ${hours / 24} days (policy), longer only when they belong to an incident record. Shown: the whole window.`
    : "Shown: the measurements Vigil still holds.";
  const end = new Date();
  const start = hours ? new Date(end.getTime() - hours * 3600 * 1000) : undefined;
  try {
    const v = await api("/me/vitals", { query: { purpose: PURPOSE, start: start && start.toISOString(), end: end.toISOString(), limit: MAX_ROWS } });
    const rows = v.rows || [];
    if (!rows.length) {
      fill($("my-vitals"), el("p", { class: "muted" }, "No measurements are held for you in this window."));
      return;
    }
    const days = new Map();
    for (const r of rows) {
      const day = r.time.slice(0, 10);
      const d = days.get(day) || { n: 0, hr: [], activities: new Map() };
      d.n += 1;
      if (r.heart_rate != null) d.hr.push(r.heart_rate);
      if (r.activity) d.activities.set(r.activity, (d.activities.get(r.activity) || 0) + 1);
      days.set(day, d);
    }
    fill($("my-vitals"), 
      el("p", {}, `${rows.length} one-second measurements from ${when(rows[0].time)} to ${when(rows[rows.length - 1].time)}` +
        (rows.length >= MAX_ROWS ? " (first part shown; the export has all of it)" : "") + `. This read is audit entry #${v.audit_seq}.`),
      el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Day", "Measurements", "Heart rate min / median / max", "Activity"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, [...days.entries()].map(([day, d]) => {
          const hr = d.hr.sort((a, b) => a - b);
          const hrText = hr.length ? `${Math.round(hr[0])} / ${Math.round(hr[Math.floor(hr.length / 2)])} / ${Math.round(hr[hr.length - 1])} bpm` : "—";
          const act = [...d.activities.entries()].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${Math.round((100 * n) / d.n)} %`).join(", ");
          return el("tr", {}, el("td", {}, day), el("td", {}, String(d.n)), el("td", {}, hrText), el("td", {}, act || "—"));
        })))),
      el("h3", { id: "my-hr-h" }, "My heart rate"),
      el("div", { id: "my-hr" }));
    if (rows.some((r) => r.heart_rate != null)) {
      await hrPlot($("my-hr"), rows, { height: 220,
        caption: "Heart rate as your wearable reported it, one value a second; the line stops where nothing was reported (off shift, device off or not worn)." });
    } else {
      $("my-hr").append(el("p", { class: "muted" }, "No heart rate was reported in this window."));
    }
  } catch (err) {
    fill($("my-vitals"), el("p", { class: "error" }, explain(err, "Your measurements")));
  }
}

async function loadAccesses() {
  try {
    const r = await api("/me/access-report", { query: { purpose: PURPOSE } });
    const rows = [...r.accesses].reverse();
    fill($("accesses"), ...rows.map((a) => el("tr", {},
      el("td", {}, when(a.at)), el("td", {}, a.who), el("td", {}, a.role || "—"), el("td", {}, a.purpose || "(none declared)"),
      el("td", {}, a.data_class || "—"), el("td", {}, a.outcome === "refused" ? "✕ refused" : "✓ granted"), el("td", {}, a.rule || "—"))));
    $("accesses-empty").hidden = rows.length > 0;
  } catch (err) {
    $("accesses-empty").hidden = false;
    $("accesses-empty").textContent = explain(err, "Your access report");
  }
}

async function exportAll() {
  const state = $("export-state");
  state.textContent = "Preparing your export…";
  try {
    const data = await api("/me/export", { query: { purpose: PURPOSE } });
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
    const link = el("a", { href: URL.createObjectURL(blob), download: `vigil-my-data-${new Date().toISOString().slice(0, 10)}.json` });
    document.body.append(link);
    link.click();
    link.remove();
    state.textContent = `Exported ${data.alerts.length} alerts, ${data.features.length} measurements and ${data.access_report.length} access records.`;
  } catch (err) {
    state.textContent = explain(err, "The export");
  }
}

async function main() {
  await startPage(["officer"]);
  $("export").addEventListener("click", exportAll);
  // the report after this page's own reads: they are in it (it missed them until a reload)
  await Promise.all([loadAlerts(), loadVitals()]);
  await loadAccesses();
}

main().catch(() => {});
