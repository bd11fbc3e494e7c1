"""Load and validate the policy document. A document that breaks the promise (raw waveforms
kept past the ceiling, a rule granting a refused purpose, an unknown name) is refused here,
before it can be stored or enforced."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from backend.exceptions import ConfigurationError

SHIPPED_POLICY = Path(__file__).resolve().parent / "policy.yaml"

SCOPES = ("self", "agency", "open_incident", "aggregate")
# The shipped document must name at least these; an agency may add, never drop them.
REQUIRED_REFUSED = ("discipline", "performance_evaluation", "investigation_of_officer", "fitness_for_duty", "promotion")
REQUIRED_DATA_CLASSES = ("raw_waveforms", "derived_features", "alerts_incidents", "device_fleet", "audit_records")
RAW_CEILING_HOURS = 72  # never past this, whatever the document says
DERIVED_CEILING_HOURS = 30 * 24


class PolicyError(ConfigurationError):
    """The policy document is invalid; the message names the offending part."""


@dataclass(frozen=True, slots=True)
class DataClass:
    name: str
    biometric: bool
    tables: tuple[str, ...]
    max_age_hours: float | None
    incident_hold: bool


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    roles: frozenset[str]
    purposes: frozenset[str]
    data_classes: frozenset[str]
    scope: str


@dataclass(frozen=True, slots=True)
class ImpliedPurpose:
    """A read by one of ``roles`` of one of ``data_classes`` that declares no purpose is for ``purpose``."""
    roles: frozenset[str]
    data_classes: frozenset[str]
    purpose: str


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    sha256: str
    text: str
    change_notice_days: float
    data_classes: dict[str, DataClass]
    roles: dict[str, str]
    purposes: dict[str, str]
    refused_purposes: frozenset[str]
    refused_data_classes: frozenset[str]
    closed_incident_states: frozenset[str]
    incident_lead_s: float
    incident_hold_after_s: float
    min_group_officers: int
    rules: tuple[Rule, ...]
    implied_purposes: tuple[ImpliedPurpose, ...] = ()
    bucket_hours: float = 24.0  # aggregates are computed per whole bucket of this length (UTC)

    def implied_purpose(self, role: str, data_class: str) -> str | None:
        """The purpose a read without a declared one is taken to have, if the policy names one."""
        return next((i.purpose for i in self.implied_purposes if role in i.roles and data_class in i.data_classes), None)

    def suppressed(self, officers: int | None) -> bool:
        """The one rule of small-group suppression: a group of fewer officers shows no figure."""
        return (officers or 0) < self.min_group_officers

    @property
    def biometric_tables(self) -> tuple[str, ...]:
        return tuple(tbl for dc in self.data_classes.values() if dc.biometric for tbl in dc.tables)

    def summary(self) -> dict:
        return {"version": self.version, "sha256": self.sha256}


def document_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_policy_file(path: Path | str = SHIPPED_POLICY) -> Policy:
    return parse_policy(Path(path).read_text())


def parse_policy(text: str) -> Policy:
    """Validate the YAML text and return the policy; its hash is over the exact text."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise PolicyError("policy must be a mapping")
    version = _need(doc, "version", str)
    roles = _need(doc, "roles", dict)
    purposes = _need(doc, "purposes", dict)
    classes_doc = _need(doc, "data_classes", dict)
    refused_doc = _need(doc, "always_refused", dict)
    incident = _need(doc, "incident", dict)

    ceiling = float(doc.get("raw_retention_ceiling_hours", RAW_CEILING_HOURS))
    if ceiling > RAW_CEILING_HOURS:
        raise PolicyError(f"raw_retention_ceiling_hours {ceiling} exceeds the hard ceiling of {RAW_CEILING_HOURS} h")
    missing = [c for c in REQUIRED_DATA_CLASSES if c not in classes_doc]
    if missing:
        raise PolicyError(f"data classes missing: {', '.join(missing)}")
    data_classes = {}
    for name, spec in classes_doc.items():
        retention = spec.get("retention") or {}
        max_age = retention.get("max_age_hours")
        if max_age is not None:
            max_age = float(max_age)
            if max_age <= 0:
                raise PolicyError(f"{name}: max_age_hours must be positive")
        data_classes[name] = DataClass(name, bool(spec.get("biometric", False)), tuple(spec.get("tables") or ()),
                                       max_age, bool(retention.get("incident_hold", False)))
    raw = data_classes["raw_waveforms"].max_age_hours
    if raw is None or raw > min(ceiling, RAW_CEILING_HOURS):
        raise PolicyError(f"raw_waveforms max_age_hours {raw} must be set and at most {min(ceiling, RAW_CEILING_HOURS)} h")
    derived = data_classes["derived_features"].max_age_hours
    if derived is None or derived > DERIVED_CEILING_HOURS:
        raise PolicyError(f"derived_features max_age_hours {derived} must be set and at most {DERIVED_CEILING_HOURS} h (30 days)")
    for name in ("raw_waveforms", "derived_features"):
        if not data_classes[name].biometric:
            raise PolicyError(f"{name} must be marked biometric")

    refused = frozenset(refused_doc.get("purposes") or ())
    lacking = [p for p in REQUIRED_REFUSED if p not in refused]
    if lacking:
        raise PolicyError(f"always_refused.purposes must include {', '.join(lacking)}")
    refused_classes = frozenset(refused_doc.get("data_classes") or ())
    biometric = {n for n, dc in data_classes.items() if dc.biometric}
    if not biometric <= refused_classes:
        raise PolicyError("always_refused.data_classes must cover every biometric data class")
    if refused & set(purposes):
        raise PolicyError(f"purposes {sorted(refused & set(purposes))} are both allowed and always refused")

    rules = []
    seen = set()
    for i, spec in enumerate(_need(doc, "rules", list)):
        rid = spec.get("id") or f"rule[{i}]"
        if rid in seen:
            raise PolicyError(f"duplicate rule id {rid}")
        seen.add(rid)
        rule = Rule(rid, frozenset(spec.get("roles") or ()), frozenset(spec.get("purposes") or ()),
                    frozenset(spec.get("data_classes") or ()), spec.get("scope", ""))
        for field, known in (("roles", roles), ("purposes", purposes), ("data_classes", data_classes)):
            unknown = getattr(rule, field) - set(known)
            if unknown:
                raise PolicyError(f"rule {rid}: unknown {field} {sorted(unknown)}")
        if rule.scope not in SCOPES:
            raise PolicyError(f"rule {rid}: scope {rule.scope!r} is not one of {SCOPES}")
        if rule.purposes & refused and rule.data_classes & refused_classes:
            raise PolicyError(f"rule {rid} grants an always-refused purpose")
        if "officer" in rule.roles and rule.scope != "self":
            raise PolicyError(f"rule {rid}: officers may only be granted scope 'self'")
        if rule.scope == "agency" and rule.data_classes & biometric:
            raise PolicyError(f"rule {rid}: biometric data needs scope self, open_incident or aggregate, not agency")
        rules.append(rule)

    implied = []
    for i, spec in enumerate(doc.get("implied_purposes") or ()):
        one = ImpliedPurpose(frozenset(spec.get("roles") or ()), frozenset(spec.get("data_classes") or ()), spec.get("purpose", ""))
        if one.purpose not in purposes:
            raise PolicyError(f"implied_purposes[{i}]: {one.purpose!r} is not a purpose of this policy")
        if one.roles - set(roles) or one.data_classes - set(data_classes):
            raise PolicyError(f"implied_purposes[{i}]: unknown roles or data classes")
        if one.data_classes & biometric:
            raise PolicyError(f"implied_purposes[{i}]: biometric data ({sorted(one.data_classes & biometric)}) always needs a declared purpose")
        implied.append(one)

    aggregates = doc.get("aggregates") or {}
    min_group = int(aggregates.get("min_group_officers", 10))
    if min_group < 10:
        raise PolicyError("aggregates.min_group_officers must be at least 10")
    bucket_hours = float(aggregates.get("bucket_hours", 24))
    if bucket_hours < 24 or bucket_hours % 24:
        raise PolicyError("aggregates.bucket_hours must be a whole number of days (at least 24)")
    notice = float(doc.get("change_notice_days", 14))
    if notice < 0:
        raise PolicyError("change_notice_days must not be negative")
    return Policy(
        version=version, sha256=document_hash(text), text=text, change_notice_days=notice,
        data_classes=data_classes, roles={str(k): str(v) for k, v in roles.items()},
        purposes={str(k): str(v) for k, v in purposes.items()}, refused_purposes=refused,
        refused_data_classes=refused_classes, closed_incident_states=frozenset(incident.get("closed_states") or ("resolved",)),
        incident_lead_s=float(incident.get("lead_seconds", 600)), incident_hold_after_s=float(incident.get("hold_after_seconds", 900)),
        min_group_officers=min_group, rules=tuple(rules), implied_purposes=tuple(implied), bucket_hours=bucket_hours,
    )


def _need(doc: dict, key: str, kind: type):
    value = doc.get(key)
    if not isinstance(value, kind):
        raise PolicyError(f"policy field {key!r} must be a {kind.__name__}")
    return value
