// A map of where open alerts are, drawn as SVG from the positions alone: no tiles, no internet
// (the control-room machines have none). Positions are projected onto a local flat plane
// (equirectangular around the centre, exact enough over the few kilometres a shift covers), with
// a grid, a scale bar and north up. Alerts at the same place (the same gateway's fix) share one
// marker that lists them all.
import { PRIORITY_ICON, ago, svg } from "./common.js";

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

/**
 * The map as an <svg>: points are {id, lat, lon, priority, label, source, at}; onPick(id) when a
 * marker is chosen (click or Enter). Returns null when no point has a position.
 */
export function alertMap(points, { width = 480, height = 260, onPick = () => {}, now = Date.now() } = {}) {
  const groups = places(points);
  if (!groups.length) return null;
  const lat0 = groups.reduce((s, g) => s + g.lat, 0) / groups.length;
  const lon0 = groups.reduce((s, g) => s + g.lon, 0) / groups.length;
  const xy = groups.map((g) => project(g.lat, g.lon, lat0, lon0));
  const span = Math.max(MIN_SPAN_M, ...xy.map(([x, y]) => 2.4 * Math.max(Math.abs(x), Math.abs(y) * (width / height))));
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
  const summary = groups.map((g) => g.points.map((p) => p.label).join(", ") + ` at ${g.lat.toFixed(5)}, ${g.lon.toFixed(5)}`).join("; ");
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
  return svg("svg", { class: "alert-map", viewBox: `0 0 ${width} ${height}`, role: "group", "aria-label": `Map of open alerts: ${summary}` },
    svg("rect", { x: 0, y: 0, width, height, class: "map-bg" }),
    grid,
    svg("g", { class: "map-scale" },
      svg("line", { x1: 10, y1: height - 12, x2: 10 + bar, y2: height - 12 }),
      svg("text", { x: 10, y: height - 18 }, `${distance(step)} (grid)`)),
    svg("text", { x: width - 14, y: 18, "text-anchor": "middle", class: "map-north" }, "N ↑"),
    markers);
}
