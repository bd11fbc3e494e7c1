# Test driver that runs under MicroPython (WebAssembly port) via firmware/tools/mprun.mjs.
# Reads /run.json: {"sys_path": [...], "modules": [...]}; calls every test_* function of each
# module and prints one "RESULT <json>" line per test; raises at the end if any failed, so
# the Node runner exits non-zero. The same test modules run under pytest on CPython.
import io
import json
import sys
import time

with open("/run.json") as f:
    spec = json.load(f)
for p in spec["sys_path"]:
    sys.path.insert(0, p)

failed = 0
for name in spec["modules"]:
    module = __import__(name)
    for attr in sorted(dir(module)):
        fn = getattr(module, attr)
        if not attr.startswith("test_") or not callable(fn):
            continue
        t0 = time.ticks_ms()
        try:
            fn()
            ok, detail = True, ""
        except Exception as exc:  # report every failure, not just the first
            buf = io.StringIO()
            sys.print_exception(exc, buf)
            ok, detail = False, buf.getvalue()
            failed += 1
        ms = time.ticks_diff(time.ticks_ms(), t0)
        print("RESULT " + json.dumps({"test": name + "::" + attr, "ok": ok, "ms": ms, "detail": detail}))
print("IMPLEMENTATION " + json.dumps({"name": sys.implementation.name, "version": list(sys.implementation.version[:3])}))
if failed:
    raise AssertionError("%d MicroPython test(s) failed" % failed)
