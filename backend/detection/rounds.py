"""Rounds of the models over the due windows, where ``VIGIL_DETECTION_WORKER`` says they run.

A round is one call per model per placement over all its devices (:mod:`backend.detection.hop`):
the fall model over the due fall steps, then every model over the due hop windows.
``inline`` (the default) runs the calls on the event loop itself, at most ``INLINE_CHUNK``
windows at a time with a turn for ingest and SOS in between: a worker thread shares the GIL
with the busy loop (a round of 900 windows took 1.1 s in the thread against 0.2 s alone, most
likely waiting for the GIL after every large numpy call), and a worker process costs the
pickling. ``thread`` and ``process`` run them in a worker of that kind. A round's duration goes
to the ``vigil_detection_hop_seconds`` histogram.

The models' per-device states live where the models run: in :attr:`RoundRunner.model_states`
inline or in the thread, in the worker process itself (:func:`~backend.detection.hop.run_in_process`)
otherwise. A model error must not stop ingest: the round is skipped, counted, and logged once;
a worker process that died is replaced (its model states start afresh).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import pickle
import time

from backend.app.metrics import BackendMetrics
from backend.detection.hop import DecisionConfig, DeviceResult, FallStepInput, HopInput, ModelStates, run_in_process

log = logging.getLogger("vigil.detection")

WORKERS = ("inline", "thread", "process")
# Windows analysed on the event loop between two turns for ingest (~45 ms of models at most).
INLINE_CHUNK = 200


class RoundRunner:
    def __init__(self, worker: str, config: DecisionConfig, metrics: BackendMetrics):
        if worker not in WORKERS:
            raise ValueError(f"detection worker {worker!r}: expected one of {', '.join(WORKERS)}")
        self.worker = worker
        self.config = config
        self._metrics = metrics
        self.model_states = ModelStates()  # used when the models run inline or in a thread
        self._executor = self._new_executor()
        self._failure_logged = False
        self._batch_failure_logged = False

    def _new_executor(self) -> concurrent.futures.Executor | None:
        # process: the models get a core without the GIL that ingest needs; the windows travel
        # pickled (about 5 kB per device and hop), the model states stay there. thread: shares
        # the GIL with the event loop. inline: no executor.
        if self.worker == "process":
            return concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        if self.worker == "thread":
            return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vigil-detection")
        return None  # inline: on the event loop

    async def analyse(self, batches: list[HopInput | FallStepInput], resets: frozenset[int],
                      now: float) -> list[list[DeviceResult | None]] | None:
        """One round's results, batch by batch and window by window (a fall step's: None where
        it suspects nothing); None if the round failed."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            if self.worker == "process":
                sent = pickle.dumps((batches, resets, int(now * 1000), self.config), protocol=pickle.HIGHEST_PROTOCOL)
                outcome, failed = pickle.loads(await loop.run_in_executor(self._executor, run_in_process, sent))
                return self._batches_failed(outcome, failed)
            if self.worker == "inline":
                outcome = []
                for batch in batches:
                    parts = []
                    for i in range(0, len(batch.windows), INLINE_CHUNK):
                        parts += self.model_states.run([batch.part(i, i + INLINE_CHUNK)], resets, int(now * 1000),
                                                       self.config)[0]
                        await asyncio.sleep(0)
                    outcome.append(parts)
                return self._batches_failed(outcome, self.model_states.take_failed())
            outcome = await loop.run_in_executor(self._executor, self.model_states.run, batches, resets,
                                                 int(now * 1000), self.config)
            return self._batches_failed(outcome, self.model_states.take_failed())
        except Exception as exc:  # a model error must not stop ingest: log it once, count every one
            self._metrics.detection_failures.inc()
            if isinstance(exc, concurrent.futures.BrokenExecutor):  # the worker process died: a new one
                log.error("detection worker lost (%s); starting a new one (model states start afresh)",
                          exc.__class__.__name__)
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
            if not self._failure_logged:
                self._failure_logged = True
                log.exception("DETECTION ROUND FAILED; the windows of this round are skipped")
            return None
        finally:
            self._metrics.detection_hop.observe(time.perf_counter() - started)

    def _batches_failed(self, outcome: list[list[DeviceResult | None]], failed: list[str]) -> list[list[DeviceResult | None]]:
        """Count and log the batches whose models raised (their windows skipped, the rest analysed)."""
        if failed:
            self._metrics.detection_failures.inc(len(failed))
            if not self._batch_failure_logged:
                self._batch_failure_logged = True
                log.error("DETECTION BATCH FAILED; its windows are skipped, the round's other batches analysed "
                          "(counted in vigil_detection_failures): %s", failed[0])
        return outcome

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
