"""Prometheus metrics of one gateway, in a registry of its own (no module-level globals, so
several gateways can run in one process, as in the tests)."""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger("vigil.gateway.metrics")


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("vigil_gateway_frames_in", "Frames received from wearables",
                                 ["device", "kind"], registry=r)
        self.frames_out = Counter("vigil_gateway_frames_out", "Frames acknowledged by the broker",
                                  ["kind"], registry=r)
        self.queue_depth = Gauge("vigil_gateway_queue_depth", "Frames waiting in the durable queue", registry=r)
        self.queue_dropped = Counter("vigil_gateway_queue_dropped", "Frames dropped because the queue was full",
                                     ["kind"], registry=r)
        self.reconnects = Counter("vigil_gateway_reconnects", "BLE reconnects after a lost link",
                                  ["device"], registry=r)
        self.connect_failures = Counter("vigil_gateway_connect_failures", "Failed BLE connection attempts",
                                        ["device"], registry=r)
        self.connected = Gauge("vigil_gateway_device_connected", "1 while the device's link is up",
                               ["device"], registry=r)
        self.malformed = Counter("vigil_gateway_malformed_notifications",
                                 "Notifications that are not valid frames (dropped)", ["device", "reason"], registry=r)
        self.unknown_devices = Counter("vigil_gateway_unknown_device_adverts",
                                       "Advertisements of Vigil-service devices not provisioned here", registry=r)
        self.seq_gaps = Counter("vigil_gateway_seq_gaps", "Sequence numbers skipped in a device's live stream",
                                ["device"], registry=r)
        self.downlink = Counter("vigil_gateway_downlink", "Downlink command outcomes", ["result"], registry=r)
        self.broker_connected = Gauge("vigil_gateway_broker_connected", "1 while connected to MQTT", registry=r)
        self.provisioned = Gauge("vigil_gateway_provisioned_devices", "Devices this gateway serves", registry=r)

    def value(self, name: str, **labels) -> float:
        """A sample's current value (0 when absent), for tests and the benchmark."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def total(self, name: str) -> float:
        """Sum of a metric over all its label values."""
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name:
                    total += sample.value
        return total

    def serve(self, host: str, port: int):
        """Start the /metrics endpoint in a daemon thread; returns (server, bound port)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        bound = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return server, bound
