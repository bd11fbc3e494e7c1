// Shared by every page: the API client carrying the signed-in person's token, the role check,
// navigation, the policy footer and small DOM helpers. The backend decides what a person may
// see; this module only chooses what to show and explains the backend's refusals.

export const API = "/api/v1";
const TOKEN_KEY = "vigil.token";

export const PAGES = [
  { path: "/supervisor", label: "Supervisor", roles: ["supervisor"] },
  { path: "/fleet", label: "Fleet", roles: ["fleet_admin"] },
  { path: "/audit", label: "Audit", roles: ["auditor"] },
  { path: "/me", label: "My data", roles: ["officer"] },
];
export const LANDING = { supervisor: "/supervisor", fleet_admin: "/fleet", auditor: "/audit", officer: "/me" };
export const ROLE_NAMES = { supervisor: "Supervisor", fleet_admin: "Fleet admin", auditor: "Auditor", officer: "Officer" };

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
  get refused() { return this.status === 403; }
}

export const token = () => sessionStorage.getItem(TOKEN_KEY);
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A readable sentence from a FastAPI error body (string, validation list, or policy refusal). */
export function describe(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && d.msg ? `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}` : describe(d))).join("; ");
  }
  if (typeof detail === "object") {
    const parts = [];
    if (detail.reason) parts.push(detail.reason);
    if (detail.rule) parts.push(`(rule ${detail.rule}${detail.policy ? `, policy ${detail.policy}` : ""})`);
    if (detail.audit_seq) parts.push(`— this refusal is audit entry #${detail.audit_seq}`);
    return parts.length ? parts.join(" ") : JSON.stringify(detail);
  }
  return String(detail);
}

/** Call the API as the signed-in person. Throws ApiError with the backend's reason. */
export async function api(path, { method = "GET", body, form, query } = {}) {
  const headers = {};
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let payload;
  if (form) payload = new URLSearchParams(form);
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const qs = query ? "?" + new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== "")) : "";
  let res;
  try {
    res = await fetch(API + path + qs, { method, headers, body: payload });
  } catch {
    throw new ApiError(0, "the backend cannot be reached (network)");
  }
  if (res.status === 401 && bearer && path !== "/auth/logout") {
    setToken(null);
    location.assign("/login?expired=1");
  }
  if (!res.ok) {
    let reason = res.statusText;
    try {
      const data = await res.json();
      reason = describe(data.detail ?? data);
    } catch { /* not JSON */ }
    throw new ApiError(res.status, reason);
  }
  if (res.status === 204) return null;
  return (res.headers.get("content-type") || "").includes("json") ? res.json() : res.text();
}

/** A refusal or failure explained in words a person can act on. */
export function explain(err, what) {
  if (!(err instanceof ApiError)) return `${what}: ${err}`;
  if (err.status === 403) return `${what} was refused by the backend: ${err.message}`;
  if (err.status === 404) return `${what}: not found (${err.message})`;
  if (err.status === 503) return `${what}: temporarily unavailable — ${err.message}`;
  if (err.status === 0) return `${what}: ${err.message}`;
  return `${what} failed (${err.status}): ${err.message}`;
}

export function notify(message) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = message || "";
  box.hidden = !message;
}

/** Build an element: el("td", {class: "x", onclick: fn}, "text", child, ...). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Replace a node's children, skipping null/false (replaceChildren would print "null"). */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) if (c != null) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "—";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

// The words for priorities, alert states and outcomes are the backend's (GET /meta/labels), read
// once per page; only the icons, which say nothing on their own, live here.
export const PRIORITY_ICON = { 1: "▲", 2: "◆", 3: "●" };
const NO_LABELS = { priorities: {}, states: {}, outcomes: {} };
let labelsRead = null;
export function labels() {
  labelsRead = labelsRead || api("/meta/labels").catch(() => { labelsRead = null; return NO_LABELS; });
  return labelsRead;
}

export const deviceHex = (id) => (id == null ? "—" : "0x" + Number(id).toString(16).toUpperCase().padStart(8, "0"));

async function footer() {
  const slot = document.getElementById("policy-footer");
  if (!slot) return;
  try {
    const p = await api("/policy");
    slot.replaceChildren("Data-use policy ", el("strong", {}, p.version), " · SHA-256 ",
      el("code", { title: p.sha256 }, String(p.sha256).slice(0, 16) + "…"),
      p.pending && p.pending.length ? ` · ${p.pending.length} change(s) pending notice` : "");
  } catch (err) {
    slot.textContent = explain(err, "Data-use policy");
  }
}

function navigation(me) {
  const nav = document.getElementById("nav");
  const here = location.pathname;
  nav.replaceChildren(...PAGES.filter((p) => me && p.roles.includes(me.role)).map((p) =>
    el("a", { href: p.path, "aria-current": p.path === here ? "page" : null }, p.label)));
  const who = document.getElementById("who");
  if (!me) { who.replaceChildren(); return; }
  who.replaceChildren(
    el("span", {}, `${me.subject} · ${ROLE_NAMES[me.role] || me.role} · ${me.agency}`),
    el("button", { type: "button", id: "logout", onclick: logout }, "Sign out"));
}

export async function logout() {
  try { await api("/auth/logout", { method: "POST" }); } catch { /* the token expires anyway */ }
  setToken(null);
  location.assign("/login");
}

/** Start a page: footer, then who is signed in; a person whose role may not use the page is
 * sent to their own page. Returns the /auth/me answer. */
export async function startPage(roles) {
  footer();
  if (!token()) {
    location.assign("/login");
    return new Promise(() => {});
  }
  let me;
  try {
    me = await api("/auth/me");
  } catch (err) {
    navigation(null);
    notify(explain(err, "Checking your sign-in"));
    throw err;
  }
  navigation(me);
  if (roles && !roles.includes(me.role)) {
    notify(`This page is for ${roles.map((r) => ROLE_NAMES[r] || r).join(", ")}; you are signed in as ${ROLE_NAMES[me.role] || me.role}.`);
    const main = document.getElementById("main");
    main.replaceChildren(el("p", {}, "Go to ", el("a", { href: LANDING[me.role] || "/login" }, "your page"), "."));
    throw new ApiError(403, "wrong role for this page");
  }
  return me;
}

export { footer as showPolicyFooter };
