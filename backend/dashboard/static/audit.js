// The auditor's view: the audit chain's verification, the policy in force, the transparency
// report with its charts (inline SVG), and the audit log with filters. Every read declares
// the purpose oversight_audit.
import { fill, api, el, explain, labels, notify, startPage, svg, when } from "./common.js";

const PURPOSE = "oversight_audit";
const $ = (id) => document.getElementById(id);
const OPEN = "still open";  // the report's "open": no outcome yet (backend/privacy/reports.py)
let entries = [];

async function verifyChain() {
  const box = $("chain");
  box.textContent = "Checking…";
  try {
    const v = await api("/audit/verify", { query: { purpose: PURPOSE } });
    fill(box, 
      el("p", { class: v.ok ? "chain-ok" : "chain-bad" },
        el("span", { "aria-hidden": "true" }, v.ok ? "✓ " : "✕ "),
        v.ok ? "Chain intact: no entry edited, deleted or reordered" : `Chain BROKEN: ${v.problems.length} problem(s)`),
      el("p", {}, `${v.entries} entries · head #${v.head_seq} · `, el("code", { title: v.head_hash }, String(v.head_hash).slice(0, 16) + "…")),
      v.problems.length ? el("ul", {}, v.problems.map((p) => el("li", {}, p))) : null);
  } catch (err) {
    fill(box, el("p", { class: "error" }, explain(err, "Verifying the audit chain")));
  }
}

async function loadPolicy() {
  try {
    const p = await api("/policy");
    fill($("policy"), 
      el("p", {}, "Version ", el("strong", {}, p.version), ` · in force since ${when(p.effective_at)}`),
      el("p", {}, "SHA-256 ", el("code", { class: "small" }, p.sha256)),
      el("h3", {}, "Purposes"),
      el("ul", {}, Object.entries(p.purposes || {}).map(([k, v]) => el("li", {}, el("strong", {}, k), ` — ${v}`))),
      el("h3", {}, "Always refused for biometric data"),
      el("p", {}, (p.always_refused || []).join(", ") || "—"),
      (p.pending || []).length ? el("p", { class: "purpose" }, `Pending changes: ${p.pending.map((x) => `${x.version} from ${when(x.effective_at)}`).join("; ")}`) : null);
  } catch (err) {
    fill($("policy"), el("p", { class: "error" }, explain(err, "The policy")));
  }
}

/** Horizontal bar chart, each label above its bar (long labels never clip): rows of {label, value, cls?}. */
function barChart(title, rows, { format = (v) => String(v), max } = {}) {
  if (!rows.length) return el("p", { class: "muted" }, `${title}: nothing in this period.`);
  const top = max ?? Math.max(1, ...rows.map((r) => r.value || 0));
  const rowH = 36, barW = 480, w = barW + 90;
  const h = rows.length * rowH + 4;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": `${title}: ` + rows.map((r) => `${r.label} ${r.value == null ? "suppressed" : format(r.value)}`).join(", ") },
    rows.map((r, i) => {
      const y = i * rowH;
      const len = r.value == null ? 0 : Math.max(2, (r.value / top) * barW);
      return [
        svg("text", { x: 0, y: y + 13 }, r.label),
        svg("rect", { class: `bar ${r.cls || ""}`, x: 0, y: y + 17, width: len, height: 14 }),
        svg("text", { x: len + 6, y: y + 29 }, r.value == null ? "suppressed" : format(r.value)),
      ];
    }));
  return el("figure", {}, el("figcaption", {}, el("strong", {}, title)), chart);
}

function table(headers, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c == null ? "—" : c)))))));
}

async function loadReport() {
  let r, words;
  try {
    [r, words] = await Promise.all([api("/reports/transparency", { query: { purpose: PURPOSE } }), labels()]);
  } catch (err) {
    fill($("report"), el("p", { class: "error" }, explain(err, "The transparency report")));
    return;
  }
  const byType = r.alerts_by_type_and_outcome || [];
  const fa = r.false_alarm_rate_by_detector || [];
  const accesses = r.accesses_by_purpose || [];
  const refusals = r.refusals || [];
  const deletions = r.retention_deletions || [];
  const fairness = r.fairness || [];
  // a suppressed group has no figure: it is never counted as 0, only named as suppressed
  const total = (rows) => {
    const shown = rows.filter((x) => !x.suppressed).reduce((s, x) => s + x.alerts, 0);
    if (!rows.some((x) => x.suppressed)) return String(shown);
    return shown ? `${shown} + suppressed groups` : "suppressed";
  };
  const totalAlerts = total(byType);
  const falseAlarms = total(byType.filter((x) => x.outcome === "false_alarm"));
  fill($("report"), 
    el("p", {}, `Period ${when(r.period?.since)} – ${when(r.period?.until)} · policy ${r.policy?.version} · groups smaller than ${r.min_group_officers} officers are suppressed.`),
    el("dl", { class: "legend", id: "report-totals" },
      el("dt", {}, "Alerts"), el("dd", { id: "total-alerts" }, totalAlerts),
      el("dt", {}, "False alarms"), el("dd", { id: "total-false-alarms" }, falseAlarms),
      el("dt", {}, "Refused reads"), el("dd", {}, String(refusals.reduce((s, x) => s + x.n, 0)))),
    barChart("Alerts by type and outcome", byType.map((x) => ({ label: `${x.kind} · ${x.outcome === "open" ? OPEN : (words.outcomes[x.outcome] || x.outcome).toLowerCase()}`, value: x.alerts, cls: x.outcome === "false_alarm" ? "fa" : "" }))),
    el("div", { class: "legend" }, el("span", {}, el("span", { class: "swatch bar" }), "alerts"), el("span", {}, el("span", { class: "swatch fa" }), "false alarms (also named in the label)")),
    barChart("False-alarm rate by detector (of resolved alerts)", fa.map((x) => ({ label: `${x.kind} (${x.false_alarms}/${x.resolved})`, value: x.false_alarm_rate, cls: "fa" })),
      { format: (v) => `${Math.round(v * 100)} %`, max: 1 }),
    barChart("Data reads by purpose", accesses.map((x) => ({ label: `${x.purpose || "(none)"} · ${x.data_class} · ${x.outcome}`, value: x.n, cls: x.outcome === "refused" ? "fa" : "" }))),
    el("h3", {}, "Refusals by rule"),
    refusals.length ? table(["Rule", "Purpose", "Count"], refusals.map((x) => [x.rule, x.purpose || "(none)", String(x.n)])) : el("p", { class: "muted" }, "No refusals."),
    el("h3", {}, "Retention deletions"),
    deletions.length ? table(["Data class", "Runs", "Rows deleted"], deletions.map((x) => [x.data_class, String(x.runs), String(x.rows_deleted)])) : el("p", { class: "muted" }, "No retention deletions in this period."),
    el("h3", {}, "Fairness by consented cohort"),
    fairness.length ? table(["Cohort", "Officers", "False-alarm rate by detector", "Missed-alert rate"], fairness.map((g) => [
      `${g.attribute}: ${g.value}`, g.suppressed ? "suppressed (< min group)" : String(g.officers),
      g.suppressed ? "suppressed" : (g.detectors || []).map((d) => `${d.kind} ${d.suppressed ? "suppressed" : d.false_alarm_rate == null ? "—" : Math.round(d.false_alarm_rate * 100) + " %"}`).join(", ") || "—",
      g.missed_alert_rate == null ? (g.missed_alert_suppressed ? "suppressed" : "—") : `${Math.round(g.missed_alert_rate * 100)} %`]))
      : el("p", { class: "muted" }, "No consented cohorts recorded."));
}

// The log in pages of the newest entries (the page was one 5,800 px table); older pages on request.
const PAGE_SIZE = 50;
let pages = [];          // the first seq of each page shown so far (to go back to newer ones)
let pageBefore = null;   // the page on screen holds entries before this seq (null: the newest)

async function loadLog(before = null) {
  const action = $("f-action").value.trim();
  try {
    entries = await api("/audit", { query: { purpose: PURPOSE, limit: PAGE_SIZE, newest_first: true, action, before_seq: before } });
  } catch (err) {
    $("log-count").textContent = explain(err, "The audit log");
    fill($("log"));
    return;
  }
  pageBefore = before;
  renderLog();
}

function renderLog() {
  const outcome = $("f-outcome").value;
  const text = $("f-text").value.trim().toLowerCase();
  const shown = entries.filter((e) => (!outcome || e.outcome === outcome) &&
    (!text || `${e.actor} ${e.actor_label} ${e.subject} ${e.subject_label} ${e.purpose}`.toLowerCase().includes(text)));
  fill($("log"), ...shown.map((e) => el("tr", { class: e.outcome === "refused" ? "refused" : "", dataset: { seq: e.seq } },
    el("td", {}, String(e.seq)), el("td", {}, when(e.at)),
    el("td", { title: e.actor }, e.actor_label || e.actor), el("td", {}, actionText(e.action)),
    el("td", { title: e.subject || "" }, e.subject_label || e.subject || "—", incidentLink(e)), el("td", {}, e.purpose || "—"),
    el("td", {}, e.outcome === "refused" ? "✕ refused" : e.outcome === "granted" ? "✓ granted" : e.outcome),
    el("td", { class: "small" }, details(e.details)))));
  const page = pages.length + 1;
  const range = entries.length ? `entries #${entries[entries.length - 1].seq}–#${entries[0].seq}` : "no entries";
  $("log-count").textContent = `Page ${page}, newest first: ${range}; ${shown.length} of ${entries.length} shown by the filters.`;
  $("log-newer").disabled = pages.length === 0;
  $("log-older").disabled = entries.length < PAGE_SIZE;
}

const ACTIONS = { access: "read of data", "alert.transition": "alert changed", "policy.install": "policy installed",
  "policy.propose": "policy proposed", "retention.delete": "retention deleted data" };
function actionText(a) {
  if (ACTIONS[a]) return ACTIONS[a];
  const m = /^provisioning\.([a-z_]+)\.(insert|update|delete)$/.exec(a || "");
  return m ? `${m[1].replaceAll("_", " ")} ${m[2] === "insert" ? "created" : m[2] === "update" ? "changed" : "deleted"}` : a;
}

// ---- one incident's timeline: its steps and every read about it, in words ----------------

const DATA_WORDS = { alert_evidence: "why the alert fired (its evidence)", derived_features: "heart rate and activity",
  raw_waveforms: "raw sensor waveforms", alerts_incidents: "the incident record", audit_records: "the audit log" };
const STEP_WORDS = { raised: "Raised", delivered: "Delivered to a supervisor's screen", upgraded: "Upgraded", merged: "Another alert joined",
  escalated: "Escalated", acknowledged: "Acknowledged", note: "Note", responder_assigned: "Responder assigned",
  dispatch_notified: "Dispatch notified", help_sent: "“Help is coming” sent", help_result: "Wearable told",
  help_confirmed: "Officer confirmed on the wearable", prealert_started: "Pre-alert started", resolved: "Resolved" };

/** The incident an entry is about (its transitions, reads of its record or evidence, vitals it opened). */
function incidentOf(e) {
  const d = e.details || {};
  if ((e.subject || "").startsWith("alert:")) return e.subject.slice(6);
  if (typeof d.alert === "string") return d.alert;
  if (Array.isArray(d.incidents) && d.incidents.length === 1) return d.incidents[0];
  return null;
}

function incidentLink(e) {
  const id = incidentOf(e);
  if (!id) return null;
  return [" ", el("button", { type: "button", class: "linkish incident-link", title: `incident ${id}`,
    onclick: () => showIncident(id) }, "incident timeline")];
}

function entryText(e) {
  const d = e.details || {};
  const who = e.actor_label || e.actor;
  if (e.action === "alert.transition") {
    const said = d.state === "escalated" && e.actor === "system" ? "Escalated automatically" : STEP_WORDS[d.state] || String(d.state).replaceAll("_", " ");
    return [el("strong", {}, said), ` — ${who}`, d.note ? ` (${d.note})` : ""];
  }
  if (e.action === "access") {
    const what = DATA_WORDS[d.data_class] || d.data_class;
    const via = d.path === "/api/v1/ws" ? " on the live feed" : "";
    return [el("strong", {}, e.outcome === "refused" ? "✕ Refused read" : "Read"), ` — ${who} read ${what}${via} for ${e.purpose || "no declared purpose"}`,
      e.outcome === "refused" && d.reason ? ` (${d.reason})` : ""];
  }
  return [el("strong", {}, actionText(e.action)), ` — ${who}`];
}

async function showIncident(id) {
  const box = $("incident-box");
  try {
    const t = await api(`/audit/incidents/${encodeURIComponent(id)}`, { query: { purpose: PURPOSE } });
    $("incident-title").textContent = `${t.alert.label} — ${t.alert.outcome ? `resolved (${t.alert.outcome.replaceAll("_", " ")})` : t.alert.state}`;
    fill($("incident-entries"), ...t.entries.map((e) => el("li", { class: e.outcome === "refused" ? "refused" : "", dataset: { seq: e.seq } },
      el("time", { datetime: e.at }, when(e.at)), " ", entryText(e), el("span", { class: "muted" }, ` · entry #${e.seq}`))));
    if (!t.entries.length) fill($("incident-entries"), el("li", { class: "muted" }, "No audit entries about this incident yet."));
    $("incident-id").value = id;
    box.hidden = false;
    notify("");
    box.scrollIntoView({ block: "start" });
    box.focus({ preventScroll: true });
  } catch (err) {
    notify(explain(err, "The incident's timeline"));
  }
}

function details(d) {
  if (!d) return "";
  const keep = ["rule", "reason", "data_class", "role", "state", "outcome", "rows_deleted", "version"];
  const parts = keep.filter((k) => d[k] != null && d[k] !== "").map((k) => `${k}: ${d[k]}`);
  return parts.join(" · ");
}

async function main() {
  await startPage(["auditor"]);
  $("verify").addEventListener("click", verifyChain);
  $("log-filter").addEventListener("submit", (e) => { e.preventDefault(); pages = []; loadLog(); });
  $("log-older").addEventListener("click", () => {
    if (!entries.length) return;
    pages.push(pageBefore);
    loadLog(entries[entries.length - 1].seq);
  });
  $("log-newer").addEventListener("click", () => { if (pages.length) loadLog(pages.pop()); });
  $("f-outcome").addEventListener("change", renderLog);
  $("incident-form").addEventListener("submit", (e) => { e.preventDefault(); showIncident($("incident-id").value.trim()); });
  $("incident-close").addEventListener("click", () => { $("incident-box").hidden = true; });
  await Promise.all([verifyChain(), loadPolicy(), loadReport(), loadLog()]);
  notify("");
}

main().catch(() => {});
