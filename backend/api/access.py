"""Who may call which route: the one table. Every route of the API is listed here with the roles
allowed to call it; ``authorize`` (a router-level dependency) enforces it, and a route missing
from the table is refused to everyone (fail closed).

``own`` names a path parameter that a caller of the listed roles may only use for themselves:
an officer reads only their own officer record, a gateway only its own device list. Agency
isolation is the other half: every query is filtered by the caller's agency (an object of
another agency answers 404, as if it did not exist)."""
from __future__ import annotations

import re
from dataclasses import dataclass

PUBLIC = frozenset({"anonymous"})
PEOPLE = frozenset({"officer", "supervisor", "fleet_admin", "auditor"})


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[str]
    own: tuple[str, str] | None = None  # (role, path parameter) that must be the caller's own id
    # The route also passes the privacy policy (backend/privacy/access.py: purpose x role x data
    # class x ownership), which may refuse a role let through here, with 403 and an audit entry.
    purpose_checked: bool = False


def _r(*roles: str, own: tuple[str, str] | None = None) -> Rule:
    return Rule(frozenset(roles), own)


API = "/api/v1"
POLICY_GATED = Rule(PEOPLE, purpose_checked=True)
ACCESS: dict[tuple[str, str], Rule] = {
    ("GET", f"{API}/health"): Rule(PUBLIC),
    ("GET", "/metrics"): Rule(PUBLIC),  # counters only, no personal data; scraped without a token
    ("POST", f"{API}/auth/token"): Rule(PUBLIC),
    ("POST", f"{API}/auth/enrol"): Rule(PUBLIC),  # an officer's own step; the one-time code is the credential
    ("GET", f"{API}/auth/me"): Rule(PEOPLE),
    ("POST", f"{API}/auth/logout"): Rule(PEOPLE),
    # who may create whom: backend/identity/auth.py MAY_CREATE (officers only by their own enrolment)
    ("POST", f"{API}/users"): _r("fleet_admin"),
    ("GET", f"{API}/users"): _r("fleet_admin"),
    ("POST", f"{API}/users/enrolments"): _r("fleet_admin"),
    ("POST", f"{API}/users/{{user_id}}/disable"): _r("fleet_admin"),
    ("POST", f"{API}/officers"): _r("fleet_admin"),
    ("GET", f"{API}/officers"): _r("fleet_admin", "supervisor", "officer"),
    ("GET", f"{API}/officers/{{officer_id}}"): _r("fleet_admin", "supervisor", "officer", own=("officer", "officer_id")),
    ("POST", f"{API}/devices"): _r("fleet_admin"),
    ("GET", f"{API}/devices"): _r("fleet_admin", "supervisor"),
    ("GET", f"{API}/devices/firmware"): _r("fleet_admin"),
    ("GET", f"{API}/devices/{{device_id}}"): _r("fleet_admin", "supervisor"),
    ("PUT", f"{API}/devices/{{device_id}}/assignment"): _r("fleet_admin"),
    ("DELETE", f"{API}/devices/{{device_id}}/assignment"): _r("fleet_admin"),
    ("POST", f"{API}/devices/{{device_id}}/retire"): _r("fleet_admin"),
    ("POST", f"{API}/gateways"): _r("fleet_admin"),
    ("GET", f"{API}/gateways"): _r("fleet_admin"),
    ("GET", f"{API}/gateways/{{gateway_id}}/devices"): _r("fleet_admin", "gateway", own=("gateway", "gateway_id")),
    ("PUT", f"{API}/gateways/{{gateway_id}}/devices"): _r("fleet_admin"),
    ("POST", f"{API}/gateways/{{gateway_id}}/retire"): _r("fleet_admin"),
    # alerts: the policy decides the record (a purpose implied for supervisors and officers) and,
    # with a declared purpose, the evidence (backend/api/routes/alerts.py)
    ("GET", f"{API}/alerts"): Rule(frozenset({"supervisor", "auditor", "officer"}), purpose_checked=True),
    ("GET", f"{API}/alerts/{{alert_id}}"): Rule(frozenset({"supervisor", "auditor", "officer"}), purpose_checked=True),
    ("POST", f"{API}/alerts/{{alert_id}}/acknowledge"): _r("supervisor"),
    ("POST", f"{API}/alerts/{{alert_id}}/resolve"): _r("supervisor"),
    ("POST", f"{API}/alerts/{{alert_id}}/escalate"): _r("supervisor"),
    ("POST", f"{API}/alerts/{{alert_id}}/notes"): _r("supervisor"),
    ("PUT", f"{API}/alerts/{{alert_id}}/responder"): _r("supervisor"),
    # messages felt on officers' wearables, and where officers are (backend/api/routes/messages.py)
    ("GET", f"{API}/messages/kinds"): _r("supervisor"),
    ("POST", f"{API}/officers/{{officer_id}}/messages"): _r("supervisor"),
    ("GET", f"{API}/officers/{{officer_id}}/messages"): _r("supervisor"),
    ("POST", f"{API}/alerts/{{alert_id}}/messages"): _r("supervisor"),
    ("GET", f"{API}/alerts/{{alert_id}}/messages"): _r("supervisor"),
    ("GET", f"{API}/live/positions"): _r("supervisor"),
    ("GET", f"{API}/live/officers"): _r("supervisor"),
    ("POST", f"{API}/live/ticket"): _r("supervisor"),  # opens the WebSocket below (no token in its URL)
    ("GET", f"{API}/meta/labels"): Rule(PEOPLE),  # every page's words for priorities, states, outcomes
    ("GET", f"{API}/events"): _r("supervisor"),
    ("WEBSOCKET", f"{API}/ws"): _r("supervisor"),
    # privacy (issue 7): the coarse gate lets every person through; require_access
    # (backend/privacy/access.py) then decides purpose x role x data class x ownership against
    # the policy and audits the grant or the refusal, so every attempt on biometric data is logged.
    ("GET", f"{API}/policy"): Rule(PUBLIC),
    ("GET", f"{API}/officers/{{officer_id}}/vitals"): POLICY_GATED,
    ("GET", f"{API}/officers/{{officer_id}}/raw-windows"): POLICY_GATED,
    ("GET", f"{API}/me/vitals"): POLICY_GATED,
    ("GET", f"{API}/me/raw-windows"): POLICY_GATED,
    ("GET", f"{API}/me/export"): POLICY_GATED,
    ("GET", f"{API}/me/access-report"): POLICY_GATED,
    ("GET", f"{API}/reports/transparency"): POLICY_GATED,
    ("GET", f"{API}/aggregates/vitals"): POLICY_GATED,
    ("GET", f"{API}/audit"): POLICY_GATED,
    ("GET", f"{API}/audit/verify"): POLICY_GATED,
    ("GET", f"{API}/audit/incidents/{{alert_id}}"): POLICY_GATED,
}


def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")


_PATTERNS = {key: _template_regex(key[1]) for key in ACCESS}


def rule_for(method: str, path_format: str, url_path: str | None = None) -> Rule | None:
    """The rule of a route. A router included with a prefix reports its path without it, so the
    template is matched by its ending and by the requested URL."""
    rule = ACCESS.get((method, path_format))
    if rule is not None or url_path is None or not path_format:
        return rule
    for (m, template), pattern in _PATTERNS.items():
        if m == method and template.endswith(path_format) and pattern.match(url_path):
            return ACCESS[(m, template)]
    return None


def iter_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route the application serves (docs pages excluded)."""
    out = []
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else []
        for ctx in contexts:
            original = getattr(ctx, "original_route", ctx)
            path = ctx.path_format or getattr(original, "path_format", "") or getattr(original, "path", "")
            methods = ctx.methods or getattr(original, "methods", None) or {"WEBSOCKET"}
            out.extend((m, path) for m in sorted(methods) if m != "HEAD")
    return out
