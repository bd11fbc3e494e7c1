# The part of MicroPython's asyncio the firmware uses (sleep_ms, wait_for_ms, gather, run,
# ThreadSafeFlag, TimeoutError) and its `time` ticks, on a virtual clock: nothing sleeps.
#
# Runs under MicroPython (the boot test of tests/firmware/test_fw_boot.py runs firmware
# main() with it) and under CPython (gateway/sim/device.py runs a fleet of firmware
# wearables with one VirtualLoop each, advanced to the simulator's clock). A VirtualLoop
# steps the firmware's tasks in time order; before each step its hook(now_ms) lets the host
# move the fake silicon on (sensor FIFOs fill, interrupt pins fire). A task that raises stops
# the loop with that exception: a firmware crash is loud.
#
# Only what the firmware awaits is supported: sleeping, a flag's wait() (with or without a
# wait_for_ms timeout) and gather() of coroutines.
import heapq

_TIMEOUT = "timeout"
TICKS_PERIOD = 1 << 30  # MicroPython's time.ticks_ms() wraps at 2^30 ms
_TICKS_MAX = TICKS_PERIOD - 1
_TICKS_HALF = TICKS_PERIOD // 2


class TimeoutError(Exception):  # noqa: A001 - asyncio.TimeoutError, as the firmware names it
    pass


class CancelledError(BaseException):
    pass


class _Request:
    """What a task waits for; awaiting it hands it to the loop, which sends back the result."""

    def __init__(self, kind, a=None, b=None):
        self.kind = kind
        self.a = a
        self.b = b

    def __iter__(self):
        result = yield self
        return result

    __await__ = __iter__


class _WaitFor:
    def __init__(self, awaitable, timeout_ms):
        if not isinstance(awaitable, _Request) or awaitable.kind != "flag":
            raise ValueError("vasyncio.wait_for_ms supports a flag's wait() only")
        self.flag = awaitable.a
        self.timeout_ms = timeout_ms

    def __iter__(self):
        result = yield _Request("flag", self.flag, self.timeout_ms)
        if result == _TIMEOUT:
            raise TimeoutError()
        return None

    __await__ = __iter__


def sleep_ms(ms):
    return _Request("sleep", ms)


def sleep(seconds):
    return _Request("sleep", int(seconds * 1000))


def wait_for_ms(awaitable, timeout_ms):
    return _WaitFor(awaitable, timeout_ms)


def gather(*coros):
    return _Request("gather", coros)


class ThreadSafeFlag:
    """set() from an interrupt handler wakes the one task waiting in wait()."""

    def __init__(self):
        self.state = False
        self.waiter = None

    def set(self):
        self.state = True
        task = self.waiter
        if task is not None:
            self.waiter = None
            self.state = False
            task.loop.schedule(task, task.loop.now, None)

    def clear(self):
        self.state = False

    def wait(self):
        return _Request("flag", self)


class Task:
    def __init__(self, loop, coro, parent=None):
        self.loop = loop
        self.coro = coro
        self.parent = parent
        self.token = 0
        self.done = False
        self.children = 0
        self.flag = None


class VirtualLoop:
    """Tasks on a virtual millisecond clock. advance(t) runs everything due up to t."""

    def __init__(self, now_ms=0, hook=None, ticks_offset=0):
        self.now = now_ms
        self.hook = hook  # hook(now_ms) before each step: the host's silicon moves on
        self.ticks_offset = ticks_offset
        self.stop_at = None  # run() advances to this time and returns (None: run() only starts)
        self.steps = 0
        self._heap = []
        self._seq = 0

    def schedule(self, task, at, value):
        task.token += 1
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, task, value, task.token))

    def spawn(self, coro, parent=None):
        task = Task(self, coro, parent)
        self.schedule(task, self.now, None)
        return task

    def next_due(self):
        return self._heap[0][0] if self._heap else None

    def advance(self, until_ms):
        global _current
        _current = self
        heap = self._heap
        while heap and heap[0][0] <= until_ms:
            at, _, task, value, token = heapq.heappop(heap)
            if token != task.token or task.done:
                continue  # superseded: the flag was set before the timeout
            if value == _TIMEOUT and task.flag is not None and task.flag.waiter is task:
                task.flag.waiter = None
            task.flag = None
            if at > self.now:
                self.now = at
            if self.hook is not None:
                self.hook(self.now)
            self._step(task, value)
        if until_ms > self.now:
            self.now = until_ms

    def _step(self, task, value):
        self.steps += 1
        try:
            req = task.coro.send(value)
        except StopIteration:
            self._finished(task)
            return
        kind = req.kind
        if kind == "sleep":
            self.schedule(task, self.now + max(0, req.a), None)
        elif kind == "flag":
            flag = req.a
            if flag.state:
                flag.state = False
                self.schedule(task, self.now, None)
            else:
                flag.waiter = task
                task.flag = flag
                task.token += 1  # no wake-up pending until the flag or the timeout
                if req.b is not None:
                    self._seq += 1
                    heapq.heappush(self._heap, (self.now + req.b, self._seq, task, _TIMEOUT, task.token))
        elif kind == "gather":
            task.children = len(req.a)
            task.token += 1
            for coro in req.a:
                self.spawn(coro, task)
            if not req.a:
                self.schedule(task, self.now, None)
        else:
            raise ValueError("vasyncio: cannot await %r" % (kind,))

    def _finished(self, task):
        task.done = True
        parent = task.parent
        if parent is not None:
            parent.children -= 1
            if parent.children == 0:
                self.schedule(parent, self.now, None)


_current = None


def use(loop):
    """Make loop the one run(), create_task() and the ticks refer to."""
    global _current
    _current = loop


def current():
    return _current


def create_task(coro):
    return _current.spawn(coro)


def run(coro):
    """Start coro on the current loop and run what is due now; then, if the loop has a stop_at
    time, run until then (a test), else return and let the host advance the loop (a fleet)."""
    loop = _current
    loop.spawn(coro)
    loop.advance(loop.now)
    if loop.stop_at is not None:
        loop.advance(loop.stop_at)


class VirtualTime:
    """time.ticks_ms / ticks_diff / ticks_add of MicroPython, on the current loop's clock."""

    def ticks_ms(self):
        loop = _current
        return (int(loop.now) + loop.ticks_offset) & _TICKS_MAX

    def ticks_diff(self, a, b):
        return ((a - b + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF

    def ticks_add(self, a, delta):
        return (a + delta) & _TICKS_MAX

    def time(self):
        return int(_current.now) // 1000


time = VirtualTime()
