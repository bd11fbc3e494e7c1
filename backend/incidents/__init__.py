"""Alerts from raise to resolution: the alert types and their rules (``rules``), the lifecycle
and its store (``alerts``), the supervisors' live feed (``hub``), the downlink to wearables
(``downlink``) and the hand-off to computer-aided dispatch (``dispatch``)."""
