"""The OpenAPI document tells a client what each route answers (issue 21: it had no security
scheme and only 200 and 422 while 401, 403, 404 and 409 were returned). Walks every route of the
real application (``create_app``; nothing is served) against the access table and each
endpoint's own source: bearer authentication declared for every route that needs a token and
none for the public ones; 401 and 403 for every route behind a token; 404 for every route naming
a record; 422 for every route that validates input; and every status an endpoint raises itself
(``HTTPException(409, …)``, ``NotFound``, ``Conflict``, one level into the helpers it calls in its
own module) documented."""
from __future__ import annotations

import inspect
import re

import pytest
from fastapi import routing
from fastapi.routing import APIRoute

from backend.api.access import ACCESS, PUBLIC
from backend.api.app import create_app

_RAISED = (
    re.compile(r"HTTPException\(\s*(?:status\.HTTP_)?(\d{3})"),   # HTTPException(409, …), (status.HTTP_429_…
    re.compile(r"super\(\).__init__\(\s*(?:status\.HTTP_)?(\d{3})"),  # an HTTPException of the module's own
    re.compile(r"\bstatus_code\s*=\s*(?:status\.HTTP_)?(\d{3})"),  # JSONResponse(…, status_code=503), the decorator's
)
_MAPPED = {r"\braise NotFound\(": "404", r"\braise Conflict\(": "409"}  # backend/api/app.py _error_answers


def _sources(endpoint) -> str:
    """The endpoint's source and, one level down, that of what it calls from its own module."""
    module = inspect.getmodule(endpoint)
    text = inspect.getsource(endpoint)
    for name in set(re.findall(r"\b([A-Za-z_]\w*)\(", text)):
        helper = getattr(module, name, None)
        if helper is not endpoint and (inspect.isfunction(helper) or inspect.isclass(helper)) \
                and getattr(helper, "__module__", None) == module.__name__:
            text += inspect.getsource(helper)
    return text


def raised_codes(endpoint, dependant=None) -> set[str]:
    text = _sources(endpoint)
    for sub in _dependencies(dependant):  # a route's own dependencies (a loader answering 404, ...)
        if getattr(sub, "__module__", "").startswith("backend.api.routes"):
            text += _sources(sub)
    codes = {c for pattern in _RAISED for c in pattern.findall(text) if c[0] in "45"}
    return codes | {code for pattern, code in _MAPPED.items() if re.search(pattern, text)}


def _dependencies(dependant):
    for sub in getattr(dependant, "dependencies", None) or ():
        if inspect.isfunction(sub.call):
            yield sub.call
        yield from _dependencies(sub)


APP = create_app()
DOC = APP.openapi()


def _api_routes(app):
    """(method, path, endpoint, dependant) of each documented route; FastAPI >= 0.165 keeps included
    routers whole and gives their routes (with the prefix) through iter_route_contexts."""
    contexts = getattr(routing, "iter_route_contexts", None)
    for route in (contexts(app.routes) if contexts else app.routes):
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute) and original.include_in_schema:
            for method in sorted(route.methods):
                yield method, route.path, route.endpoint, original.dependant


# Routes known to answer a status they do not document (none now; POST /gateways documents its 404).
# Strict: the test says so as soon as such a route documents it.
KNOWN_GAPS: dict[tuple[str, str], str] = {}
ROUTES = [pytest.param(*r, id=f"{r[0]} {r[1]}", marks=[pytest.mark.xfail(reason=KNOWN_GAPS[r[:2]], strict=True)]
                       if r[:2] in KNOWN_GAPS else []) for r in _api_routes(APP)]


def test_bearer_authentication_is_declared():
    scheme = DOC["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer", scheme
    assert DOC["security"] == [{"bearer": []}]
    assert len(ROUTES) > 40 and {"/api/v1/alerts", "/api/v1/devices/{device_id}/retire"} <= {r.values[1] for r in ROUTES}


@pytest.mark.parametrize(("method", "path", "endpoint", "dependant"), ROUTES)
def test_each_route_documents_what_it_answers(method, path, endpoint, dependant):
    op = DOC["paths"][path][method.lower()]
    answers = set(op["responses"])
    rule = ACCESS.get((method, path))
    assert rule is not None, f"{method} {path} is missing from the access table (refused to everyone)"
    security = op.get("security", DOC["security"])
    if rule.roles == PUBLIC:
        assert security == [], f"{method} {path} needs no token but the document asks for one"
    else:
        assert {"bearer": []} in security, security
        assert {"401", "403"} <= answers, (method, path, answers)
    if "{" in path:
        assert "404" in answers, (method, path, answers)
    if dependant.path_params or dependant.query_params or dependant.body_params or dependant.header_params:
        assert "422" in answers, (method, path, answers)
    missing = raised_codes(endpoint, dependant) - answers
    assert not missing, f"{method} {path} raises {sorted(missing)} that its document does not list"
