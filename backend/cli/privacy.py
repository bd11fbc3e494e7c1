"""Privacy subcommands of ``vigil``: audit verify/anchor, report transparency, policy
show/propose/status, retention run. Database from VIGIL_DATABASE_URL (as the backend)."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser("audit", help="the tamper-evident audit log")
    asub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = asub.add_parser("verify", help="check the hash chain; name every edited, deleted or reordered entry")
    verify.add_argument("--anchor", type=Path, help="anchor file written by 'vigil audit anchor' (catches truncation)")
    verify.add_argument("--json", action="store_true", help="machine-readable result")
    verify.set_defaults(func=_audit_verify)
    anchor = asub.add_parser("anchor", help="write the chain's head (seq, hash) to a file kept outside the database")
    anchor.add_argument("file", type=Path)
    anchor.set_defaults(func=_audit_anchor)

    report = subparsers.add_parser("report", help="oversight reports")
    rsub = report.add_subparsers(dest="report_command", metavar="COMMAND", required=True)
    tr = rsub.add_parser("transparency", help="alerts, false alarms, accesses, refusals, retention, policy, fairness")
    tr.add_argument("--agency", help="one agency (default: all)")
    tr.add_argument("--days", type=float, default=365.0, help="period ending now (default 365 days)")
    tr.add_argument("--json", action="store_true", help="JSON instead of text")
    tr.set_defaults(func=_report_transparency)

    policy = subparsers.add_parser("policy", help="the data-use policy")
    psub = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    show = psub.add_parser("show", help="the policy in force and pending versions")
    show.set_defaults(func=_policy_show)
    check = psub.add_parser("check", help="validate a policy document without storing it")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_policy_check)
    propose = psub.add_parser("propose", help="store a new policy; it takes effect after the notice period (audited)")
    propose.add_argument("file", type=Path)
    propose.add_argument("--by", required=True, help="who proposes it (recorded in the audit log)")
    propose.add_argument("--notice-days", type=float, help="a longer notice than the policy in force requires")
    propose.set_defaults(func=_policy_propose)

    ret = subparsers.add_parser("retention", help="data retention")
    tsub = ret.add_subparsers(dest="retention_command", metavar="COMMAND", required=True)
    run = tsub.add_parser("run", help="one retention pass now (the backend also runs it on its schedule)")
    run.set_defaults(func=_retention_run)


def _engine():
    from backend.db import engine as db
    from backend.app.config import BackendSettings

    return db.create_engine(BackendSettings())


def _run(coro_fn) -> int:
    async def main():
        engine = _engine()
        try:
            return await coro_fn(engine)
        finally:
            await engine.dispose()
    return asyncio.run(main())


def _audit_verify(args: argparse.Namespace) -> int:
    from backend.privacy import audit

    async def go(engine):
        result = await audit.verify(engine, args.anchor)
        if args.json:
            print(json.dumps({"ok": result.ok, "entries": result.entries, "head_seq": result.head_seq,
                              "head_hash": result.head_hash, "problems": result.problems}, indent=2))
        elif result.ok:
            print(f"audit chain OK: {result.entries} entries, head {result.head_seq} {result.head_hash}")
        else:
            print(f"audit chain BROKEN: {len(result.problems)} problem(s) in {result.entries} entries", file=sys.stderr)
            for p in result.problems:
                print(f"  {p}", file=sys.stderr)
        return 0 if result.ok else 1
    return _run(go)


def _audit_anchor(args: argparse.Namespace) -> int:
    from backend.privacy import audit

    async def go(engine):
        head = await audit.write_anchor(engine, args.file)
        print(f"anchored entry {head['seq']} {head['hash']} in {args.file}")
        return 0
    return _run(go)


def _report_transparency(args: argparse.Namespace) -> int:
    import datetime as dt

    from backend.privacy import reports
    from backend.privacy import store

    async def go(engine):
        now = dt.datetime.now(dt.timezone.utc)
        policies = store.PolicyStore(engine)
        current = await policies.current(now)
        pending = [p.public() for p in await policies.pending(now)]
        report = await reports.transparency_report(engine, current.policy, agency_id=args.agency,
                                                   since=now - dt.timedelta(days=args.days), until=now, pending_policies=pending)
        print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
        return 0
    return _run(go)


def format_report(r: dict) -> str:
    lines = [f"Vigil transparency report {r['period']['since'][:10]} .. {r['period']['until'][:10]}"
             f" ({'agency ' + r['agency_id'] if r['agency_id'] else 'all agencies'})",
             f"policy {r['policy']['version']} sha256 {r['policy']['sha256']}"]
    for p in r["pending_policies"]:
        lines.append(f"  pending: {p['version']} effective {p['effective_at']}")
    lines.append("\nalerts by type and outcome:")
    lines += [f"  {a['kind']:<22} {a['outcome']:<22} {'suppressed' if a['suppressed'] else a['alerts']}"
              for a in r["alerts_by_type_and_outcome"]] or ["  none"]
    lines.append("\nfalse-alarm rate by detector:")
    lines += [f"  {d['kind']:<22} " + ("suppressed" if d["suppressed"] else f"{d['false_alarms']}/{d['resolved']} = {d['false_alarm_rate']}")
              for d in r["false_alarm_rate_by_detector"]] or ["  none"]
    lines.append("\naccesses by purpose:")
    lines += [f"  {a['purpose'] or '(none)':<28} {a['data_class']:<18} {a['outcome']:<8} {a['n']}" for a in r["accesses_by_purpose"]] or ["  none"]
    lines.append("\nrefusals by rule:")
    lines += [f"  {x['rule']:<34} {x['purpose'] or '(none)':<26} {x['n']}" for x in r["refusals"]] or ["  none"]
    lines.append("\nretention deletions:")
    lines += [f"  {d['data_class']:<18} {d['rows_deleted']} rows in {d['runs']} runs" for d in r["retention_deletions"]] or ["  none"]
    lines.append(f"\nfairness by consented cohort (groups < {r['min_group_officers']} officers suppressed):")
    for c in r["fairness"]:
        if c["suppressed"]:
            lines.append(f"  {c['attribute']}={c['value']}: suppressed")
            continue
        lines.append(f"  {c['attribute']}={c['value']}: {c['officers']} officers, missed-alert rate {c['missed_alert_rate']}")
        lines += [f"    {d['kind']:<22} false-alarm rate {'suppressed' if d['suppressed'] else d['false_alarm_rate']}" for d in c["detectors"]]
    if not r["fairness"]:
        lines.append("  no consented cohorts recorded")
    return "\n".join(lines)


def _policy_show(args: argparse.Namespace) -> int:
    import datetime as dt

    from backend.privacy import store

    async def go(engine):
        now = dt.datetime.now(dt.timezone.utc)
        policies = store.PolicyStore(engine)
        print(json.dumps({"in_force": (await policies.current(now)).public(),
                          "pending": [p.public() for p in await policies.pending(now)]}, indent=2))
        return 0
    return _run(go)


def _policy_check(args: argparse.Namespace) -> int:
    from backend.privacy.loader import PolicyError, parse_policy

    try:
        p = parse_policy(args.file.read_text())
    except PolicyError as exc:
        print(f"policy refused: {exc}", file=sys.stderr)
        return 1
    print(f"policy {p.version} valid, sha256 {p.sha256}")
    return 0


def _policy_propose(args: argparse.Namespace) -> int:
    from backend.privacy import store
    from backend.privacy.loader import PolicyError

    async def go(engine):
        try:
            stored = await store.propose(engine, args.file.read_text(), f"cli:{args.by}", notice_days=args.notice_days)
        except PolicyError as exc:
            print(f"policy refused: {exc}", file=sys.stderr)
            return 1
        print(f"policy {stored.policy.version} ({stored.policy.sha256}) takes effect {stored.effective_at.isoformat()}")
        return 0
    return _run(go)


def _retention_run(args: argparse.Namespace) -> int:
    from backend.app.config import BackendSettings
    from backend.privacy.service import PrivacyService

    async def go(engine):
        report = await PrivacyService(engine, BackendSettings()).run_retention_once()
        print(json.dumps(report, indent=2))
        return 0
    return _run(go)
