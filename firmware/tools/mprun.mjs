// Run a Python script under genuine MicroPython (the official WebAssembly port, from npm).
//
//   node mprun.mjs --mp PATH/micropython.mjs [--put HOST_DIR_OR_FILE:MP_PATH]... [--heap BYTES] SCRIPT.py
//
// --mp names the pinned package's entry file (installed by firmware/tools/setup_checks.py into
// .vigil/firmware/node, outside the source tree, so it is passed in rather than resolved).
// Each --put copies a file, or a directory's .py and .json files recursively, into the
// in-memory file system. The script runs as __main__; its output goes to stdout. A Python
// exception prints its traceback to stderr and exits 1, so a caller (pytest) can trust the
// exit status. One process loads MicroPython once (~20 ms): batch many checks per script.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const puts = [];
let heap = 8 * 1024 * 1024;
let script = null;
let mpModule = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--put") puts.push(args[++i]);
  else if (args[i] === "--mp") mpModule = args[++i];
  else if (args[i] === "--heap") heap = parseInt(args[++i], 10);
  else script = args[i];
}
if (!script || !mpModule) {
  console.error("usage: node mprun.mjs --mp MICROPYTHON_MJS [--put HOST:MP]... [--heap BYTES] SCRIPT.py");
  process.exit(2);
}
const { loadMicroPython } = await import(pathToFileURL(path.resolve(mpModule)).href);

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copy(host, target) {
  const st = fs.statSync(host);
  if (st.isDirectory()) {
    mp.FS.mkdirTree(target);
    for (const name of fs.readdirSync(host)) {
      if (name.startsWith(".") || name === "__pycache__" || name === "node_modules") continue;
      const h = path.join(host, name);
      const sub = fs.statSync(h);
      if (sub.isDirectory()) copy(h, target + "/" + name);
      else if (name.endsWith(".py") || name.endsWith(".json")) mp.FS.writeFile(target + "/" + name, fs.readFileSync(h));
    }
  } else {
    mp.FS.mkdirTree(path.posix.dirname(target));
    mp.FS.writeFile(target, fs.readFileSync(host));
  }
}

for (const spec of puts) {
  const cut = spec.lastIndexOf(":");
  copy(spec.slice(0, cut), spec.slice(cut + 1));
}

try {
  mp.runPython(fs.readFileSync(script, "utf8"));
} catch (err) {
  if (err && err.name === "PythonError") {
    if (err.type === "SystemExit") process.exit(0);
    process.stderr.write(err.message + "\n");
    process.exit(1);
  }
  throw err;
}
