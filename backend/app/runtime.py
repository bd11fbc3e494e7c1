"""The backend's long-running parts, wired together and supervised.

One object owns the engine, registry, live hub, alert service and ingest; ``run`` keeps their
loops in one TaskGroup until cancelled."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

import sqlalchemy as sa

from backend.incidents.alerts import AlertService
from backend.incidents.events import IncidentEvents
from backend.incidents.journal import AlertJournal
from backend.ingest.journal import TelemetryJournal
from backend.ingest.replay_state import ReplayStateWriter
from backend.incidents.store import AlertStore
from backend.identity.auth import RevokedTokens
from backend.identity.broker import BrokerAdmin
from backend.identity.gateway_state import GatewayStates
from backend.identity.keys import with_keys
from backend.incidents.dispatch import DispatchWebhook
from backend.incidents.downlink import DownlinkService
from backend.db import engine as db
from backend.app.config import BackendSettings
from backend.detection import DetectionService
from backend.detection.status import StatusBoard
from backend.incidents.hub import LiveHub
from backend.ingest.dead_letters import DeadLetters
from backend.ingest.service import IngestService
from backend.app.metrics import BackendMetrics
from backend.app.supervision import Supervisor
from backend.ingest.registry import DeviceRegistry
from backend.privacy.service import PrivacyService

log = logging.getLogger("vigil.runtime")

PARTITION_MAINTENANCE_S = 3600.0
# The cyclic garbage collector, for a process that allocates hundreds of thousands of short-lived
# objects a second (frames, chunks, windows, rows) beside a large heap that stays (modules, the
# registry, per-device state). With CPython's default (a young collection every 700 net
# allocations) 2,000 devices' minute brought 16 full collections of the whole heap, 120 ms each
# (a stall of the event loop each time), and the collector took 9 % of the CPU; with this
# setting, no full collection and 1.5 % (`vigil bench pipeline --gc default`, then `--gc tuned`).
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once the service is up: what exists now (imports, settings, the loaded registry) leaves
    the collector's view for good (``gc.freeze``), and young collections run 14 times less
    often. Objects are still freed by reference counting; only cycles among frozen objects
    would outlive their use."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


class Runtime:
    def __init__(self, settings: BackendSettings):
        self.settings = settings = with_keys(settings)  # development without configured keys: its own, kept
        self.engine = db.create_engine(settings)
        self.metrics = BackendMetrics()
        self.hub = LiveHub()
        self.registry = DeviceRegistry(self.engine, settings.secret_key.get_secret_value())
        # the officer board: device status, last gateway and open incident of each officer
        self.status = StatusBoard(settings.device_offline_s, settings.battery_low_pct, self.engine)
        # the lifecycle tells downlink and dispatch of incidents through events, not references
        self.incident_events = IncidentEvents(self.metrics)
        # a journal belongs to one backend identity and one database: never replayed into another
        journal = settings.journal_dir / f"{settings.mqtt_client_id}@{sa.engine.make_url(settings.database_url).database}"
        self.alert_journal = AlertJournal(journal.with_name(journal.name + ".alerts"))
        self.alert_store = AlertStore(self.engine, self.metrics, self.alert_journal, settings.alert_write_wait_s)
        self.alerts = AlertService(self.alert_store, self.hub, self.metrics, self.incident_events, status=self.status,
                                   escalate_after_s=settings.escalate_after_s, cancel_grace_s=settings.cancel_grace_s)
        self.downlink = DownlinkService(settings, self.engine, self.registry, self.status, self.incident_events, self.alerts.record)
        self.dispatch = (DispatchWebhook(settings.cad_webhook_url, self.incident_events, self.alerts.record, settings.cad_retry_base_s)
                         if settings.cad_webhook_url else None)
        self.revoked = RevokedTokens(self.engine)
        self.detection = DetectionService(settings, self.engine, self.registry, self.alerts, self.hub, self.metrics,
                                          status=self.status)
        self.dead_letters = DeadLetters(self.engine, self.metrics)
        self.replay_state = ReplayStateWriter(self.engine, self.registry)
        hold_s = settings.journal_hold_s or settings.detection_backlog_s + 4 * settings.detection_hop_s + 10.0
        self.telemetry_journal = TelemetryJournal(journal.with_name(journal.name + ".telemetry"),
                                                  segment_s=settings.journal_segment_s, hold_s=hold_s)
        self.ingest = IngestService(settings, self.registry, self.alerts, self.metrics, self.detection, self.dead_letters,
                                    downlink=self.downlink, journal=self.telemetry_journal)
        self.storage_mode: str | None = None
        self.incidents_loaded = False
        self.privacy = PrivacyService(self.engine, settings)  # grants, policy versions, retention, audit outbox
        # the broker's dynamic security: gateways admitted and refused as the registry says (none: not administered)
        self.broker_admin = BrokerAdmin(
            settings.mqtt_url, settings.broker_admin_username, settings.broker_admin_password.get_secret_value(),
            engine=self.engine, secret=settings.secret_key.get_secret_value(), agencies=settings.agencies,
            ca_file=settings.mqtt_ca_file,
            retry_s=settings.broker_admin_retry_s, resync_s=settings.broker_admin_resync_s,
            timeout_s=settings.broker_admin_timeout_s, metrics_registry=self.metrics.registry,
        ) if settings.broker_admin_username else None
        # each gateway's own word on its state and queue depth, for the fleet page
        self.gateway_states = GatewayStates(settings.mqtt_url, settings.mqtt_client_id + "-gateway-states", settings.agencies,
                                            settings.mqtt_ca_file)
        self.stop = asyncio.Event()
        self.supervisor = Supervisor(self.metrics, stop=self.stop)
        self.started = time.monotonic()
        self.dead = asyncio.Event()  # set when the supervised tasks gave up: nothing may serve on
        self.fatal: BaseException | None = None

    async def run(self) -> None:
        """Every long-running part, each supervised (backend/app/supervision.py), until cancelled.
        Raises TaskKeepsFailing (in an ExceptionGroup) when one of them cannot recover."""
        keep = self.supervisor.keep
        async with asyncio.TaskGroup() as tg:
            tg.create_task(keep("registry", self._registry_loop), name="registry")
            tg.create_task(keep("alert-storage", lambda: self.alert_store.run_retry(self.stop, self.settings.db_retry_interval_s)),
                           name="alert-storage")
            tg.create_task(keep("partitions", self._maintenance_loop), name="partitions")
            tg.create_task(keep("replay-state", lambda: self.replay_state.run(self.stop, self.settings.replay_save_interval_s)),
                           name="replay-state")
            tg.create_task(keep("dead-letters", lambda: self.dead_letters.run(self.stop, self.settings.db_retry_interval_s)),
                           name="dead-letters")
            tg.create_task(keep("detection", lambda: self.detection.run(self.stop)), name="detection")
            tg.create_task(keep("privacy", self.privacy.run), name="privacy")
            tg.create_task(keep("alert-escalation", lambda: self.alerts.run_escalation(self.stop)), name="alert-escalation")
            tg.create_task(keep("downlink", lambda: self.downlink.run(self.stop)), name="downlink")
            tg.create_task(keep("gateway-states", lambda: self.gateway_states.run(self.stop)), name="gateway-states")
            if self.broker_admin is not None:
                tg.create_task(keep("broker-admin", lambda: self.broker_admin.run(self.stop)), name="broker-admin")
            if self.dispatch is not None:
                tg.create_task(keep("dispatch-webhook", lambda: self.dispatch.run(self.stop)), name="dispatch-webhook")
            # Ingest waits for the first registry load so early frames are not refused as unknown.
            tg.create_task(keep("ingest", self._ingest_after_registry), name="ingest")

    async def run_until_failed(self) -> None:
        """:meth:`run`; if it ends with an error, remember it and set ``dead`` (the server then
        stops, and ``vigil backend run`` exits non-zero) instead of letting the API serve on."""
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an ExceptionGroup from the TaskGroup
            self.fatal = exc
            log.critical("the backend's tasks stopped (%s); the process stops too", exc)
            self.dead.set()

    async def _ingest_after_registry(self) -> None:
        while not self.registry.loaded:
            await asyncio.sleep(0.05)
        await self.ingest.run()

    async def _registry_loop(self) -> None:
        failing = False
        while True:
            try:
                if not self.incidents_loaded:  # before ingest starts: a restart continues open incidents
                    stored = await self.alert_store.recover()  # what a crash left in the journal, first
                    if stored:
                        log.warning("stored %d alert change(s) kept in the journal from before the restart", stored)
                    await self.alerts.load_open()
                    self.incidents_loaded = True
                await self.registry.refresh()
                await self.revoked.refresh()
                if self.storage_mode is None:
                    self.storage_mode = await db.storage_mode(self.engine)
                    log.info("time-series storage: %s", self.storage_mode)
                if failing:
                    log.warning("database reachable again: registry refreshed")
                failing = False
                delay = self.settings.registry_refresh_s
            except (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
                if not failing:
                    log.error("registry refresh failed (%s); keeping the cached devices", exc.__class__.__name__)
                failing = True
                delay = self.settings.db_retry_interval_s
            await asyncio.sleep(delay)

    async def _maintenance_loop(self) -> None:
        while True:
            try:
                await db.ensure_partitions(self.engine)
                delay = PARTITION_MAINTENANCE_S
            except (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError):
                delay = self.settings.db_retry_interval_s * 5
            await asyncio.sleep(delay)

    async def close(self) -> None:
        self.stop.set()
        # what the writers still buffer goes now (a clean stop; the journal covers a crash)
        try:
            self.detection.raw_rows.flush()
            await asyncio.wait_for(self.detection.raw.flush(), 10)
            await asyncio.wait_for(self.detection.features.flush(), 10)
        except Exception as exc:  # noqa: BLE001 - any database failure (asyncpg's own from COPY too)
            log.error("rows still buffered at stop not written (%s); the telemetry journal replays their frames at the "
                      "next start", exc.__class__.__name__)
        try:  # a clean stop leaves nothing acknowledged unsaved
            await self.replay_state.save()
        except Exception as exc:  # noqa: BLE001 - any database failure (asyncpg's own too)
            log.error("replay windows not saved at stop (%s): frames of the last %.0f s could be replayed once",
                      exc.__class__.__name__, self.settings.replay_save_interval_s)
        await self.engine.dispose()
        self.alert_journal.close()
        self.telemetry_journal.close()
