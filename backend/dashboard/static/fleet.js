// The fleet admin's desk: devices (provision with the key shown once, assign, unassign, retire)
// and gateways (register with credentials shown once, the devices each serves).
import { fill, ago, api, deviceHex, el, explain, labels, notify, startPage, when } from "./common.js";

const $ = (id) => document.getElementById(id);
let officers = [];
let devices = [];
let BATTERY_WARN_PCT = 15;  // until the backend's setting is read (GET /meta/labels)

function parseDeviceId(text) {
  const s = String(text).trim();
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? parseInt(s, 10) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`“${s}” is not a device id (decimal or 0x…, 32 bits)`);
  return n;
}

async function loadDevices() {
  try {
    devices = await api("/devices");
  } catch (err) {
    notify(explain(err, "The device list"));
    return;
  }
  fill($("devices"), ...devices.map((d) => {
    const retired = d.status === "retired";
    return el("tr", { dataset: { deviceId: d.device_id } },
      el("th", { scope: "row" }, deviceHex(d.device_id), el("div", { class: "muted small" }, `${d.device_id} · ${String(d.placement || "").replace("_", " ")}`)),
      el("td", {}, d.status),
      el("td", {}, d.firmware || "—"),
      el("td", {}, d.battery_pct == null ? "—" : d.battery_pct <= BATTERY_WARN_PCT
        ? el("span", { class: "battery-warn", title: "battery low: charge or swap the device" }, `⚠ ${Math.round(d.battery_pct)} % low`)
        : `${Math.round(d.battery_pct)} %`),
      el("td", { title: when(d.last_seen) }, d.last_seen ? ago(d.last_seen) : "never"),
      el("td", {}, d.officer_id == null ? "—" : `${d.officer_name || "officer"} (#${d.officer_id})`,
        d.shift_ends_at ? el("div", { class: "muted small" }, `until ${when(d.shift_ends_at)}`) : null),
      el("td", { class: "actions" },
        !retired && d.officer_id != null ? el("button", { type: "button", onclick: (e) => change(e.currentTarget, d, "unassign") }, "Unassign") : null,
        !retired && d.officer_id == null ? el("button", { type: "button", onclick: () => pickForAssign(d) }, "Assign…") : null,
        !retired ? el("button", { type: "button", class: "danger", onclick: (e) => change(e.currentTarget, d, "retire") }, "Retire") : null));
  }));
  $("devices-empty").hidden = devices.length > 0;
  fill($("assign-device"), ...devices.filter((d) => d.status !== "retired").map((d) =>
    el("option", { value: d.device_id }, `${deviceHex(d.device_id)}${d.officer_name ? ` — now ${d.officer_name}` : ""}`)));
}

/** Which devices run outdated firmware: versions with their counts, the current release, the devices behind it. */
async function loadFirmware() {
  let fw;
  try {
    fw = await api("/devices/firmware");
  } catch (err) {
    notify(explain(err, "The firmware overview"));
    return;
  }
  const behind = fw.outdated.length;
  $("firmware-current").textContent = fw.current == null
    ? "No device has reported its firmware yet."
    : `Current release ${fw.current} (${fw.current_source === "setting" ? "set by VIGIL_FIRMWARE_CURRENT" : "the newest any device reports"}): ` +
      (behind ? `${behind} device${behind === 1 ? "" : "s"} run${behind === 1 ? "s" : ""} an older one.` : "no device runs an older one.");
  const standing = { current: "current", outdated: "⚠ outdated", newer: "newer than the release", unknown: "not reported yet" };
  fill($("firmware-versions"), ...fw.versions.map((v) => el("tr", { dataset: { version: v.version ?? "unknown" }, class: v.standing === "outdated" ? "firmware-outdated" : "" },
    el("th", { scope: "row" }, v.version ?? "—"), el("td", {}, String(v.devices)), el("td", {}, standing[v.standing] || v.standing))));
  fill($("firmware-outdated"), ...fw.outdated.map((d) => el("tr", { dataset: { deviceId: d.device_id } },
    el("th", { scope: "row" }, deviceHex(d.device_id)),
    el("td", {}, d.firmware),
    el("td", {}, d.officer_id == null ? "no officer" : `${d.officer_name || "officer"} (#${d.officer_id})`),
    el("td", { title: when(d.last_seen) }, d.last_seen ? ago(d.last_seen) : "never"))));
  $("firmware-none-outdated").hidden = behind > 0 || fw.current == null;
}

async function loadOfficers() {
  try {
    officers = await api("/officers");
  } catch (err) {
    notify(explain(err, "The officer list"));
    return;
  }
  fill($("assign-officer"), ...officers.map((o) => el("option", { value: o.id }, `${o.name} · ${o.badge}${o.unit ? ` · ${o.unit}` : ""}`)));
}

function pickForAssign(d) {
  $("assign-device").value = String(d.device_id);
  $("assign-officer").focus();
}

async function change(button, d, what) {
  if (what === "retire" && !confirm(retireQuestion(d))) return;
  button.disabled = true;
  try {
    if (what === "unassign") await api(`/devices/${d.device_id}/assignment`, { method: "DELETE" });
    else {
      const r = await api(`/devices/${d.device_id}/retire`, { method: "POST" });
      notify(r.retired_from ? `Device ${deviceHex(d.device_id)} retired. ${r.retired_from.officer_name || "Officer #" + r.retired_from.officer_id} ` +
        "now has no device: they are off the supervisors' board until one is assigned." : "");
      return;
    }
    notify("");
  } catch (err) {
    notify(explain(err, what === "retire" ? "Retiring the device" : "Ending the assignment"));
  } finally {
    await loadDevices();
  }
}

/** The confirmation names who wears the device: retiring it takes them off the supervisors' board. */
export function retireQuestion(d) {
  const who = d.officer_id != null ? `${d.officer_name || "Officer #" + d.officer_id}` : null;
  return who
    ? `Retire device ${deviceHex(d.device_id)}, worn by ${who} on shift? ${who} will have no device and drops off the ` +
      "supervisors' board until another is assigned. Its frames are refused from now on."
    : `Retire device ${deviceHex(d.device_id)}? No officer wears it. Its frames are refused from now on.`;
}

/** Assigning a device someone else wears takes it from them: the confirmation names both (null: nobody loses it). */
export function assignQuestion(d, officer) {
  if (!d || d.officer_id == null || !officer || d.officer_id === officer.id) return null;
  const from = d.officer_name || "Officer #" + d.officer_id;
  return `Assign device ${deviceHex(d.device_id)} to ${officer.name}? ${from} wears it on shift now and will have no ` +
    "device: they drop off the supervisors' board until another is assigned.";
}

function shownOnce(box, title, lines) {
  fill(box, el("h3", {}, title), ...lines);
  box.hidden = false;
  box.focus();
}

async function provision(event) {
  event.preventDefault();
  const form = event.currentTarget;
  let id;
  try {
    id = parseDeviceId($("prov-id").value);
  } catch (err) {
    notify(err.message);
    $("prov-id").focus();
    return;
  }
  try {
    const r = await api("/devices", { method: "POST", body: { device_id: id, placement: $("prov-placement").value } });
    const hex = deviceHex(r.device_id).toLowerCase();
    const keyFile = `device-${hex}.key`;
    shownOnce($("provision-result"), `Device ${deviceHex(r.device_id)} provisioned — the key is shown only now`, [
      el("p", {}, "Write it onto the wearable over USB now; Vigil will not show it again."),
      el("label", { for: "prov-key" }, "Device key (hex)"),
      el("pre", { id: "prov-key", tabindex: "0" }, r.key_hex),
      el("p", {}, "Run, with the wearable on USB:"),
      el("pre", { id: "prov-command", tabindex: "0" },
        `umask 077; printf '%s' ${r.key_hex} > ${keyFile}\n` +
        `vigil firmware provision --port /dev/ttyACM0 --device-id ${hex} --key-file ${keyFile}\n` +
        `shred -u ${keyFile}`),
    ]);
    form.reset();
    notify("");
  } catch (err) {
    notify(explain(err, "Provisioning"));
  }
  await loadDevices();
}

async function assign(event) {
  event.preventDefault();
  const deviceId = $("assign-device").value;
  const officerId = $("assign-officer").value;
  if (!deviceId || !officerId) { notify("Choose a device and an officer."); return; }
  const question = assignQuestion(devices.find((d) => String(d.device_id) === deviceId),
    officers.find((o) => String(o.id) === officerId));
  if (question && !confirm(question)) return;
  const end = $("assign-end").value;
  try {
    await api(`/devices/${deviceId}/assignment`, { method: "PUT",
      body: { officer_id: Number(officerId), ends_at: end ? new Date(end).toISOString() : null } });
    notify("");
  } catch (err) {
    notify(explain(err, "Assigning the device"));
  }
  await loadDevices();
}

async function loadGateways() {
  let gateways;
  try {
    gateways = await api("/gateways");
  } catch (err) {
    notify(explain(err, "The gateway list"));
    return;
  }
  const byId = new Map(devices.map((d) => [d.device_id, d]));
  fill($("gateways"), ...gateways.map((g) => {
    const recent = g.last_seen || g.devices.map((id) => byId.get(id)?.last_seen).filter(Boolean).sort().pop();
    const heard = recent && Date.now() - Date.parse(recent) < 120000;
    const carrying = (g.devices_heard || []).length ? ` · carrying ${g.devices_heard.map(deviceHex).join(", ")}` : "";
    const status = g.retired_at ? "retired"
      : !g.registered ? `heard, NOT registered${recent ? ` (last frame ${ago(recent)})` : ""}${carrying}`
      : heard ? `active (last frame ${ago(recent)})${carrying}` : "registered, no recent traffic";
    // what the gateway last said of itself (its retained state): offline, or the frames waiting in its queue
    const queue = g.state === "offline" ? `offline (said ${ago(g.state_at)})`
      : g.queue_depth != null ? `${g.queue_depth} frame${g.queue_depth === 1 ? "" : "s"} waiting` : "—";
    return el("tr", { dataset: { gatewayId: g.gateway_id } },
      el("th", { scope: "row" }, g.gateway_id),
      el("td", {}, status),
      el("td", { class: "gw-queue", title: g.state_at ? `said at ${when(g.state_at)}` : "" }, queue),
      el("td", {}, g.mqtt_username || "—"),
      el("td", {}, g.devices.length ? g.devices.map(deviceHex).join(", ") : "none"),
      el("td", {}, when(g.created_at)),
      el("td", { class: "actions" }, g.registered && !g.retired_at
        ? el("button", { type: "button", class: "danger", onclick: (e) => retireGateway(e.currentTarget, g, byId) }, "Retire") : null));
  }));
  $("gateways-empty").hidden = gateways.length > 0;
}

/** The confirmation names the officers whose wearables the gateway carries: they lose that link. */
export function retireGatewayQuestion(g, byId) {
  const ids = [...new Set([...(g.devices || []), ...(g.devices_heard || [])])];
  const worn = ids.map((id) => byId.get(id)).filter((d) => d && d.officer_id != null && d.status !== "retired")
    .map((d) => `${d.officer_name || "Officer #" + d.officer_id} (${deviceHex(d.device_id)})`);
  return `Retire gateway ${g.gateway_id}? The broker disconnects it now and refuses it from then on. ` +
    (worn.length ? `It carries the wearables of ${worn.join(", ")}: their frames reach Vigil only through another gateway.`
      : "No officer on shift wears a device it serves.");
}

async function retireGateway(button, g, byId) {
  if (!confirm(retireGatewayQuestion(g, byId))) return;
  button.disabled = true;
  try {
    const r = await api(`/gateways/${encodeURIComponent(g.gateway_id)}/retire`, { method: "POST" });
    notify(`Gateway ${g.gateway_id} retired; broker: ${r.broker}.`);
  } catch (err) {
    notify(explain(err, "Retiring the gateway"));
  }
  await loadGateways();
}

async function register(event) {
  event.preventDefault();
  const form = event.currentTarget;
  let served;
  try {
    served = $("gw-devices").value.split(",").map((s) => s.trim()).filter(Boolean).map(parseDeviceId);
  } catch (err) {
    notify(err.message);
    return;
  }
  try {
    const r = await api("/gateways", { method: "POST", body: { gateway_id: $("gw-id").value.trim(), devices: served } });
    shownOnce($("gateway-result"), `Gateway ${r.gateway_id} registered — credentials shown only now`, [
      el("p", {}, "Put these in the gateway's configuration now; Vigil will not show them again."),
      el("p", { id: "gw-broker" }, r.broker === "applied" ? "The broker admits it now." : `Broker: ${r.broker}`),
      el("label", { for: "gw-token" }, "API token"), el("pre", { id: "gw-token", tabindex: "0" }, r.api_token),
      el("label", { for: "gw-mqtt" }, "MQTT username and password"),
      el("pre", { id: "gw-mqtt", tabindex: "0" }, `${r.mqtt_username}\n${r.mqtt_password}`),
      el("p", { class: "small" }, r.note || ""),
    ]);
    form.reset();
    notify("");
  } catch (err) {
    notify(explain(err, "Registering the gateway"));
  }
  await loadGateways();
}

async function main() {
  await startPage(["fleet_admin"]);
  $("provision-form").addEventListener("submit", provision);
  $("assign-form").addEventListener("submit", assign);
  $("gateway-form").addEventListener("submit", register);
  const words = await labels();
  if (words.battery_low_pct != null) BATTERY_WARN_PCT = words.battery_low_pct;
  await Promise.all([loadDevices(), loadOfficers(), loadFirmware()]);
  await loadGateways();
}

main().catch(() => {});
