// A map of where open alerts are, drawn as SVG from the positions alone: no tiles, no internet
// (the control-room machines have none). Positions are projected onto a local flat plane
// (equirectangular around the centre, exact enough over the few kilometres a shift covers), with
// a grid, a scale bar and north up. Alerts at the same place (the same gateway's fix) share one
// marker that lists them all.
//
// Officers' last known positions are drawn too (small squares, apart from the alerts' circles):
// each is the position of the gateway that last heard the officer's wearable, with how long ago
// and which gateway, as GET /api/v1/live/positions gives them. messages.js fetches them and
// calls setOfficerPositions(); the map redraws itself where it was last drawn.
import { PRIORITY_ICON, ago, fill, svg } from "./common.js";

const M_PER_DEG_LAT = 110540;
const M_PER_DEG_LON = 111320;
const MIN_SPAN_M = 400;          // the smallest area shown, so one alert is not a dot in a void
const NICE = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

/** Metres east and north of (lat0, lon0). */
export function project(lat, lon, lat0, lon0) {
  return [(lon - lon0) * Math.cos((lat0 * Math.PI) / 180) * M_PER_DEG_LON, (lat - lat0) * M_PER_DEG_LAT];
}

/** Points with a position grouped by place (about 5 m apart or closer share a marker). */
export function places(points) {
  const groups = new Map();
  for (const p of points) {
    if (p.lat == null || p.lon == null || !isFinite(p.lat) || !isFinite(p.lon)) continue;
    const key = `${Number(p.lat).toFixed(4)},${Number(p.lon).toFixed(4)}`;
    if (!groups.has(key)) groups.set(key, { lat: Number(p.lat), lon: Number(p.lon), points: [] });
    groups.get(key).points.push(p);
  }
  for (const g of groups.values()) g.points.sort((a, b) => a.priority - b.priority);
  return [...groups.values()];
}

function niceStep(span) {
  const target = span / 4;
  return NICE.reduce((best, n) => (Math.abs(n - target) < Math.abs(best - target) ? n : best), NICE[0]);
}

const distance = (m) => (m >= 1000 ? `${m / 1000} km` : `${m} m`);

// An officer's fix older than this is drawn faded: they may have moved on since.
export const STALE_FIX_S = 60;
const OFFICER_FILL = "#1f5fa8";
const STALE_FILL = "#8a96a3";

let officerPositions = [];   // [{officer_id, officer_name, lat, lon, source, gateway_id, heard_at, age_s}]
let lastDrawn = null;        // {points, options}: what the page last asked for, to redraw with new officers

/** Officers' last known positions (GET /api/v1/live/positions); redraws the map in ``container``. */
export function setOfficerPositions(officers, container = document.getElementById("map")) {
  officerPositions = Array.isArray(officers) ? officers : [];
  if (!container || !lastDrawn) return;
  const map = alertMap(lastDrawn.points, lastDrawn.options);
  fill(container, map);
  const empty = document.getElementById("map-empty");
  if (empty) empty.hidden = places(lastDrawn.points).length > 0;
}

/** "Officer Brandt — near gateway gw-3, heard 12 s ago" */
export function officerFix(o, now = Date.now()) {
  return `${o.officer_name || `officer ${o.officer_id}`} — near gateway ${o.gateway_id} (${o.source || "gateway"} position), heard ${ago(o.heard_at, now)}`;
}

function officerMarker(o, [px, py], now, row = 0) {
  const stale = (now - Date.parse(o.heard_at)) / 1000 > STALE_FIX_S;
  const text = officerFix(o, now);
  return svg("g", { class: `officer${stale ? " stale" : ""}`, role: "img", "aria-label": text, "data-officer-id": o.officer_id },
    svg("title", {}, text),
    svg("rect", { x: px - 6, y: py - 6, width: 12, height: 12, fill: stale ? STALE_FILL : OFFICER_FILL, stroke: "#fff",
      "stroke-width": 2 }),
    // officers at one gateway share its square; their names stack below it
    svg("text", { x: px - 6, y: py + 20 + row * 14, class: "map-label", "text-anchor": "start", fill: stale ? STALE_FILL : OFFICER_FILL },
      `${o.officer_name || o.officer_id} · ${ago(o.heard_at, now)}`));
}

/**
 * The map as an <svg>: points are {id, lat, lon, priority, label, source, at}; onPick(id) when a
 * marker is chosen (click or Enter); officers (default: the last setOfficerPositions) are drawn
 * at their last gateways. Returns null when neither an alert nor an officer has a position.
 */
export function alertMap(points, options = {}) {
  const { width = 480, height = 260, onPick = () => {}, now = Date.now(), officers = officerPositions } = options;
  lastDrawn = { points, options: { ...options, now: undefined, officers: options.officers } };
  const groups = places(points);
  const located = officers.filter((o) => o.lat != null && o.lon != null && isFinite(o.lat) && isFinite(o.lon));
  if (!groups.length && !located.length) return null;
  const centre = groups.length ? groups : located;  // the alerts stay in the middle
  const lat0 = centre.reduce((s, g) => s + Number(g.lat), 0) / centre.length;
  const lon0 = centre.reduce((s, g) => s + Number(g.lon), 0) / centre.length;
  const xy = groups.map((g) => project(g.lat, g.lon, lat0, lon0));
  const officerXy = located.map((o) => project(Number(o.lat), Number(o.lon), lat0, lon0));
  const span = Math.max(MIN_SPAN_M, ...[...xy, ...officerXy].map(([x, y]) => 2.4 * Math.max(Math.abs(x), Math.abs(y) * (width / height))));
  const scale = width / span;  // px per metre
  const toPx = ([x, y]) => [width / 2 + x * scale, height / 2 - y * scale];
  const step = niceStep(span);
  const grid = [];
  for (let m = -Math.ceil(span / step) * step; m <= span; m += step) {
    const [gx] = toPx([m, 0]);
    const [, gy] = toPx([0, m]);
    if (gx >= 0 && gx <= width) grid.push(svg("line", { x1: gx, y1: 0, x2: gx, y2: height, class: "grid" }));
    if (gy >= 0 && gy <= height) grid.push(svg("line", { x1: 0, y1: gy, x2: width, y2: gy, class: "grid" }));
  }
  const bar = step * scale;
  const summary = [
    ...groups.map((g) => g.points.map((p) => p.label).join(", ") + ` at ${g.lat.toFixed(5)}, ${g.lon.toFixed(5)}`),
    ...located.map((o) => officerFix(o, now)),
  ].join("; ");
  const rows = new Map();  // place -> officers drawn there so far
  const officerMarkers = located.map((o, i) => {
    const key = `${Number(o.lat).toFixed(4)},${Number(o.lon).toFixed(4)}`;
    rows.set(key, (rows.get(key) ?? -1) + 1);
    return officerMarker(o, toPx(officerXy[i]), now, rows.get(key));
  });
  const markers = groups.map((g, i) => {
    const [px, py] = toPx(xy[i]);
    const top = g.points[0];
    const fix = g.points.map((p) => `${p.label} — ${p.source || "unknown source"} fix, ${ago(p.at, now)}`).join("\n");
    const label = `${g.points.map((p) => p.label).join(", ")} at ${g.lat.toFixed(5)}, ${g.lon.toFixed(5)} (${top.source || "unknown source"} fix, ${ago(top.at, now)})`;
    const pick = () => onPick(top.id);
    const names = g.points.slice(0, 3).map((p, k) => svg("text", { x: px + 14, y: py - 4 + k * 15, class: "map-label" }, p.label));
    if (g.points.length > 3) names.push(svg("text", { x: px + 14, y: py - 4 + 3 * 15, class: "map-label" }, `+${g.points.length - 3} more`));
    const marker = svg("g", { class: `marker p${top.priority}`, tabindex: 0, role: "button", "aria-label": label,
      "data-alert-ids": g.points.map((p) => p.id).join(" ") },
    svg("title", {}, fix),
    svg("circle", { cx: px, cy: py, r: 11 }),
    svg("text", { x: px, y: py + 4, "text-anchor": "middle", class: "map-icon" }, g.points.length > 1 ? String(g.points.length) : PRIORITY_ICON[top.priority] || "?"),
    names);
    marker.addEventListener("click", pick);
    marker.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); } });
    return marker;
  });
  return svg("svg", { class: "alert-map", viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `Map of open alerts and officers' last known positions: ${summary}` },
    svg("rect", { x: 0, y: 0, width, height, class: "map-bg" }),
    grid,
    svg("g", { class: "map-scale" },
      svg("line", { x1: 10, y1: height - 12, x2: 10 + bar, y2: height - 12 }),
      svg("text", { x: 10, y: height - 18 }, `${distance(step)} (grid)`)),
    svg("text", { x: width - 14, y: 18, "text-anchor": "middle", class: "map-north" }, "N ↑"),
    located.length ? svg("text", { x: 10, y: 18, class: "map-legend", fill: OFFICER_FILL },
      "■ officer, at the gateway that last heard them") : null,
    officerMarkers,
    markers);
}
