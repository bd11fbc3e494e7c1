// The supervisor's messages to officers' wearables, felt as haptic patterns, in the incident
// detail: send one of the fixed set to the officer of the open incident, and follow each message
// (the supervisors' and "colleague needs help" to officers nearby) from sent to delivered to the
// device to confirmed by the officer's press, with times. Also feeds officers' last known
// positions to the map (map.js).
//
// The incident detail (supervisor.js) opens with #incident=<alert id> in the address and shows
// the #incident section; this script watches that section, moves its own box into it and follows
// the incident named in the address.
import { api, el, explain, fill, notify, when } from "./common.js";
import { setOfficerPositions } from "./map.js";

const POSITIONS_REFRESH_MS = 5000;
const MESSAGES_REFRESH_MS = 2000;
const FOLLOW_CHECK_MS = 300;  // another incident opened in place changes only the address (replaceState)
const STATE_WORDS = {
  queued: "Queued",
  sent: "Sent to the gateway",
  delivered: "Delivered to the wearable — waiting for the officer's press",
  confirmed: "Confirmed by the officer",
  not_sent: "Not sent",
  not_delivered: "Not delivered",
};

const $ = (id) => document.getElementById(id);
let kinds = [];
let following = null;  // the alert id whose messages are shown
let timer = null;
let colleaguesTold = [];  // one message per officer told of this incident

function alertInAddress() {
  const m = /^#incident=(.+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function messageItem(m) {
  const who = m.officer_name || `officer ${m.officer_id}`;
  const what = m.kind === "colleague_needs_help"
    ? `${who}${m.distance_m != null ? ` (${m.distance_m} m away)` : ""}`
    : `${m.label} → ${who}`;
  const times = [["sent", m.sent_at], ["delivered", m.delivered_at], ["confirmed", m.confirmed_at]]
    .filter(([, at]) => at).map(([word, at]) => `${word} ${when(at)}`).join(" · ");
  return el("li", { class: `message ${m.state}`, dataset: { messageId: m.id, kind: m.kind, state: m.state } },
    el("strong", {}, what), " — ", el("span", { class: "message-state" }, STATE_WORDS[m.state] || m.state),
    m.error ? ` (${m.error})` : "", times ? el("span", { class: "muted small" }, ` · ${times}`) : "");
}

async function refresh() {
  const id = following;
  if (!id) return;
  let listed;
  try {
    listed = await api(`/alerts/${encodeURIComponent(id)}/messages`);
  } catch (err) {
    if (id === following) fill($("messages-status"), explain(err, "The messages"));
    return;
  }
  if (id !== following) return;
  const colleagues = listed.filter((m) => m.kind === "colleague_needs_help");
  const mine = listed.filter((m) => m.kind !== "colleague_needs_help");
  fill($("messages-colleagues"), ...colleagues.map(messageItem));
  $("messages-colleagues-empty").hidden = colleagues.length > 0;
  colleaguesTold = [...new Map(colleagues.map((m) => [m.officer_id, m])).values()];
  $("messages-all-clear").hidden = colleaguesTold.length === 0;
  fill($("messages-sent"), ...mine.map(messageItem));
  $("messages-sent-empty").hidden = mine.length > 0;
  fill($("messages-status"));
}

function follow(id) {
  following = id;
  clearInterval(timer);
  timer = null;
  const box = $("messages-box");
  box.hidden = !id;
  if (!id) return;
  fill($("messages-colleagues"));
  fill($("messages-sent"));
  refresh();
  timer = setInterval(refresh, MESSAGES_REFRESH_MS);
}

async function send(event) {
  event.preventDefault();
  const kind = $("message-kind").value;
  const id = following;
  if (!id || !kind) return;
  const button = $("message-send");
  button.disabled = true;
  try {
    const sent = await api(`/alerts/${encodeURIComponent(id)}/messages`, { method: "POST", body: { kind } });
    notify(`“${sent.label}” queued for ${sent.officer_name || `officer ${sent.officer_id}`}'s wearable.`);
    await refresh();
  } catch (err) {
    notify(explain(err, "The message"));
  } finally {
    button.disabled = false;
  }
}

/** The incident is over for the colleagues nearby: "all clear" on each of their wearables. */
async function allClear() {
  const id = following;
  const button = $("messages-all-clear");
  button.disabled = true;
  const failed = [];
  for (const m of colleaguesTold) {
    try {
      await api(`/officers/${m.officer_id}/messages`, { method: "POST", body: { kind: "all_clear", alert_id: id } });
    } catch (err) {
      failed.push(explain(err, m.officer_name || `officer ${m.officer_id}`));
    }
  }
  button.disabled = false;
  notify(failed.length ? failed.join("; ") : `“All clear” queued for ${colleaguesTold.length} colleague(s).`);
  await refresh();
}

async function positions() {
  try {
    const answer = await api(`/live/positions`);
    setOfficerPositions(answer.officers);
  } catch {
    // the map keeps what it had; the alerts on it come from the live feed
  }
}

function build(box) {
  fill(box,
    el("h3", { id: "messages-h" }, "Messages to wearables"),
    el("form", { id: "message-form", class: "inline" },
      el("label", { for: "message-kind" }, "Message to the officer's wearable (felt as a pattern; the officer presses to confirm)"),
      el("select", { id: "message-kind" }),
      el("button", { type: "submit", id: "message-send" }, "Send to wearable")),
    el("h4", {}, "Sent by supervisors"),
    el("ol", { id: "messages-sent", class: "steps small" }),
    el("p", { id: "messages-sent-empty", class: "muted small" }, "No message sent yet."),
    el("h4", {}, "Colleagues nearby, told on their wearables"),
    el("ol", { id: "messages-colleagues", class: "steps small" }),
    el("p", { id: "messages-colleagues-empty", class: "muted small" },
      "No colleague told: none on shift near the officer, or not an SOS or man-down."),
    el("button", { type: "button", id: "messages-all-clear", hidden: true, onclick: allClear },
      "Send “all clear” to the colleagues told"),
    el("p", { id: "messages-status", class: "muted small", role: "status" }));
  box.setAttribute("aria-labelledby", "messages-h");
}

async function start() {
  const box = $("messages-box");
  const incident = $("incident");
  if (!box) return;
  build(box);
  if (incident) incident.insertBefore(box, $("incident-tl-h") || null);  // part of the incident detail
  try {
    kinds = (await api(`/messages/kinds`)).filter((k) => k.supervisor);
  } catch {
    return;  // not signed in as a supervisor: supervisor.js says why
  }
  fill($("message-kind"), ...kinds.map((k) => el("option", { value: k.kind }, `${k.label} (${k.pattern})`)));
  $("message-form").addEventListener("submit", send);
  const sync = () => {
    // without the incident detail on the page, the incident named in the address
    const id = !incident || !incident.hidden ? alertInAddress() : null;
    if (id !== following) follow(id);
  };
  if (incident) new MutationObserver(sync).observe(incident, { attributes: true, attributeFilter: ["hidden"] });
  setInterval(sync, FOLLOW_CHECK_MS);
  sync();
  positions();
  setInterval(positions, POSITIONS_REFRESH_MS);
}

start();
