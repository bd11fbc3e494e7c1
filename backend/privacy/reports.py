"""Reports for oversight: the transparency report (alerts, false alarms, accesses, refusals,
retention, policy) with the fairness breakdown by consented cohorts, and aggregates of derived
features for model evaluation.

Small-group suppression is one rule (``Policy.suppressed``: fewer than ``min_group_officers``
officers), applied to every figure about officers here and, through ``vigil_group_suppressed``
(migration 0007, the same threshold written from the policy), in the reporting views: a
suppressed group keeps its labels and shows no figure. Every aggregate covers whole time buckets
(``bucket_hours``, UTC): a span is widened to them, and vitals aggregates are computed per bucket,
so a narrow or shifted window cannot single out the officers inside it.

No function here returns a row about one officer: there is no bulk export of biometric data."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.privacy.loader import Policy

# Detectors whose alerts are raised by a model or a device rule, not by a person.
AUTOMATIC_KINDS = ("man_down", "device_alarm", "fall", "extreme_heart_rate", "physiological_strain")
# A manual SOS with no automatic alert this close in time counts as a miss of the detectors.
MISS_WINDOW_S = 300


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def whole_buckets(policy: Policy, since: dt.datetime, until: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[since, until) widened to whole buckets of ``policy.bucket_hours`` (at least one)."""
    size = dt.timedelta(hours=policy.bucket_hours)
    lo = _EPOCH + ((since - _EPOCH) // size) * size
    hi = _EPOCH - ((_EPOCH - until) // size) * size  # ceiling
    return lo, max(hi, lo + size)


def _suppress(group: dict, officers: int, policy: Policy, *figures: str) -> dict:
    if policy.suppressed(officers):
        return {**{k: v for k, v in group.items() if k not in figures}, **{f: None for f in figures},
                "officers": None, "suppressed": True}
    return {**group, "officers": officers, "suppressed": False}


def _scope(agency_id: str | None, column: str = "agency_id") -> tuple[str, dict]:
    return (f" and {column} = :agency", {"agency": agency_id}) if agency_id else ("", {})


async def transparency_report(engine: AsyncEngine, policy: Policy, *, agency_id: str | None = None,
                              since: dt.datetime | None = None, until: dt.datetime | None = None,
                              pending_policies: list[dict] | None = None) -> dict:
    until = until or dt.datetime.now(dt.timezone.utc)
    since, until = whole_buckets(policy, since or until - dt.timedelta(days=365), until)
    where, params = _scope(agency_id, "a.agency_id")
    params.update({"since": since, "until": until, "auto": list(AUTOMATIC_KINDS), "miss_s": MISS_WINDOW_S})
    min_group = policy.min_group_officers
    async with engine.connect() as conn:
        by_type = (await conn.execute(sa.text(
            "select a.kind, coalesce(a.outcome, 'open') as outcome, count(*) as alerts, count(distinct a.officer_id) as officers "
            f"from alerts a where a.raised_at >= :since and a.raised_at < :until{where} group by 1, 2 order by 1, 2"), params)).mappings().all()
        per_detector = (await conn.execute(sa.text(
            "select a.kind, count(*) filter (where a.outcome is not null) as resolved, "
            "count(*) filter (where a.outcome = 'false_alarm') as false_alarms, count(distinct a.officer_id) as officers "
            f"from alerts a where a.raised_at >= :since and a.raised_at < :until{where} group by 1 order by 1"), params)).mappings().all()
        awhere, aparams = _scope(agency_id)
        aparams.update({"since": since, "until": until})
        accesses = (await conn.execute(sa.text(
            "select purpose, outcome, details->>'data_class' as data_class, count(*) as n from audit_log "
            f"where action = 'access' and at >= :since and at < :until{awhere} group by 1, 2, 3 order by 1, 2, 3"), aparams)).mappings().all()
        refusals = (await conn.execute(sa.text(
            "select details->>'rule' as rule, purpose, count(*) as n from audit_log "
            f"where action = 'access' and outcome = 'refused' and at >= :since and at < :until{awhere} group by 1, 2 order by 3 desc"), aparams)).mappings().all()
        deletions = (await conn.execute(sa.text(
            "select subject, count(*) as runs, coalesce(sum((details->>'rows_deleted')::bigint), 0) as rows_deleted from audit_log "
            "where action = 'retention.delete' and at >= :since and at < :until group by 1 order by 1"), {"since": since, "until": until})).mappings().all()
        fairness = await _fairness(conn, params, where, policy)
    return {
        "generated_at": until.isoformat(), "period": {"since": since.isoformat(), "until": until.isoformat()},
        "agency_id": agency_id, "policy": policy.summary(), "pending_policies": pending_policies or [],
        "min_group_officers": min_group,
        "alerts_by_type_and_outcome": [_suppress(dict(r), r["officers"], policy, "alerts") for r in by_type],
        "false_alarm_rate_by_detector": [_suppress(
            {"kind": r["kind"], "resolved": r["resolved"], "false_alarms": r["false_alarms"],
             "false_alarm_rate": round(r["false_alarms"] / r["resolved"], 4) if r["resolved"] else None},
            r["officers"], policy, "resolved", "false_alarms", "false_alarm_rate") for r in per_detector],
        "accesses_by_purpose": [dict(r) for r in accesses],
        "refusals": [dict(r) for r in refusals],
        "retention_deletions": [{"data_class": r["subject"].removeprefix("data_class:"), "runs": r["runs"], "rows_deleted": int(r["rows_deleted"])} for r in deletions],
        "fairness": fairness,
    }


async def _fairness(conn, params: dict, where: str, policy: Policy) -> list[dict]:
    """False-alarm and missed-alert rates per detector and consented cohort. A cohort value
    with fewer than ``min_group`` consenting officers is suppressed, as is a cohort × detector
    cell whose alerts come from fewer than ``min_group`` officers."""
    cohort_sql = ("select c.attribute, c.value, c.officer_id from officer_cohorts c "
                  "where c.withdrawn_at is null and c.consented_at <= :until")
    sizes = (await conn.execute(sa.text(
        f"select attribute, value, count(distinct officer_id) as officers from ({cohort_sql}) c group by 1, 2 order by 1, 2"), params)).mappings().all()
    cells = (await conn.execute(sa.text(
        f"select c.attribute, c.value, a.kind, count(*) filter (where a.outcome is not null) as resolved, "
        "count(*) filter (where a.outcome = 'false_alarm') as false_alarms, count(distinct a.officer_id) as officers "
        f"from ({cohort_sql}) c join alerts a on a.officer_id = c.officer_id "
        f"where a.raised_at >= :since and a.raised_at < :until{where} group by 1, 2, 3 order by 1, 2, 3"), params)).mappings().all()
    # Real emergencies that began with a manual SOS and no automatic alert nearby: detector misses.
    misses = (await conn.execute(sa.text(
        f"select c.attribute, c.value, count(*) as emergencies, "
        "count(*) filter (where a.kind = 'sos' and not exists (select 1 from alerts b where b.officer_id = a.officer_id "
        "  and b.kind = any(:auto) and abs(extract(epoch from b.raised_at - a.raised_at)) <= :miss_s)) as missed, "
        "count(distinct a.officer_id) as officers "
        f"from ({cohort_sql}) c join alerts a on a.officer_id = c.officer_id "
        f"where a.outcome = 'real_emergency' and a.raised_at >= :since and a.raised_at < :until{where} group by 1, 2"), params)).mappings().all()
    miss_by = {(m["attribute"], m["value"]): m for m in misses}
    cells_by: dict[tuple[str, str], list] = {}
    for c in cells:
        cells_by.setdefault((c["attribute"], c["value"]), []).append(c)
    out = []
    for s in sizes:
        key = (s["attribute"], s["value"])
        group = {"attribute": s["attribute"], "value": s["value"]}
        if policy.suppressed(s["officers"]):
            out.append({**group, "officers": None, "suppressed": True, "detectors": [], "missed_alert_rate": None})
            continue
        detectors = []
        for c in cells_by.get(key, []):
            d = {"kind": c["kind"], "resolved": c["resolved"], "false_alarms": c["false_alarms"],
                 "false_alarm_rate": round(c["false_alarms"] / c["resolved"], 4) if c["resolved"] else None}
            detectors.append(_suppress(d, c["officers"], policy, "resolved", "false_alarms", "false_alarm_rate"))
        m = miss_by.get(key)
        missed = None
        if m and not policy.suppressed(m["officers"]) and m["emergencies"]:
            missed = round(m["missed"] / m["emergencies"], 4)
        out.append({**group, "officers": s["officers"], "suppressed": False, "detectors": detectors,
                    "missed_alert_rate": missed, "missed_alert_suppressed": bool(m) and policy.suppressed(m["officers"])})
    return out


async def vitals_aggregates(engine: AsyncEngine, policy: Policy, agency_id: str, since: dt.datetime, until: dt.datetime) -> list[dict]:
    """Heart rate by activity across an agency's officers, for model evaluation, per whole time
    bucket: count, mean, quartiles and mean signal quality; groups of fewer than
    ``min_group_officers`` suppressed. The span is widened to whole buckets."""
    since, until = whole_buckets(policy, since, until)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text(
            "select date_bin(make_interval(hours => :bucket_h), f.time, :epoch) as bucket, "
            "coalesce(f.activity, 'unknown') as activity, count(distinct f.officer_id) as officers, count(*) as samples, "
            "avg(f.heart_rate) as hr_mean, percentile_cont(array[0.25, 0.5, 0.75]) within group (order by f.heart_rate) as hr_quartiles, "
            "avg(f.hr_quality) as quality_mean "
            "from features f join officers o on o.id = f.officer_id "
            "where o.agency_id = :agency and f.time >= :since and f.time < :until and f.heart_rate is not null "
            "group by 1, 2 order by 1, 2"),
            {"agency": agency_id, "since": since, "until": until, "bucket_h": int(policy.bucket_hours), "epoch": _EPOCH})).mappings().all()
    out = []
    for r in rows:
        group = {"bucket_start": r["bucket"].isoformat(), "activity": r["activity"], "samples": r["samples"],
                 "hr_mean": round(float(r["hr_mean"]), 2), "hr_quartiles": [round(float(q), 2) for q in r["hr_quartiles"]],
                 "quality_mean": round(float(r["quality_mean"]), 3) if r["quality_mean"] is not None else None}
        out.append(_suppress(group, r["officers"], policy, "samples", "hr_mean", "hr_quartiles", "quality_mean"))
    return out
