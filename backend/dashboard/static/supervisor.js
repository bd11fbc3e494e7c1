// The supervisor's screen: the live alert feed (WebSocket, resumed after a blip), acknowledge and
// resolve from the feed, the officer board (no heart rate), and an officer's vitals only for an
// open incident with the purpose declared.
import { PRIORITY_ICON, fill, API, ago, api, deviceHex, el, explain, labels, notify, startPage, when } from "./common.js";
import { hrPlot } from "./hrplot.js";
import { showAlerts } from "./map.js";

const DEVICE_EVENTS = {
  sos: "SOS button pressed on the wearable",
  fall_suspected: "the wearable suspects a fall",
  mandown_alarm: "the wearable's man-down alarm went off (no motion after the pre-alert)",
};
const VITALS_PURPOSE = "safety_response";
const VITALS_REFRESH_MS = 3000;
// The heart-rate panel shows the window around the alert: from this long before it (the policy
// opens up to 10 min before; the minutes just before are what explains it) until now.
const HR_BEFORE_MS = 2 * 60 * 1000;
// Reconnect delays: doubling from 0.5 s, capped, with full jitter so supervisors' browsers
// do not all return in the same instant after an outage.
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 15000;
// The server closes a connection that fell behind with this code and the reason (RFC 6455 "try again later").
const FELL_BEHIND = 1013;

const alerts = new Map();      // alert id -> the alert as the backend last described it
const officers = new Map();    // officer id -> their status as the backend last described it
let words = { priorities: {}, states: {}, outcomes: {} };  // the backend's labels, read at start
let lastEventId = null;
let muted = sessionStorage.getItem("vigil.muted") === "1";
let vitalsFor = null;          // {officerId, alertId, name, raisedAt, timer, plot}
let socket = null;
let attempt = 0;
let me = null;

const $ = (id) => document.getElementById(id);

// ---- rendering helpers -------------------------------------------------------------------

export function explanationText(x) {
  if (!x || typeof x !== "object") return x ? String(x) : "";
  if (x.summary) return x.summary;
  if (x.detector === "device" && x.event) {
    const said = DEVICE_EVENTS[x.event] || `device event ${x.event}`;
    return x.device_priority ? `${said} (device priority ${x.device_priority})` : said;
  }
  return Object.entries(x)
    .filter(([k, v]) => !["related", "gateway"].includes(k) && v !== null && v !== "")
    .map(([k, v]) => `${k.replaceAll("_", " ")}: ${typeof v === "object" ? Object.entries(v).map(([a, b]) => `${a} ${b}`).join(", ") : v}`)
    .join("; ");
}

/** Why the alert stands as it is now: an incident upgraded by a later alert (a fall, then the
 * device's man-down alarm) reads as the later one, with what came before listed as earlier. */
export function reasonsOf(a) {
  const x = a.explanation;
  if (!x || typeof x !== "object") return { main: explanationText(x), earlier: [] };
  const related = x.related || [];
  let upgrade = -1;
  for (let i = related.length - 1; i >= 0; i--) if (related[i].kind === a.kind) { upgrade = i; break; }
  const first = explanationText(x);
  if (upgrade < 0) return { main: first, earlier: [], also: related.map((r) => `${r.kind.replaceAll("_", " ")} — ${explanationText(r.explanation)}`) };
  return {
    main: explanationText(related[upgrade].explanation),
    earlier: [first, ...related.filter((_, i) => i !== upgrade).map((r) => `${r.kind.replaceAll("_", " ")} — ${explanationText(r.explanation)}`)],
    also: [],
  };
}

// Escalation stands out until someone acknowledges after it: then dispatch has an owner for it.
// (A supervisor may escalate an acknowledged incident again, by hand: that one stands.)
const escalatedNow = (a) => a.state !== "resolved" &&
  (a.escalation ? a.escalation.standing : a.escalated && a.state !== "acknowledged");

function escalationTag(a) {
  const e = a.escalation;
  if (e && e.manual) return `⚠ ESCALATED by ${actorText(e.by)}: ${e.reason}`;
  return "⚠ ESCALATED — not acknowledged in time; dispatch flagged";
}

function locationText(loc) {
  if (!loc || loc.lat == null || loc.lon == null) return null;
  return `${Number(loc.lat).toFixed(5)}, ${Number(loc.lon).toFixed(5)}${loc.source ? ` (${loc.source})` : ""}`;
}

function priorityText(p) {
  return words.priorities[p] ? `Priority ${p} — ${words.priorities[p]}` : `Priority ${p}`;
}

function priorityBadge(p) {
  return el("span", { class: `prio p${p}` }, el("span", { "aria-hidden": "true" }, PRIORITY_ICON[p] || "?"), priorityText(p));
}

const units = new Map();       // officer id -> unit, for alerts of officers not on the board

function unitOf(officerId) {
  const o = officers.get(officerId);
  return o && o.unit ? o.unit : units.get(officerId) || null;
}

async function loadUnits() {
  try {
    for (const o of await api("/officers")) if (o.unit) units.set(o.id, o.unit);
  } catch { /* the board's units still show */ }
}

function sortKey(a) {
  return [a.state === "resolved" ? 1 : 0, escalatedNow(a) ? 0 : 1, a.priority, -Date.parse(a.raised_at)];
}

function compare(a, b) {
  const ka = sortKey(a), kb = sortKey(b);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] - kb[i];
  return 0;
}

function alertCard(a) {
  const open = a.state !== "resolved";
  const unit = unitOf(a.officer_id);
  const where = locationText(a.location);
  const why = reasonsOf(a);
  const card = el("li", {
    class: `alert p${a.priority}${escalatedNow(a) ? " escalated" : ""}${open ? "" : " resolved"}${a.id === pickedOnMap ? " picked" : ""}`,
    dataset: { alertId: a.id, state: a.state, kind: a.kind },
    "aria-label": `${priorityText(a.priority)}: ${a.title || a.kind}, ${a.officer_name || "unassigned device"}`,
  },
  el("header", {},
    priorityBadge(a.priority),
    el("span", { class: "title" }, a.title || a.kind),
    escalatedNow(a) ? el("span", { class: "tag escalated" }, escalationTag(a)) : null,
    a.escalated && open && !escalatedNow(a) ? el("span", { class: "tag escalated-earlier" }, "escalated earlier, since acknowledged") : null,
    el("span", { class: "state" }, words.states[a.state] || a.state)),
  el("div", { class: "who-line" },
    a.officer_name || `Device ${deviceHex(a.device_id)} (no officer assigned)`,
    unit ? ` · ${unit}` : "",
    a.officer_id != null ? el("span", { class: "muted" }, ` · officer #${a.officer_id}`) : ""),
  el("p", { class: "expl" }, why.main),
  why.earlier.length ? el("ul", { class: "small earlier" }, why.earlier.map((t) => el("li", {}, `earlier: ${t}`))) : null,
  why.also && why.also.length ? el("ul", { class: "small" }, why.also.map((t) => el("li", {}, `also: ${t}`))) : null,
  el("div", { class: "meta" },
    el("span", {}, "Raised ", el("time", { datetime: a.raised_at, class: "ago", title: when(a.raised_at) }, ago(a.raised_at))),
    el("span", {}, "Device ", deviceHex(a.device_id)),
    el("span", {}, where ? `Location: ${where}` : "Location unknown"),
    a.outcome ? el("span", {}, `Outcome: ${words.outcomes[a.outcome] || a.outcome}`) : null,
    a.responder ? el("span", { class: "responder" }, `Responder: ${a.responder.name}`) : null,
    a.notes && a.notes.length ? el("span", {}, `${a.notes.length} note${a.notes.length === 1 ? "" : "s"}`) : null),
  timeline(a),
  open ? actions(a) : null,
  el("button", { type: "button", class: "detail", onclick: () => openIncident(a.id) }, open ? "Details · escalate · notes · responder" : "Details"));
  return card;
}

const timelineOpen = new Set();  // alert ids whose timeline is open (kept across re-renders)

function actorText(actor) {
  const [kind, rest] = String(actor || "").split(/:(.*)/s);
  if (kind === "user") return rest;
  if (kind === "device") return /^\d+$/.test(rest) ? `device ${deviceHex(Number(rest))}` : "the device";
  if (kind === "system" || kind === "backend") return "the backend";
  return actor || "—";
}

/** Every step of the incident: when, what, who, and the note given. */
function timeline(a) {
  const steps = a.transitions || [];
  if (!steps.length) return null;
  const box = el("details", { class: "timeline", open: timelineOpen.has(a.id),
    ontoggle: (e) => (e.currentTarget.open ? timelineOpen.add(a.id) : timelineOpen.delete(a.id)) },
  el("summary", {}, `Timeline (${steps.length} step${steps.length === 1 ? "" : "s"})`),
  el("ol", { class: "small" }, steps.map((t) => el("li", {},
    el("time", { datetime: t.at }, t.at ? new Date(t.at).toLocaleTimeString() : "—"), " ",
    el("strong", {}, words.states[t.state] || t.state.replaceAll("_", " ")), ` — ${actorText(t.actor)}`,
    t.note ? ` (${t.note})` : ""))));
  return box;
}

const chosen = new Map();  // alert id -> the outcome chosen in its card, not yet resolved

function actions(a) {
  const box = el("div", { class: "acts" });
  if (a.state !== "acknowledged") {
    box.append(el("button", { type: "button", class: "primary ack", onclick: (e) => act(e.currentTarget, a, "acknowledge") },
      "Acknowledge — send “help is coming”"));
  }
  const select = el("select", { "aria-label": `Outcome for ${a.title || a.kind} of ${a.officer_name || "device"}`, class: "outcome",
    onchange: (e) => chosen.set(a.id, e.currentTarget.value) },
    el("option", { value: "" }, "Outcome…"),
    Object.entries(words.outcomes).map(([v, t]) => el("option", { value: v }, t)));
  select.value = chosen.get(a.id) || "";  // the feed re-renders on every event: a choice being made stays
  box.append(select, el("button", { type: "button", class: "resolve", onclick: (e) => {
    if (!select.value) { select.focus(); notify("Choose an outcome before resolving."); return; }
    act(e.currentTarget, a, "resolve", { outcome: select.value });
  } }, "Resolve"));
  return box;
}

async function act(button, a, verb, body) {
  button.disabled = true;
  try {
    const updated = await api(`/alerts/${a.id}/${verb}`, { method: "POST", body: body || {} });
    notify("");
    upsert(updated, false);
  } catch (err) {
    notify(explain(err, verb === "acknowledge" ? "Acknowledging" : "Resolving"));
    button.disabled = false;
  }
}

function renderFeed() {
  const list = [...alerts.values()].sort(compare);
  const openOnes = list.filter((a) => a.state !== "resolved");
  const closed = list.filter((a) => a.state === "resolved").slice(0, 50);
  // Keep focus on the same control across re-renders (keyboard users acting on the feed).
  const active = document.activeElement;
  const focusId = active && active.closest && active.closest("[data-alert-id]")?.dataset.alertId;
  const focusClass = active && active.className;
  fill($("feed"), ...openOnes.map(alertCard));
  renderMap(openOnes);
  fill($("closed"), ...closed.map(alertCard));
  $("closed-count").textContent = String(closed.length);
  $("feed-empty").hidden = openOnes.length > 0;
  const cls = String(focusClass || "").trim().split(/\s+/).pop();
  if (focusId && cls) {  // a control without a class (a timeline's summary) is not refocused
    const again = document.querySelector(`[data-alert-id="${CSS.escape(focusId)}"] .${CSS.escape(cls)}`);
    if (again) again.focus();
  }
}

function renderMap(openOnes) {
  const points = openOnes.filter((a) => a.location).map((a) => ({
    id: a.id, lat: a.location.lat, lon: a.location.lon, priority: a.priority, priorityText: priorityText(a.priority),
    source: a.location.source, gateway: a.explanation && a.explanation.gateway, at: a.updated_at || a.raised_at,
    officer: a.officer_name || `device ${deviceHex(a.device_id)}`, what: a.title || a.kind,
    label: `${a.officer_name || deviceHex(a.device_id)} (${a.title || a.kind})`,
  }));
  showAlerts(points, { onPick: (id) => { pickAlert(id); openIncident(id); } });
}

let pickedOnMap = null;  // the alert last chosen on the map: its card stays marked across re-renders

function pickAlert(id) {
  const card = document.querySelector(`#feed [data-alert-id="${CSS.escape(id)}"]`);
  if (!card) return;
  pickedOnMap = id;
  for (const c of document.querySelectorAll("li.alert.picked")) c.classList.remove("picked");
  card.classList.add("picked");
  card.scrollIntoView({ block: "center" });
  const button = card.querySelector("button");
  if (button) button.focus();
}

// ---- incident detail: escalate, notes, responder, the timeline with who read the evidence --

const DETAIL_REFRESH_MS = 30000;  // the reads of others come from the audit log, not the feed
const STEP_WORDS = {
  raised: "Raised", delivered: "Delivered to a supervisor's screen", upgraded: "Upgraded", merged: "Another alert joined",
  escalated: "Escalated", acknowledged: "Acknowledged — help is coming", note: "Note", responder_assigned: "Responder assigned",
  dispatch_notified: "Dispatch notified", prealert_started: "Pre-alert started on the wearable", help_sent: "“Help is coming” sent",
  help_result: "Wearable told", help_confirmed: "Officer confirmed on the wearable", resolved: "Resolved",
};
const DATA_WORDS = { alert_evidence: "why the alert fired (its evidence)", derived_features: "heart rate and activity",
  raw_waveforms: "raw sensor waveforms" };
let detailFor = null;  // {id, reads, timer}

function openIncident(id, { focus = true } = {}) {
  if (detailFor && detailFor.timer) clearTimeout(detailFor.timer);
  detailFor = { id, reads: null, timer: null };
  history.replaceState(null, "", `#incident=${encodeURIComponent(id)}`);  // a reload reopens it
  for (const f of ["esc-reason", "responder-name", "note-text"]) $(f).value = "";
  $("incident").hidden = false;
  renderDetail();
  refreshDetail();
  if (focus) {
    $("incident").scrollIntoView({ block: "start" });
    $("incident-h").focus({ preventScroll: true });
  }
}

function closeIncident() {
  if (detailFor && detailFor.timer) clearTimeout(detailFor.timer);
  detailFor = null;
  $("incident").hidden = true;
  history.replaceState(null, "", location.pathname + location.search);
}

async function refreshDetail() {
  const target = detailFor;
  if (!target) return;
  if (target.timer) clearTimeout(target.timer);
  try {
    // the record only (no purpose: the evidence read is not repeated); the evidence stays as the feed gave it
    const { evidence_reads: reads, evidence_withheld: _, explanation: __, ...record } = await api(`/alerts/${target.id}`);
    if (detailFor !== target) return;
    target.reads = reads;
    upsert(record, false);
  } catch (err) {
    if (detailFor !== target) return;
    notify(explain(err, "The incident"));
  }
  if (detailFor === target) target.timer = setTimeout(refreshDetail, DETAIL_REFRESH_MS);
}

function renderDetail() {
  if (!detailFor) return;
  const a = alerts.get(detailFor.id);
  if (!a) { fill($("incident-head"), el("p", { class: "muted" }, "Loading…")); return; }
  const open = a.state !== "resolved";
  const e = a.escalation;
  $("incident-h").textContent = `${a.title || a.kind} — ${a.officer_name || `device ${deviceHex(a.device_id)}`}`;
  fill($("incident-head"),
    el("p", {}, priorityBadge(a.priority), " ", el("span", { class: "state" }, words.states[a.state] || a.state),
      ` · raised ${when(a.raised_at)}`, a.outcome ? ` · outcome: ${words.outcomes[a.outcome] || a.outcome}` : ""),
    escalatedNow(a) ? el("p", { class: "tag escalated" }, escalationTag(a)) : null,
    e && !escalatedNow(a) ? el("p", { class: "small" }, `Escalated ${when(e.at)} by ${actorText(e.by)}${e.reason ? `: ${e.reason}` : ""} (since acknowledged)`) : null,
    el("p", { id: "incident-responder" }, a.responder
      ? [el("strong", {}, "Responder: "), a.responder.name, el("span", { class: "muted small" }, ` — assigned by ${actorText(a.responder.by)}, ${when(a.responder.at)}`)]
      : el("span", { class: "muted" }, "No responder assigned yet.")));
  $("incident-acts").hidden = !open;
  $("esc-form").hidden = escalatedNow(a);
  $("responder-form").querySelector("button").textContent = a.responder ? "Change responder" : "Assign responder";
  $("incident-hr").hidden = !(open && a.officer_id != null);
  fill($("incident-timeline"), ...incidentSteps(a, detailFor.reads).map(stepItem));
}

/** Transitions and reads of the officer's body data, one list in time order; repeated reads by the
 * same person for the same purpose (the feed and the page re-read) are shown once with a count. */
export function incidentSteps(a, reads) {
  const steps = (a.transitions || []).map((t) => ({ kind: "step", at: t.at, t }));
  const grouped = [];
  for (const r of reads || []) {
    const last = grouped[grouped.length - 1];
    const key = [r.actor, r.data_class, r.purpose, r.outcome, r.path].join("|");
    if (last && last.key === key) { last.count += 1; last.lastAt = r.at; continue; }
    grouped.push({ kind: "read", at: r.at, key, count: 1, lastAt: r.at, r });
  }
  return [...steps, ...grouped].sort((x, y) => Date.parse(x.at) - Date.parse(y.at));
}

function stepItem(s) {
  const time = el("time", { datetime: s.at, title: when(s.at) }, new Date(s.at).toLocaleTimeString());
  if (s.kind === "read") {
    const r = s.r;
    const what = DATA_WORDS[r.data_class] || r.data_class;
    const via = r.path === "/api/v1/ws" ? " (live feed)" : "";
    return el("li", { class: `read ${r.outcome}`, dataset: { kind: "read", dataClass: r.data_class } }, time, " ",
      el("strong", {}, r.outcome === "granted" ? "Read" : "Refused read"), ` — ${r.actor_label || r.actor} read ${what}${via}`,
      ` for ${r.purpose || "no declared purpose"}`, s.count > 1 ? ` (${s.count}×, last ${new Date(s.lastAt).toLocaleTimeString()})` : "");
  }
  const t = s.t;
  const who = actorText(t.actor);
  const said = t.state === "escalated" && t.actor === "system" ? "Escalated automatically" : STEP_WORDS[t.state] || t.state.replaceAll("_", " ");
  return el("li", { class: `step ${t.state}`, dataset: { kind: t.state } }, time, " ", el("strong", {}, said), ` — ${who}`,
    t.note ? (t.state === "note" ? [": ", el("q", {}, t.note)] : ` (${t.note})`) : "");
}

async function detailAct(form, verb, method, body, what) {
  const target = detailFor;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const updated = await api(`/alerts/${target.id}/${verb}`, { method, body });
    notify("");
    form.reset();
    upsert(updated, false);
    announce(`${what} recorded.`);
  } catch (err) {
    notify(explain(err, what));
  } finally {
    button.disabled = false;
  }
}

function wireDetail() {
  $("incident-close").addEventListener("click", closeIncident);
  $("esc-form").addEventListener("submit", (e) => {
    e.preventDefault();
    detailAct(e.currentTarget, "escalate", "POST", { reason: $("esc-reason").value }, "Escalating");
  });
  $("responder-form").addEventListener("submit", (e) => {
    e.preventDefault();
    detailAct(e.currentTarget, "responder", "PUT", { responder: $("responder-name").value }, "Assigning the responder");
  });
  $("note-form").addEventListener("submit", (e) => {
    e.preventDefault();
    detailAct(e.currentTarget, "notes", "POST", { text: $("note-text").value }, "Adding the note");
  });
  $("incident-hr").addEventListener("click", () => {
    const a = detailFor && alerts.get(detailFor.id);
    if (a) openVitals({ officerId: a.officer_id, alertId: a.id, name: a.officer_name, raisedAt: a.raised_at });
  });
}

function incidentFromUrl() {
  const m = /^#incident=(.+)$/.exec(location.hash);
  if (m) openIncident(decodeURIComponent(m[1]), { focus: false });
}

// ---- sound and announcements -------------------------------------------------------------

let audio = null;
function beep() {
  if (muted) return;
  try {
    audio = audio || new AudioContext();
    const now = audio.currentTime;
    for (let i = 0; i < 3; i++) {  // three short high tones
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = 1046;
      gain.gain.setValueAtTime(0.0001, now + i * 0.3);
      gain.gain.exponentialRampToValueAtTime(0.25, now + i * 0.3 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.3 + 0.2);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * 0.3);
      osc.stop(now + i * 0.3 + 0.22);
    }
  } catch { /* no audio device: the visual and aria-live alert still stand */ }
}

function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

function setMuted(value) {
  muted = value;
  sessionStorage.setItem("vigil.muted", value ? "1" : "0");
  const b = $("mute");
  b.setAttribute("aria-pressed", String(value));
  b.textContent = value ? "Sound for priority 1: muted" : "Sound for priority 1: on";
}

// ---- state changes ------------------------------------------------------------------------

function upsert(a, live) {
  const before = alerts.get(a.id);
  if (before && !live && before.updated_at && a.updated_at && Date.parse(before.updated_at) > Date.parse(a.updated_at)) return;
  alerts.set(a.id, { ...before, ...a });
  if (live && (a.change === "raised" || a.change === "upgraded" || a.change === "escalated")) {
    announce(`${a.change === "escalated" ? "Escalated" : "New"} ${priorityText(a.priority)} alert: ${a.title || a.kind} — ${a.officer_name || deviceHex(a.device_id)}`);
    if (a.priority === 1 && a.change !== "escalated") beep();
  }
  if (vitalsFor && vitalsFor.alertId === a.id && a.state === "resolved") closeVitals("The incident was resolved; its vitals are closed.");
  renderFeed();
  if (detailFor && detailFor.id === a.id) {
    renderDetail();
    if (live) refreshDetail();
  }
}

// Why an alert fired follows its alert on the live feed, once the purpose gate granted it (audited).
function evidence(e) {
  const a = alerts.get(e.id);
  if (!a) return;
  const { evidence_withheld: _, ...rest } = a;
  alerts.set(e.id, e.explanation ? { ...rest, explanation: e.explanation } : { ...rest, evidence_withheld: e.evidence_withheld });
  renderFeed();
}

// An officer_status event and a row of GET /live/officers are the same thing: the whole status.
function officerStatus(s) {
  officers.set(s.officer_id, s);
  renderBoard();
}

// ---- officer board ------------------------------------------------------------------------

const BOARD_STATUS = {
  ok: { cls: "ok", icon: "✓", text: "OK" },
  check: { cls: "check", icon: "!", text: "Check" },
  alert: { cls: "alert", icon: "▲", text: "Alert" },
};

function boardStatus(row) {
  if (row.incident) return BOARD_STATUS.alert;
  return BOARD_STATUS[row.state] || BOARD_STATUS.ok;
}

function renderBoard() {
  const rows = [...officers.values()].sort((a, b) => (b.incident ? 1 : 0) - (a.incident ? 1 : 0) || String(a.officer_name).localeCompare(String(b.officer_name)));
  fill($("board"), ...rows.map((r) => {
    const st = boardStatus(r);
    const connected = r.device === "connected";
    const unit = r.unit || units.get(r.officer_id);
    const reasons = (r.reasons || []).map((x) => x.replaceAll("_", " ")).join(", ");
    return el("tr", { dataset: { officerId: r.officer_id } },
      el("td", {}, r.officer_name || `Officer #${r.officer_id}`, el("small", {}, unit || "")),
      el("td", {}, el("span", { class: `status ${connected ? "ok" : "offline"}` },
        el("span", { "aria-hidden": "true" }, connected ? "●" : "○"), connected ? "Connected" : "Offline"),
        el("small", {}, deviceHex(r.device_id), r.last_seen ? ` · seen ${ago(r.last_seen)}` : "")),
      batteryCell(r),
      el("td", {}, el("span", { class: `status ${st.cls}` }, el("span", { "aria-hidden": "true" }, st.icon), st.text),
        reasons ? el("small", {}, reasons) : null,
        r.incident ? el("button", { type: "button", class: "vitals-open", onclick: () => boardVitals(r) },
          "Open vitals for this incident") : null));
  }));
  $("board-empty").hidden = officers.size > 0;
}

function batteryCell(r) {
  if (r.battery_pct == null) return el("td", {}, "—");
  const low = (r.reasons || []).includes("battery_low");
  const text = `${Math.round(r.battery_pct)} %${r.charging ? " (charging)" : ""}`;
  return el("td", {}, low ? el("span", { class: "battery-warn", title: "battery low: the device may stop soon" }, "⚠ ", text, " low") : text);
}

async function loadBoard() {
  try {
    const rows = await api("/live/officers");
    officers.clear();
    for (const r of rows) officers.set(r.officer_id, r);
    renderBoard();
  } catch (err) {
    notify(explain(err, "The officer board"));
  }
}

// ---- vitals for an open incident ----------------------------------------------------------

function boardVitals(row) {
  const incident = row.incident && alerts.get(row.incident.id);
  return openVitals({ officerId: row.officer_id, alertId: row.incident && row.incident.id, name: row.officer_name,
    raisedAt: incident ? incident.raised_at : null });
}

async function openVitals({ officerId, alertId, name, raisedAt }) {
  closeVitals();
  vitalsFor = { officerId, alertId, name, timer: null, raisedAt };
  $("vitals").hidden = false;
  $("vitals-h").textContent = `Live vitals — ${name || "officer #" + officerId}`;
  $("vitals-purpose").textContent = `Purpose declared: ${VITALS_PURPOSE} (getting help to an officer in distress). Loading…`;
  fill($("vitals-body"), el("div", { id: "vitals-now" }), el("div", { id: "vitals-plot" }));
  await refreshVitals();
  $("vitals").scrollIntoView({ block: "start" });
  $("vitals-close").focus({ preventScroll: true });
}

async function refreshVitals() {
  if (!vitalsFor) return;
  const target = vitalsFor;
  try {
    const raised = target.raisedAt ? Date.parse(target.raisedAt) : NaN;
    const start = isFinite(raised) ? new Date(raised - HR_BEFORE_MS).toISOString() : undefined;
    const v = await api(`/officers/${target.officerId}/vitals`, { query: { purpose: VITALS_PURPOSE, start, limit: 20000 } });
    if (vitalsFor !== target) return;
    $("vitals-purpose").textContent = `Purpose declared: ${v.purpose} · granted by rule ${v.rule} (policy ${v.policy}) · ` +
      `incident span ${when(v.start)} – ${when(v.end)} · this read is audit entry #${v.audit_seq}`;
    const rows = v.rows || [];
    const last = rows[rows.length - 1];
    fill($("vitals-now"),
      last ? el("p", {},
        el("span", { class: "big" }, last.heart_rate == null ? "— bpm" : `${Math.round(last.heart_rate)} bpm`),
        ` heart rate (quality ${last.hr_quality == null ? "—" : Number(last.hr_quality).toFixed(2)}) · activity: ${last.activity || "—"} · posture: ${last.posture || "—"} · at ${when(last.time)}`)
        : el("p", { class: "muted" }, "No measurements in this incident's span yet."));
    if (rows.length > 1) {
      // one plot for the panel, fed new rows at each refresh
      target.plot = target.plot || hrPlot($("vitals-plot"), rows, { markAt: target.raisedAt, markLabel: "alert",
        caption: "Heart rate around the alert (gaps where the wearable reported no value); the dashed line is the alert." });
      const plot = await target.plot;
      if (vitalsFor !== target) return;
      plot.update(rows);
    }
    target.timer = setTimeout(refreshVitals, VITALS_REFRESH_MS);
  } catch (err) {
    if (vitalsFor !== target) return;
    $("vitals-purpose").textContent = explain(err, `Reading vitals for ${VITALS_PURPOSE}`);
    fill($("vitals-body"));
  }
}

function closeVitals(message) {
  if (vitalsFor && vitalsFor.timer) clearTimeout(vitalsFor.timer);
  if (vitalsFor && vitalsFor.plot) vitalsFor.plot.then((p) => p.destroy());
  vitalsFor = null;
  $("vitals").hidden = true;
  fill($("vitals-body"));
  if (message) announce(message);
}

// ---- live feed ----------------------------------------------------------------------------

function setConn(state, text, title) {
  const badge = $("feed-state");
  badge.className = `conn ${state}`;
  badge.textContent = text;
  if (title) badge.title = title; else badge.removeAttribute("title");
}

async function loadAlerts() {
  try {
    for (const a of await api("/alerts", { query: { limit: 100, purpose: "safety_response" } })) upsert(a, false);
  } catch (err) {
    if (err.status !== 503) notify(explain(err, "Alert history"));
  }
}

function reconnectLater(why) {
  const delay = Math.random() * Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** attempt);
  attempt += 1;
  setConn("down", `✕ ${why || "Disconnected"} — reconnecting (attempt ${attempt})`);
  setTimeout(connect, delay);
}

// The Live badge follows the server's heartbeat, not the open socket: a feed that stopped
// sending (a stuck connection, a proxy holding it open) is shown as stopped within a few
// heartbeats and reconnected, resuming from the last event id.
const MISSED_BEATS = 3;
const HELLO_WAIT_S = 5;  // until the hello says the server's interval
let heartbeatS = null;   // from the server's hello
let lastHeard = 0;       // Date.now() of the last message on the current socket

function heard(ws, event) {
  lastHeard = Date.now();
  if (event.type === "hello") {
    heartbeatS = event.data.heartbeat_s;
    if (lastEventId == null) lastEventId = event.data.last_event_id;  // nothing seen yet: resume from here
    // After a blip: the backlog after last_event_id follows on the socket; the REST list and the
    // board reconcile what is older than the hub's replay buffer (the hello says if it is whole).
    if (event.data.resumed || !event.data.complete) { loadAlerts(); loadBoard(); }
  }
  if (event.type === "hello" || event.type === "heartbeat") {
    attempt = 0;
    const problems = (event.data && event.data.problems) || [];
    if (problems.length) setConn("degraded", `● Live — backend degraded: ${problems[0]}`, problems.join("\n"));
    else setConn("live", "● Live", event.data && event.data.time ? `server heartbeat at ${when(event.data.time)}` : null);
  }
}

function watchHeartbeat() {
  const ws = socket;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const silent = (Date.now() - lastHeard) / 1000;
  if (silent > MISSED_BEATS * (heartbeatS ?? HELLO_WAIT_S)) {
    socket = null;  // this socket's close is not another reconnect
    try { ws.close(4000, "no heartbeat"); } catch { /* already closing */ }
    reconnectLater(`No heartbeat from the server for ${Math.round(silent)} s`);
  }
}

// The socket opens with a one-time ticket fetched with the signed-in token: the token itself
// never travels in a URL (URLs land in access logs). A refused ticket fetch that means "signed
// out" takes the page to the sign-in screen (api() does that on 401).
async function connect() {
  let ticket;
  try {
    ({ ticket } = await api("/live/ticket", { method: "POST" }));
  } catch (err) {
    if (err.status === 403) {
      setConn("down", "✕ Live feed refused");
      notify(explain(err, "The live feed"));
      return;
    }
    reconnectLater("The backend cannot be reached");
    return;
  }
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams({ ticket });
  if (lastEventId != null) params.set("last_event_id", String(lastEventId));
  const ws = new WebSocket(`${proto}://${location.host}${API}/ws?${params}`);
  socket = ws;
  heartbeatS = null;
  // open is not "live": the badge waits for the server's hello
  ws.onopen = () => { lastHeard = Date.now(); };
  ws.onmessage = (msg) => {
    if (socket !== ws) return;
    const event = JSON.parse(msg.data);
    if (typeof event.id === "number") lastEventId = lastEventId == null ? event.id : Math.max(lastEventId, event.id);
    heard(ws, event);
    if (event.type === "alert") upsert(event.data, true);
    else if (event.type === "alert_evidence") evidence(event.data);
    else if (event.type === "officer_status") officerStatus(event.data);
  };
  ws.onclose = (ev) => {
    if (socket !== ws) return;
    socket = null;
    if (ev.code === 4403) {
      setConn("down", "✕ Live feed refused");
      notify(`The live feed was refused: ${ev.reason || "not allowed"}`);
      return;
    }
    if (ev.code === FELL_BEHIND) {
      attempt = 0;  // the server asked for it: back at once, resuming where the page left off
      reconnectLater(`The feed closed: ${ev.reason || "this page fell behind"}`);
      return;
    }
    // 4401 too: a ticket that expired on the way; the next fetch tells a signed-out page
    reconnectLater(ev.reason ? `Disconnected: ${ev.reason}` : "Disconnected");
  };
}

// ---- start --------------------------------------------------------------------------------

async function main() {
  me = await startPage(["supervisor"]);
  setMuted(muted);
  $("mute").addEventListener("click", () => setMuted(!muted));
  $("vitals-close").addEventListener("click", () => closeVitals("Vitals closed."));
  wireDetail();
  [words] = await Promise.all([labels(), loadBoard(), loadUnits()]);
  await connect();  // the socket first, so nothing raised while the history loads is missed
  await loadAlerts();
  incidentFromUrl();
  setInterval(() => {
    for (const t of document.querySelectorAll("time.ago")) t.textContent = ago(t.getAttribute("datetime"));
    watchHeartbeat();
  }, 1000);
  setInterval(renderBoard, 15000);  // "seen … ago" and offline after silence
  setInterval(loadBoard, 60000);    // officers coming on and off shift
}

main().catch(() => {});
