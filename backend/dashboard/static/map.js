// The supervisor's map: open alerts and officers' last known positions, with Leaflet (served by
// the backend, static/vendor.js). The base is the tile server the deployment configures
// (VIGIL_MAP_TILE_URL, read from GET /meta/labels); without one, a grid drawn in the page with a
// scale bar, north up, and nothing fetched from anywhere (the control-room machines have no
// internet).
//
// Alerts (round markers, coloured by priority) sit where the alert reported them; alerts at one
// place (the same gateway's fix) share a marker that lists them all. Officers (squares) sit at
// the gateway that last heard their wearable (GET /api/v1/live/positions, fed in by messages.js
// through setOfficerPositions), with how long ago, faded once the fix is old. The view fits
// what is shown whenever the set of places changes, not on every refresh (a supervisor who
// zoomed in keeps their view). Markers are updated in place, so an open popup stays open.
import { PRIORITY_ICON, ago, el, labels, when } from "./common.js";
import { leaflet } from "./vendor.js";

// An officer's fix older than this is drawn faded: they may have moved on since.
export const STALE_FIX_S = 60;
const FIT_MAX_ZOOM = 17;         // one alert alone is shown at street level, not at the deepest zoom
const OFFLINE_MAX_ZOOM = 19;
const OFFICERS_NAMED = 3;        // names under an officers' square; its popup lists them all

/** Points with a position grouped by place (about 5 m apart or closer share a marker), most urgent first. */
export function places(points) {
  const groups = new Map();
  for (const p of points) {
    if (p.lat == null || p.lon == null || !isFinite(p.lat) || !isFinite(p.lon)) continue;
    const key = placeKey(p);
    if (!groups.has(key)) groups.set(key, { key, lat: Number(p.lat), lon: Number(p.lon), points: [] });
    groups.get(key).points.push(p);
  }
  for (const g of groups.values()) g.points.sort((a, b) => (a.priority ?? 9) - (b.priority ?? 9));
  return [...groups.values()];
}

const placeKey = (p) => `${Number(p.lat).toFixed(4)},${Number(p.lon).toFixed(4)}`;

/** Where a position comes from, in words: the wearable's own fix or the gateway that carried it. */
export function sourceText(source, gatewayId) {
  if (source === "gateway") return `the gateway${gatewayId ? ` ${gatewayId}` : ""} that carried it (the gateway's stated position, not the wearable's)`;
  if (source === "device" || source === "gps") return "the wearable's own fix";
  return source ? `${source}` : "an unknown source";
}

/** "Officer Brandt — near gateway gw-3 (gateway position), heard 12 s ago" */
export function officerFix(o, now = Date.now()) {
  return `${o.officer_name || `officer ${o.officer_id}`} — near gateway ${o.gateway_id} (${o.source || "gateway"} position), heard ${ago(o.heard_at, now)}`;
}

const isStale = (o, now) => !(o.heard_at && (now - Date.parse(o.heard_at)) / 1000 <= STALE_FIX_S);

// ---- state -------------------------------------------------------------------------------

let alertPoints = [];        // [{id, lat, lon, priority, priorityText, label, officer, what, source, gateway, at}]
let onPick = () => {};
let officerPositions = [];   // [{officer_id, officer_name, lat, lon, source, gateway_id, heard_at, age_s}]
let view = null;             // {L, map, alerts: Map<key, marker>, officers: Map<key, marker>, fitted}
let starting = null;

const $ = (id) => document.getElementById(id);

/**
 * Show the open alerts: points are {id, lat, lon, priority, priorityText, label, officer, what,
 * source, gateway, at}; onPick(id) when one is chosen on the map (its marker clicked, or its
 * popup's button).
 */
export function showAlerts(points, options = {}) {
  alertPoints = Array.isArray(points) ? points : [];
  if (options.onPick) onPick = options.onPick;
  draw();
}

/** Officers' last known positions (GET /api/v1/live/positions). */
export function setOfficerPositions(officers) {
  officerPositions = Array.isArray(officers) ? officers : [];
  draw();
}

function draw() {
  const container = $("map");
  if (!container) return;
  const alertPlaces = places(alertPoints);
  const officerPlaces = places(officerPositions);
  const empty = $("map-empty");
  if (empty) empty.hidden = alertPlaces.length > 0;
  const anything = alertPlaces.length + officerPlaces.length > 0;
  container.hidden = !anything;
  if (!anything) return;
  start(container).then((v) => {
    if (!v) return;
    v.map.invalidateSize();  // it may have been hidden
    const now = Date.now();
    update(v, v.alerts, alertPlaces, (g) => alertMarker(v, g, now), (m, g) => refreshAlert(m, g, now));
    update(v, v.officers, officerPlaces, (g) => officerMarker(v, g, now), (m, g) => refreshOfficers(m, g, now));
    const key = [...v.alerts.keys(), "|", ...v.officers.keys()].sort().join(" ");
    if (key !== v.fitted) {
      v.fitted = key;
      const all = [...alertPlaces, ...officerPlaces].map((g) => [g.lat, g.lon]);
      v.map.fitBounds(v.L.latLngBounds(all), { padding: [48, 48], maxZoom: FIT_MAX_ZOOM, animate: false });
    }
  });
}

function start(container) {
  if (view) return Promise.resolve(view);
  starting = starting || (async () => {
    const status = $("map-status");
    try {
      const [L, words] = await Promise.all([leaflet(), labels()]);
      const tiles = (words && words.map) || {};
      const map = L.map(container, { maxZoom: tiles.tile_url ? tiles.max_zoom || 19 : OFFLINE_MAX_ZOOM, minZoom: 2 });
      map.attributionControl.setPrefix("Leaflet");
      (tiles.tile_url ? tileBase(L, tiles) : gridBase(L)).addTo(map);
      L.control.scale({ imperial: false, maxWidth: 160 }).addTo(map);
      container.dataset.base = tiles.tile_url ? "tiles" : "grid";
      if (status) status.hidden = true;
      view = { L, map, alerts: new Map(), officers: new Map(), fitted: "" };
      return view;
    } catch (err) {
      starting = null;  // tried again at the next draw
      container.hidden = true;
      if (status) { status.textContent = err.message; status.hidden = false; }
      return null;
    }
  })();
  return starting;
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function tileBase(L, tiles) {
  return L.tileLayer(tiles.tile_url, { maxZoom: tiles.max_zoom || 19, attribution: escapeHtml(tiles.attribution || "") });
}

/** No tile server: a light grid drawn on canvases in the page (the scale bar gives distances). */
function gridBase(L) {
  const Grid = L.GridLayer.extend({
    createTile() {
      const size = this.getTileSize();
      const canvas = document.createElement("canvas");
      canvas.width = size.x;
      canvas.height = size.y;
      const g = canvas.getContext("2d");
      g.fillStyle = "#eef1f4";
      g.fillRect(0, 0, size.x, size.y);
      g.strokeStyle = "#d7dce2";
      g.lineWidth = 1;
      for (let k = 1; k < 4; k++) {
        g.beginPath();
        g.moveTo((k * size.x) / 4 + 0.5, 0); g.lineTo((k * size.x) / 4 + 0.5, size.y);
        g.moveTo(0, (k * size.y) / 4 + 0.5); g.lineTo(size.x, (k * size.y) / 4 + 0.5);
        g.stroke();
      }
      g.strokeStyle = "#b4bcc6";
      g.strokeRect(0.5, 0.5, size.x, size.y);
      return canvas;
    },
  });
  return new Grid({ maxZoom: OFFLINE_MAX_ZOOM, attribution: "No map server configured: grid only, north up" });
}

/** Add, refresh in place, or remove the markers of ``groups`` in ``markers`` (keyed by place). */
function update(v, markers, groups, create, refresh) {
  const seen = new Set();
  for (const g of groups) {
    seen.add(g.key);
    const m = markers.get(g.key);
    if (m) refresh(m, g);
    else markers.set(g.key, create(g).addTo(v.map));
  }
  for (const [key, m] of markers) if (!seen.has(key)) { m.remove(); markers.delete(key); }
}

// ---- alerts ------------------------------------------------------------------------------

function alertLabel(g, now) {
  const top = g.points[0];
  return `${g.points.map((p) => p.label).join(", ")} at ${g.lat.toFixed(5)}, ${g.lon.toFixed(5)} ` +
    `(${top.source || "unknown source"} fix, ${ago(top.at, now)})`;
}

function alertPopup(g, now) {
  return el("div", { class: "map-popup" }, g.points.map((p) => el("section", { dataset: { alertId: p.id } },
    el("strong", {}, p.what || p.label), el("br"),
    `${p.officer || "no officer assigned"} · ${p.priorityText || `priority ${p.priority}`}`, el("br"),
    `Reported ${ago(p.at, now)} (${when(p.at)})`, el("br"),
    `Position from ${sourceText(p.source, p.gateway)}: ${Number(p.lat).toFixed(5)}, ${Number(p.lon).toFixed(5)}`, el("br"),
    el("button", { type: "button", class: "map-open", onclick: () => onPick(p.id) }, "Open incident"))),
  officersHere(g.key, now));
}

/** The officers last heard at an alert's place (their square lies under the alert's marker). */
function officersHere(key, now) {
  const here = officerPositions.filter((o) => o.lat != null && o.lon != null && placeKey(o) === key);
  if (!here.length) return null;
  return el("section", { class: "map-officers-here" }, el("strong", {}, "Officers last heard here"), el("br"),
    here.map((o) => `${o.officer_name || `officer ${o.officer_id}`} (${ago(o.heard_at, now)})`).join(", "));
}

function alertNames(g) {
  const names = g.points.slice(0, 3).map((p) => el("div", {}, p.label));
  if (g.points.length > 3) names.push(el("div", {}, `+${g.points.length - 3} more`));
  return el("div", {}, names);
}

function alertMarker(v, g, now) {
  const m = v.L.marker([g.lat, g.lon], {
    icon: v.L.divIcon({ className: "map-alert", html: el("span", { "aria-hidden": "true" }), iconSize: [28, 28], iconAnchor: [14, 14] }),
    keyboard: true, zIndexOffset: 1000, riseOnHover: true,
  });
  m.bindTooltip("", { permanent: true, direction: "auto", offset: [14, 0], className: "map-label" });
  m.bindPopup("", { maxWidth: 320 });
  m.on("click", () => { const top = m.vigil.points[0]; if (top) onPick(top.id); });
  m.on("add", () => refreshAlert(m, m.vigil, Date.now()));
  m.vigil = g;
  return m;
}

function refreshAlert(m, g, now) {
  m.vigil = g;
  m.setLatLng([g.lat, g.lon]);
  m.setTooltipContent(alertNames(g));
  m.setPopupContent(alertPopup(g, now));
  const node = m.getElement();
  if (!node) return;
  const top = g.points[0];
  node.classList.remove("p1", "p2", "p3");
  node.classList.add(`p${top.priority}`);
  node.firstChild.textContent = g.points.length > 1 ? String(g.points.length) : PRIORITY_ICON[top.priority] || "?";
  node.setAttribute("aria-label", alertLabel(g, now));
  node.dataset.alertIds = g.points.map((p) => p.id).join(" ");
}

// ---- officers ----------------------------------------------------------------------------

function officerMarker(v, g, now) {
  const m = v.L.marker([g.lat, g.lon], {
    icon: v.L.divIcon({ className: "map-officer", html: el("span", { "aria-hidden": "true" }), iconSize: [14, 14], iconAnchor: [7, 7] }),
    keyboard: true,
  });
  m.bindTooltip("", { permanent: true, direction: "bottom", offset: [0, 8], className: "map-label officers" });
  m.bindPopup("", { maxWidth: 320 });
  m.on("add", () => refreshOfficers(m, m.vigil, Date.now()));
  m.vigil = g;
  return m;
}

function refreshOfficers(m, g, now) {
  m.vigil = g;
  m.setLatLng([g.lat, g.lon]);
  const officers = [...g.points].sort((a, b) => String(a.officer_name).localeCompare(String(b.officer_name)));
  // the most recently heard first; a crowd at one gateway (the demo's whole shift) names a few, its popup all
  const named = [...officers].sort((a, b) => Date.parse(b.heard_at || 0) - Date.parse(a.heard_at || 0)).slice(0, OFFICERS_NAMED);
  m.setTooltipContent(el("div", {}, officers.filter((o) => named.includes(o)).map((o) => el("div", {
    class: `map-officer-fix${isStale(o, now) ? " stale" : ""}`, title: officerFix(o, now),
    dataset: { officerId: o.officer_id },
  }, `${o.officer_name || o.officer_id} · ${ago(o.heard_at, now)}`)),
  officers.length > named.length ? el("div", {}, `+${officers.length - named.length} more officers here (the square's popup, or the alert's, lists them)`) : null));
  m.setPopupContent(el("div", { class: "map-popup" }, officers.map((o) => el("section", {},
    el("strong", {}, o.officer_name || `officer ${o.officer_id}`), el("br"),
    `Last heard ${ago(o.heard_at, now)} (${when(o.heard_at)}) through gateway ${o.gateway_id}`, el("br"),
    `Position from ${sourceText(o.source || "gateway", o.gateway_id)}: ${Number(o.lat).toFixed(5)}, ${Number(o.lon).toFixed(5)}`))));
  const node = m.getElement();
  if (!node) return;
  node.classList.toggle("stale", officers.every((o) => isStale(o, now)));
  node.setAttribute("aria-label", officers.map((o) => officerFix(o, now)).join("; "));
  node.dataset.officerIds = officers.map((o) => o.officer_id).join(" ");
}
