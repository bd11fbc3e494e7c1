"""Alerts: the incident record (kind, time, state, officer, location, transitions) and its
evidence (why it fired: impact in g, tilt, stillness, heart rate), which is biometric data.

Both reads go through the purpose gate (backend/privacy/access.py) and are audited. The policy
implies safety_response for a supervisor (officer_self_access for an officer) reading the record
without a declared purpose; the evidence is served only when a purpose is declared and the policy
grants ``alert_evidence`` for it (a supervisor: during the officer's open incident)."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import uuid
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import AfterValidator, BaseModel, Field

from backend.exceptions import NotFound
from backend.incidents.hub import FellBehind
from backend.incidents.rules import OUTCOMES
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.api.routes.audit import labelled
from backend.api.routes.health import problems
from backend.privacy import access as gate
from backend.privacy import audit
from backend.privacy.engine import Facts, Incident

router = APIRouter(prefix=API, tags=["alerts"])
log = logging.getLogger("vigil.api")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(value: str) -> str:
    """Words a person typed: not blank, no control characters (PostgreSQL refuses NUL, and a
    change it refuses would hold up the alert store's writer)."""
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (only text, line breaks and tabs)")
    return value


def _plain(value: str) -> str:
    """An optional note: may be empty, never control characters."""
    return _text(value) if value.strip() else ""


class AcknowledgeIn(BaseModel):
    note: Annotated[str, Field(max_length=500), AfterValidator(_plain)] = ""


class ResolveIn(BaseModel):
    outcome: Literal[OUTCOMES]  # type: ignore[valid-type]
    note: Annotated[str, Field(max_length=500), AfterValidator(_plain)] = ""


class EscalateIn(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=500, description="why, in words every supervisor on duty and dispatch read"),
                      AfterValidator(_text)]


class NoteIn(BaseModel):
    text: Annotated[str, Field(min_length=1, max_length=2000, description="the note; notes are never edited (add another)"),
                    AfterValidator(_text)]


class ResponderIn(BaseModel):
    responder: Annotated[str, Field(min_length=1, max_length=120, description="who goes: a person, a unit, a call sign"),
                         AfterValidator(_text)]


RECORD, EVIDENCE = "alerts_incidents", "alert_evidence"
PurposeQuery = Query(None, description="declared purpose (or header X-Vigil-Purpose; one only); the evidence needs one")
PurposeHeader = Header(None, include_in_schema=False)


def _own(caller) -> int | None:
    """Officers see only their own alerts; everyone else the whole agency."""
    return caller.officer_id if caller.role == "officer" else None


def _withhold(alert: dict, reason: dict) -> dict:
    """The record without its evidence (the key is absent, so a page merging this into what the
    live feed told it keeps what it was shown), and why."""
    return {**{k: v for k, v in alert.items() if k != "explanation"}, "evidence_withheld": reason}


async def _gate_record(request: Request, caller, subject: str, facts: Facts, officer_id: int | None,
                       alert: str | None) -> tuple[str | None, str, object, object]:
    """(declared purpose, purpose used, decision, policy) for the record; refusals raised, audited."""
    declared = await gate.single_purpose(request, caller, RECORD, subject)
    policy, _ = await gate.current_policy(request)
    if caller.role == "officer" and caller.officer_id is None:
        decision = gate.Decision(False, "ownership.no_officer", "this account is not an officer's; there are no own alerts")
        raise await gate.refuse(request, caller, policy, declared or "", RECORD, decision, subject, None)
    used, decision = gate.judge(policy, caller, declared, RECORD, facts, officer_id=officer_id, alert=alert)
    if not decision.granted:
        raise await gate.refuse(request, caller, policy, used, RECORD, decision, subject, facts.target_agency_id)
    return declared, used, decision, policy


async def _evidence(request: Request, runtime, caller, policy, purpose: str, alert: gate.AlertFacts, now):
    facts = await gate.evidence_facts(runtime, policy, alert, now)
    return gate.judge(policy, caller, purpose, EVIDENCE, facts, officer_id=alert.officer_id, alert=str(alert.id),
                      start=alert.raised_at, end=alert.raised_at)[1]


def _subject(officer_id: int | None, alert: uuid.UUID) -> str:
    return f"officer:{officer_id}" if officer_id is not None else f"alert:{alert}"


@router.get("/alerts", summary="Alerts of the caller's agency, newest first (an officer: their own); evidence with a declared purpose",
            responses={503: {"description": "the database is down: alert history is unavailable (live alerts still flow)"}})
async def list_alerts(request: Request, runtime: RuntimeDep, caller: CallerDep, limit: int = Query(100, ge=1, le=1000),
                      open: bool = Query(False, description="only incidents not yet resolved"),
                      purpose: str | None = PurposeQuery, x_vigil_purpose: str | None = PurposeHeader) -> list[dict]:
    own = _own(caller)
    subject = f"officer:{own}" if own is not None else f"agency:{caller.agency_id}"
    facts = Facts(caller.agency_id) if own is not None else Facts()
    declared, used, decision, policy = await _gate_record(request, caller, subject, facts, own, None)
    try:
        rows = await runtime.alerts.list_alerts(caller.agency_id, limit, officer_id=own, open_only=open)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(503, "alert history is unavailable while the database is down; live alerts still flow on the WebSocket") from exc
    await gate.record(request, caller, policy, used, RECORD, decision, subject, caller.agency_id, alerts=len(rows))
    if not declared:
        why = {"rule": "purpose.required", "reason": "the evidence is biometric data: declare a purpose to read it"}
        return [_withhold(r, why) for r in rows]
    # Evidence, alert by alert; audited once per officer and answer (the alerts named).
    now = request.app.state.runtime.privacy.now()
    out, answers = [], {}
    for row in rows:
        facts = gate.AlertFacts(uuid.UUID(row["id"]), row["agency_id"], row["officer_id"], row["state"],
                                dt.datetime.fromisoformat(row["raised_at"]))
        ev = await _evidence(request, runtime, caller, policy, declared, facts, now)
        answers.setdefault((_subject(facts.officer_id, facts.id), ev.granted, ev.rule), (ev, []))[1].append(row["id"])
        out.append(row if ev.granted else _withhold(row, ev.refusal()))
    for (subject, _, _), (ev, ids) in answers.items():
        await gate.record(request, caller, policy, declared, EVIDENCE, ev, subject, caller.agency_id, alerts=ids)
    return out


@router.get("/alerts/{alert_id}", summary="One alert with every transition (who, when), its notes, responder and "
                                         "escalation, and who read the officer's evidence for it and why; its evidence with a "
                                         "declared purpose",
            responses={503: {"description": "the database is down: alert history is unavailable"}})
async def get_alert(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID,
                    purpose: str | None = PurposeQuery, x_vigil_purpose: str | None = PurposeHeader) -> dict:
    try:
        found = await gate.alert_facts(runtime, alert_id)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise HTTPException(503, "alert history is unavailable while the database is down") from exc
    if found is None or found.agency_id != caller.agency_id:
        raise await gate.refuse_not_found(request, caller, "alert", alert_id, found.agency_id if found else None, data_class=RECORD)
    subject = _subject(found.officer_id, alert_id)
    facts = Facts(found.agency_id)
    declared, used, decision, policy = await _gate_record(request, caller, subject, facts, found.officer_id, str(alert_id))
    alert = await runtime.alerts.get_alert(caller.agency_id, alert_id, _own(caller))
    await gate.record(request, caller, policy, used, RECORD, decision, subject, found.agency_id, alert=str(alert_id))
    alert["evidence_reads"] = await _evidence_reads(runtime, found)
    if not declared:
        return _withhold(alert, {"rule": "purpose.required", "reason": "the evidence is biometric data: declare a purpose to read it"})
    evidence = await _evidence(request, runtime, caller, policy, declared, found, request.app.state.runtime.privacy.now())
    await gate.record(request, caller, policy, declared, EVIDENCE, evidence, subject, found.agency_id, alert=str(alert_id))
    return alert if evidence.granted else _withhold(alert, evidence.refusal())


async def _evidence_reads(runtime, alert: gate.AlertFacts) -> list[dict] | None:
    """Who read the officer's body data for this incident (its evidence, vitals, raw windows), when, for
    what purpose and whether it was granted: from the audit log, part of the incident's record. None
    (not an empty list) while the log cannot be read."""
    try:
        async with runtime.engine.connect() as conn:
            entries = await audit.incident_entries(conn, str(alert.id), alert.agency_id, alert.raised_at, biometric_reads_only=True)
            rows = await labelled(conn, entries, alert.agency_id)
    except (sa.exc.SQLAlchemyError, OSError):
        return None
    return [{"seq": r["seq"], "at": r["at"], "actor": r["actor"], "actor_label": r["actor_label"], "purpose": r["purpose"],
             "outcome": r["outcome"], "data_class": r["details"].get("data_class"), "path": r["details"].get("path"),
             "rule": r["details"].get("rule")} for r in rows]


async def _not_found(request: Request, runtime, caller, alert_id: uuid.UUID) -> NotFound:
    try:
        found = await gate.alert_facts(runtime, alert_id)
    except (sa.exc.SQLAlchemyError, OSError):
        found = None
    return await gate.refuse_not_found(request, caller, "alert", alert_id, found.agency_id if found else None, data_class=RECORD)


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge: the officer's device is told help is coming",
             responses={409: {"description": "the alert is already acknowledged or resolved"}})
async def acknowledge(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID,
                      body: AcknowledgeIn | None = None) -> dict:
    try:
        incident = await runtime.alerts.acknowledge(alert_id, f"user:{caller.subject}", caller.agency_id, (body or AcknowledgeIn()).note)
    except NotFound:
        raise await _not_found(request, runtime, caller, alert_id) from None
    return incident.public()


@router.post("/alerts/{alert_id}/resolve", summary="Resolve with an outcome",
             responses={409: {"description": "the alert is already resolved"}})
async def resolve(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID, body: ResolveIn) -> dict:
    try:
        incident = await runtime.alerts.resolve(alert_id, f"user:{caller.subject}", caller.agency_id, body.outcome, body.note)
    except NotFound:
        raise await _not_found(request, runtime, caller, alert_id) from None
    return incident.public()


_OPEN_CHANGE = {404: {"description": "no such alert in the caller's agency (the refusal is audited)"},
                409: {"description": "the alert is already resolved"}}


@router.post("/alerts/{alert_id}/escalate", summary="Escalate an open incident by hand, with a reason: top of every supervisor's "
                                                  "queue, dispatch told (supervisors of its agency)",
             responses={**_OPEN_CHANGE, 409: {"description": "the alert is resolved, or already escalated and not acknowledged since"}})
async def escalate(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID, body: EscalateIn) -> dict:
    try:
        incident = await runtime.alerts.escalate(alert_id, f"user:{caller.subject}", caller.agency_id, body.reason)
    except NotFound:
        raise await _not_found(request, runtime, caller, alert_id) from None
    return incident.public()


@router.post("/alerts/{alert_id}/notes", summary="Add a note to an open incident (append-only: author and time recorded)",
             responses=_OPEN_CHANGE)
async def add_note(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID, body: NoteIn) -> dict:
    try:
        incident = await runtime.alerts.add_note(alert_id, f"user:{caller.subject}", caller.agency_id, body.text)
    except NotFound:
        raise await _not_found(request, runtime, caller, alert_id) from None
    return incident.public()


@router.put("/alerts/{alert_id}/responder", summary="Name who goes to the officer (set or change; every change recorded)",
            responses={**_OPEN_CHANGE, 409: {"description": "the alert is resolved, or this responder is already assigned"}})
async def assign_responder(request: Request, runtime: RuntimeDep, caller: CallerDep, alert_id: uuid.UUID, body: ResponderIn) -> dict:
    try:
        incident = await runtime.alerts.assign_responder(alert_id, f"user:{caller.subject}", caller.agency_id, body.responder)
    except NotFound:
        raise await _not_found(request, runtime, caller, alert_id) from None
    return incident.public()


async def deliver(runtime, event: dict, subject: str) -> None:
    """After an event went out on a supervisor's connection: a raised alert is now delivered."""
    if event["type"] == "alert" and event["data"].get("state") == "raised":
        await runtime.alerts.mark_delivered(uuid.UUID(event["data"]["id"]), f"user:{subject}")


# The live feed is a supervisor's safety response: what it may show of an alert's evidence is
# decided by the same gate and audited like a read of GET /alerts/{id}?purpose=safety_response.
LIVE_PURPOSE = "safety_response"
_PENDING = {"rule": "live.evidence_pending", "reason": "the evidence follows once the purpose gate granted it"}


async def _live_evidence(runtime, caller, data: dict) -> tuple[bool, dict | None]:
    """(granted, refusal) for this caller seeing this alert's evidence on the live feed; the
    answer is audited (a grant only once written: no evidence goes out unaudited)."""
    privacy = runtime.privacy
    now = privacy.now()
    policy = (await privacy.policies.current(now)).policy
    alert = gate.AlertFacts(uuid.UUID(data["id"]), data["agency_id"], data.get("officer_id"), data["state"],
                            dt.datetime.fromisoformat(data["raised_at"]))
    facts = await gate.evidence_facts(runtime, policy, alert, now)
    live = runtime.alerts.find(alert.id)
    if live is not None and live.is_open and not any(i.alert_id == data["id"] for i in facts.open_incidents):
        # pushed the moment it was raised: its row may not be stored yet, the lifecycle knows it is open
        lead = dt.timedelta(seconds=policy.incident_lead_s)
        facts = Facts(facts.target_agency_id, (*facts.open_incidents, Incident(data["id"], alert.raised_at - lead, now)))
    _, decision = gate.judge(policy, caller, LIVE_PURPOSE, EVIDENCE, facts, officer_id=alert.officer_id,
                             alert=data["id"], start=alert.raised_at, end=alert.raised_at)
    details = {"data_class": EVIDENCE, "rule": decision.rule, "reason": decision.reason, "role": caller.role,
               "path": "/api/v1/ws", "policy": policy.version, "policy_sha256": policy.sha256,
               "incidents": list(decision.incidents), "caller_agency": caller.agency_id, "alert": data["id"]}
    await audit.record(runtime.engine, f"user:{caller.subject}", "access", _subject(alert.officer_id, alert.id), LIVE_PURPOSE,
                       "granted" if decision.granted else "refused", details, agency_id=alert.agency_id)
    return decision.granted, None if decision.granted else decision.refusal()


# The page's Live badge follows these, not the open socket: a feed that stopped sending is shown as stopped.
HEARTBEAT = "heartbeat"
# Close code for a subscriber the hub cut off for falling behind (RFC 6455 "try again later"):
# the page reconnects and resumes from its last event id.
FELL_BEHIND = 1013


def _heartbeat(runtime, last_id: int | None) -> dict:
    """What the page shows beside its Live badge: the server's time, the last event id sent on
    this connection and what keeps the backend from paging reliably (health's problems)."""
    return {"type": HEARTBEAT, "data": {"time": dt.datetime.now(dt.timezone.utc).isoformat(), "last_event_id": last_id,
                                       "problems": problems(runtime)}}


@router.websocket("/ws")
async def live(websocket: WebSocket, caller: CallerDep, last_event_id: int | None = None) -> None:
    """Live alert and officer-status events of the caller's agency (?ticket=, resume with
    ?last_event_id=). An alert goes out at once without its evidence; the evidence follows as an
    ``alert_evidence`` event once the purpose gate granted it and the grant was audited.

    The first message is ``hello`` (the heartbeat interval; whether the resume is complete, else
    the page reloads the lists; the id the feed starts after, to resume from if nothing follows); then a ``heartbeat`` at least every ``live_heartbeat_s``, sent by
    the loop that sends the events, so it stops when they stop. A connection that falls behind
    is closed with code 1013 and the reason."""
    await websocket.accept()
    runtime = websocket.app.state.runtime
    every = runtime.settings.live_heartbeat_s
    sub, backlog = runtime.hub.subscribe(caller.agency_id, last_event_id)
    start_id = runtime.hub.last_id(caller.agency_id) if last_event_id is None else last_event_id
    to_judge: asyncio.Queue[dict] = asyncio.Queue()
    unjudged_logged = False

    judged: dict[str, str] = {}  # alert id -> the evidence last judged on this connection
    sent_id = start_id

    async def send(event: dict) -> None:
        nonlocal sent_id
        if event["type"] == "alert" and "explanation" in event["data"]:
            data = event["data"]
            await websocket.send_json({**event, "data": _withhold(data, _PENDING)})
            text = json.dumps(data["explanation"], sort_keys=True, default=str)
            if judged.get(data["id"]) != text:  # new evidence (raised, joined, upgraded): judge and audit it once
                judged[data["id"]] = text
                to_judge.put_nowait(data)
        else:
            await websocket.send_json(event)
        sent_id = event["id"]
        await deliver(runtime, event, caller.subject)

    async def push() -> None:
        complete = last_event_id is None or runtime.hub.complete_since(caller.agency_id, last_event_id)
        await websocket.send_json({"type": "hello", "data": {"heartbeat_s": every, "resumed": last_event_id is not None,
                                                             "complete": complete, "last_event_id": start_id}})
        for event in backlog:
            await send(event)
        await websocket.send_json(_heartbeat(runtime, sent_id))
        beat = asyncio.get_running_loop().time()
        while True:
            wait = max(0.0, beat + every - asyncio.get_running_loop().time())
            try:
                event = await asyncio.wait_for(sub.next(), wait)
            except asyncio.TimeoutError:
                event = None
            if event is not None:
                await send(event)
            if asyncio.get_running_loop().time() >= beat + every:
                await websocket.send_json(_heartbeat(runtime, sent_id))
                beat = asyncio.get_running_loop().time()

    async def judge_evidence() -> None:
        nonlocal unjudged_logged
        while True:
            data = await to_judge.get()
            try:
                granted, refusal = await _live_evidence(runtime, caller, data)
            except (sa.exc.SQLAlchemyError, OSError) as exc:  # no audit, no evidence: the alert itself went out
                if not unjudged_logged:
                    log.error("live evidence withheld from %s: the gate or the audit log is unavailable (%s)",
                              caller.subject, type(exc).__name__)
                    unjudged_logged = True
                continue
            unjudged_logged = False
            payload = {"id": data["id"], "explanation": data["explanation"]} if granted else {"id": data["id"], "evidence_withheld": refusal}
            await websocket.send_json({"type": "alert_evidence", "data": payload})

    async def watch_for_close() -> None:
        # The client only reads; receiving is how we learn it went away.
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    try:
        tasks = {asyncio.create_task(push()), asyncio.create_task(judge_evidence()), asyncio.create_task(watch_for_close())}
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if not isinstance(task.exception(), (WebSocketDisconnect, type(None))):
                raise task.exception()
    except WebSocketDisconnect:
        pass
    except FellBehind as exc:
        # reason: at most 123 bytes in a close frame
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(FELL_BEHIND, str(exc).encode()[:123].decode(errors="ignore"))
    finally:
        sub.close()
