// The browser libraries the dashboard uses, served by the backend itself under /static/vendor/
// (backend/dashboard/package.json, installed from the npm registry by scripts/setup.sh; see
// backend/dashboard/README.md for versions and licences). Loaded on demand: a page whose map or
// plot cannot load still shows its alerts, and says what to do.

const ADVICE = "run scripts/setup.sh on the server (npm ci in backend/dashboard)";

export class VendorMissing extends Error {
  constructor(what, cause) {
    super(`${what} is not available from this server: ${ADVICE}`);
    this.cause = cause;
  }
}

const loading = new Map();  // url -> Promise

function stylesheet(href) {
  if (!loading.has(href)) {
    loading.set(href, new Promise((resolve, reject) => {
      const link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = href;
      link.onload = () => resolve();
      link.onerror = () => reject(new Error(`${href} did not load`));
      document.head.append(link);
    }));
  }
  return loading.get(href);
}

async function load(what, script, css) {
  try {
    const [module] = await Promise.all([import(script), css ? stylesheet(css) : null]);
    return module;
  } catch (err) {
    loading.delete(css);  // a later call tries again (after setup.sh ran)
    throw new VendorMissing(what, err);
  }
}

/** Leaflet 1.9 (BSD-2-Clause): the supervisor's map. Resolves to the library's namespace (L). */
export const leaflet = () => load("The map library (Leaflet)", "/static/vendor/leaflet/leaflet-src.esm.js",
  "/static/vendor/leaflet/leaflet.css");

/** uPlot 1.6 (MIT): heart-rate plots. Resolves to the uPlot constructor. */
export const uplot = async () => (await load("The plotting library (uPlot)", "/static/vendor/uplot/uPlot.esm.js",
  "/static/vendor/uplot/uPlot.min.css")).default;
