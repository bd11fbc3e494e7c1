// Heart-rate plots with uPlot (served by the backend, static/vendor.js): local 24-hour clock time
// below, beats per minute on the left, an instant marked (the alert) when one is given. Where no
// value was reported (a null heart rate, or rows missing for longer than GAP_S) the line stops:
// nothing is drawn across a gap.
import { el } from "./common.js";
import { uplot } from "./vendor.js";

// Features come once a second (feature_interval_s); a longer silence than this is a gap, not a line.
export const GAP_S = 5;
const COLOUR = "#b00020";        // --p1: heart rate is drawn like the urgent things it explains
const MARK_COLOUR = "#8a4b00";   // --p2: the alert's instant
// Time ticks (s): uPlot's own list jumps from 1 to 5 minutes, too few ticks for the 2 minutes before an alert.
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

/**
 * uPlot's data from feature rows {time, heart_rate}: [seconds since the epoch, bpm], a null
 * where no value was reported and one inserted into every silence longer than ``gapS``.
 */
export function hrSeries(rows, gapS = GAP_S) {
  const xs = [];
  const ys = [];
  let last = null;
  for (const r of rows) {
    const t = Date.parse(r.time) / 1000;
    if (!isFinite(t)) continue;
    if (last != null && t - last > gapS) { xs.push((last + t) / 2); ys.push(null); }
    xs.push(t);
    ys.push(r.heart_rate == null || !isFinite(r.heart_rate) ? null : Number(r.heart_rate));
    last = t;
  }
  return [xs, ys];
}

const clock = (s, withSeconds, withDate) => new Date(s * 1000).toLocaleString(undefined, {
  ...(withDate ? { day: "2-digit", month: "2-digit" } : {}),
  hour: "2-digit", minute: "2-digit", ...(withSeconds ? { second: "2-digit" } : {}), hourCycle: "h23",
});

/** Tick labels for times ``splits`` (seconds): 24-hour local time; seconds when ticks are closer than a minute, the date over a day. */
export function timeTicks(splits) {
  const finite = splits.filter((s) => s != null && isFinite(s));
  const step = finite.length > 1 ? finite[1] - finite[0] : 60;
  const days = finite.length > 1 && finite[finite.length - 1] - finite[0] > 20 * 3600;
  return splits.map((s) => (s == null ? "" : clock(s, step < 60, days)));
}

/**
 * A heart-rate plot in a <figure class="hr-plot"> appended to ``container``. ``markAt`` (an ISO
 * time) is drawn as a labelled vertical line and always kept inside the time axis. Returns
 * {figure, update(rows), destroy(), plot, ticks} once the library is loaded; the figure is
 * in ``container`` at once (its caption says so if the library cannot be loaded).
 */
export async function hrPlot(container, rows, { markAt = null, markLabel = "alert", height = 200, caption = "" } = {}) {
  const figure = el("figure", { class: "hr-plot", role: "group" });
  const captionNode = el("figcaption", {}, caption);
  container.append(figure);
  let UPlot;
  try {
    UPlot = await uplot();
  } catch (err) {
    figure.append(el("p", { class: "error" }, err.message));
    return { figure, update() {}, destroy() { figure.remove(); }, plot: null, ticks: { x: [], y: [] } };
  }
  const mark = markAt ? Date.parse(markAt) / 1000 : NaN;
  const ticks = { x: [], y: [] };  // what the axes last drew (read by the tests)
  const width = Math.max(280, Math.min(container.clientWidth || 460, 900));
  const opts = {
    width, height,
    scales: {
      x: { time: true, range: (u, lo, hi) => (isFinite(mark) ? [Math.min(lo ?? mark, mark), Math.max(hi ?? mark, mark, (lo ?? mark) + 1)] : [lo, hi]) },
      y: { range: (u, lo, hi) => [Math.floor(((lo ?? 60) - 5) / 10) * 10, Math.ceil(((hi ?? 100) + 5) / 10) * 10] },
    },
    series: [
      { label: "Time", value: (u, v) => (v == null ? "—" : clock(v, true, false)) },
      { label: "Heart rate", stroke: COLOUR, width: 2, spanGaps: false, points: { show: false },
        value: (u, v) => (v == null ? "— bpm" : `${Math.round(v)} bpm`) },
    ],
    axes: [
      { label: "Local time (24 h)", labelSize: 20, space: 70, incrs: TIME_STEPS, values: (u, splits) => (ticks.x = timeTicks(splits)) },
      { label: "Heart rate (bpm)", labelSize: 20, size: 50, space: 28, incrs: [5, 10, 20, 50, 100], values: (u, splits) => (ticks.y = splits.map((v) => String(Math.round(v)))) },
    ],
    hooks: { draw: [(u) => drawMark(u, mark, markLabel)] },
  };
  const plot = new UPlot(opts, hrSeries(rows), figure);
  figure.append(captionNode);
  const describe = (data) => {
    const values = data[1].filter((v) => v != null);
    const xs = data[0];
    figure.setAttribute("aria-label", values.length
      ? `Heart rate from ${clock(xs[0], true, false)} to ${clock(xs[xs.length - 1], true, false)}, ` +
        `${Math.round(Math.min(...values))} to ${Math.round(Math.max(...values))} bpm` +
        (isFinite(mark) ? `; ${markLabel} at ${clock(mark, true, false)}` : "")
      : "Heart rate: no value reported in this span");
  };
  describe(plot.data);
  const handle = {
    figure, plot, ticks,
    update(next) { const data = hrSeries(next); plot.setData(data); describe(data); },
    destroy() { plot.destroy(); figure.remove(); },
  };
  figure.vigilPlot = handle;  // for whoever holds only the element (the tests)
  return handle;
}

function drawMark(u, at, label) {
  if (!isFinite(at)) return;
  const x = Math.round(u.valToPos(at, "x", true));
  const { top, height, left, width } = u.bbox;
  if (x < left - 1 || x > left + width + 1) return;
  const ctx = u.ctx;
  const px = devicePixelRatio || 1;
  ctx.save();
  ctx.strokeStyle = MARK_COLOUR;
  ctx.lineWidth = 2 * px;
  ctx.setLineDash([5 * px, 4 * px]);
  ctx.beginPath();
  ctx.moveTo(x, top);
  ctx.lineTo(x, top + height);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = MARK_COLOUR;
  ctx.font = `${12 * px}px sans-serif`;
  // the label on the side with room: left of the line when the mark is at the right edge (now)
  const right = x > left + width - 60 * px;
  ctx.textAlign = right ? "right" : "left";
  ctx.fillText(label, right ? x - 4 * px : x + 4 * px, top + 14 * px);
  ctx.restore();
}
