"""The decision: may this caller use this data class for this purpose, about this officer,
over this time span? Pure: the facts (the officer's agency, their incidents) come in as
arguments, so the same function serves the API dependency, the tests and the documentation."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from backend.privacy.loader import Policy, Rule


@dataclass(frozen=True, slots=True)
class AccessRequest:
    role: str
    agency_id: str
    caller_officer_id: int | None
    purpose: str | None
    data_class: str
    aggregate: bool = False                 # the route returns aggregates only
    target_officer_id: int | None = None    # whose data; None for agency-wide reads
    target_alert: str | None = None         # the alert whose evidence is read (its officer may be unknown)
    start: dt.datetime | None = None
    end: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    alert_id: str
    start: dt.datetime  # raised_at - lead
    end: dt.datetime    # now while open


@dataclass(frozen=True, slots=True)
class Facts:
    """What the database says about the target: its agency and open incidents."""
    target_agency_id: str | None = None
    open_incidents: tuple[Incident, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    rule: str
    reason: str
    start: dt.datetime | None = None  # the span the grant covers (clamped for incidents)
    end: dt.datetime | None = None
    incidents: tuple[str, ...] = field(default=())

    def refusal(self) -> dict:
        return {"rule": self.rule, "reason": self.reason}


def _refuse(rule: str, reason: str) -> Decision:
    return Decision(False, rule, reason)


def decide(policy: Policy, req: AccessRequest, facts: Facts) -> Decision:
    """The decision on one read. A read without a declared purpose takes the purpose the policy
    implies for its role and data class (never for biometric data), or is refused."""
    if not req.purpose and (implied := policy.implied_purpose(req.role, req.data_class)):
        return decide(policy, replace(req, purpose=implied), facts)
    if not req.purpose:
        return _refuse("purpose.required", "every read of officer data must declare a purpose (?purpose= or X-Vigil-Purpose)")
    if req.purpose in policy.refused_purposes and req.data_class in policy.refused_data_classes:
        return _refuse("always_refused." + req.purpose,
                       f"{req.data_class} may never be used for {req.purpose}: officer data serves safety only")
    if req.purpose not in policy.purposes:
        return _refuse("purpose.unknown", f"{req.purpose!r} is not a purpose of policy {policy.version}; known: {', '.join(policy.purposes)}")
    if req.data_class not in policy.data_classes:
        return _refuse("data_class.unknown", f"{req.data_class!r} is not a data class of policy {policy.version}")
    candidates = [r for r in policy.rules if req.role in r.roles and req.purpose in r.purposes and req.data_class in r.data_classes]
    if not candidates:
        return _refuse("no_rule", f"no rule lets a {req.role} use {req.data_class} for {req.purpose}")
    refusal = None
    for rule in candidates:
        decision = _check_scope(policy, rule, req, facts)
        if decision.granted:
            return decision
        refusal = refusal or decision
    return refusal


def _same_agency(req: AccessRequest, facts: Facts) -> bool:
    if req.target_officer_id is None and req.target_alert is None:
        return True  # agency-wide: the caller's own agency by construction
    return facts.target_agency_id == req.agency_id


def _check_scope(policy: Policy, rule: Rule, req: AccessRequest, facts: Facts) -> Decision:
    if rule.scope == "aggregate":
        if not req.aggregate:
            return _refuse(rule.id, f"{req.role}s may use {req.data_class} only as aggregates of >= {policy.min_group_officers} officers")
        return Decision(True, rule.id, "aggregate", req.start, req.end)
    if rule.scope == "self":
        if req.target_officer_id is None or req.caller_officer_id is None or req.target_officer_id != req.caller_officer_id:
            return _refuse(rule.id, "officers may read their own data only")
        return Decision(True, rule.id, "own data", req.start, req.end)
    if not _same_agency(req, facts):
        return _refuse(rule.id, "the officer is not in the caller's agency")
    if rule.scope == "agency":
        return Decision(True, rule.id, "same agency", req.start, req.end)
    # open_incident: only while an incident is open, only inside its span
    if req.target_officer_id is None and req.target_alert is None:
        return _refuse(rule.id, "vitals are read for one officer with an open incident at a time")
    if not facts.open_incidents:
        return _refuse(rule.id, "the officer has no open incident; vitals are visible to supervisors only during one")
    for inc in facts.open_incidents:
        start = req.start or inc.start
        end = req.end or inc.end
        if inc.start <= start and end <= inc.end and start <= end:
            return Decision(True, rule.id, f"open incident {inc.alert_id}", start, end, (inc.alert_id,))
    spans = ", ".join(f"{i.start.isoformat()}..{i.end.isoformat()}" for i in facts.open_incidents)
    return _refuse(rule.id, f"the requested span lies outside the open incident's span ({spans})")
