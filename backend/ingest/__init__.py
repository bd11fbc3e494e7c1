"""Uplink: the MQTT subscriber (``mqtt``), the device registry (``registry``) and the
verification of every frame (``service``) before detection and incidents see it."""
