# On-device safety logic: SOS long press, fall suspicion, man-down pre-alert and alarm, and the
# haptic patterns that tell the officer what the device understood.
#
# Pure state machines: time comes in as an argument (monotonic milliseconds), nothing here
# touches a pin or the radio, so the same code runs on the ESP32, under MicroPython in CI and
# in the CPython tests. It works with no gateway in range: events go to the outbox
# (firmware/core.py) and are delivered when a link exists.
import math

from firmware import frame as F

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore
        return x


# Haptic patterns: durations in ms, alternating on and off, starting with on.
PATTERN_SOS_ACCEPTED = (700, 150, 700)  # two long pulses: "SOS is out"
PATTERN_PREALERT = (250, 250, 250, 1250)  # repeats: "move or press to cancel"
PATTERN_ALARM = (800, 200)  # repeats until the officer resets it
PATTERN_CANCELLED = (60, 120, 60)  # two short ticks
PATTERN_CONFIRMED = (60,)  # one tick: "help is coming" acknowledged
HELP_PATTERNS = {
    0: (150, 100, 150, 100, 150, 100, 600),  # three short, one long: "help is coming"
    1: (400, 200, 400, 200, 400),  # three long: "help is close"
}
# Messages from the supervisor (COMMAND_MESSAGE), one rhythm each, none like another pattern
# here: an officer who cannot look at a screen tells them apart by feel.
MESSAGE_PATTERNS = {
    F.MESSAGE_HELP_COMING: HELP_PATTERNS[0],  # the same words, the same feel
    F.MESSAGE_STAY_PUT: (1500,),  # one long steady buzz: "stay where you are"
    F.MESSAGE_FALL_BACK: (100, 100, 100, 100, 100, 100, 100, 100, 100),  # five rapid: "move back to safety"
    F.MESSAGE_CHECK_IN: (300, 700, 300),  # two, spaced: "are you OK? press"
    F.MESSAGE_ALL_CLEAR: (600, 200, 150),  # long then short: "all clear"
    # two bursts of three: "a colleague near you needs help"
    F.MESSAGE_COLLEAGUE_NEEDS_HELP: (250, 100, 250, 100, 250, 500, 250, 100, 250, 100, 250),
}

# Who wins the one motor: an alarm is never masked by a lesser pattern.
_PRIO_TICK = const(0)
_PRIO_HELP = const(1)
_PRIO_SOS = const(2)
_PRIO_PREALERT = const(3)
_PRIO_ALARM = const(4)

# Man-down states.
IDLE = const(0)
PREALERT = const(1)
ALARM = const(2)
STATE_NAMES = ("idle", "prealert", "alarm")

# Event details (the frame's u16 detail field) this firmware uses.
PREALERT_REASON_LYING = const(1)  # lying still
PREALERT_REASON_FALL = const(2)  # still after a suspected fall
CANCEL_BY_BUTTON = const(1)
CANCEL_BY_MOTION = const(2)
CANCEL_ALARM_RESET = const(3)  # the officer reset a full alarm by hand

# Priority hints carried in event frames (1 = highest).
PRIORITY = {
    F.EVENT_SOS: 1,
    F.EVENT_MANDOWN_ALARM: 1,
    F.EVENT_FALL_SUSPECTED: 2,
    F.EVENT_PREALERT_STARTED: 2,
    F.EVENT_PREALERT_CANCELLED: 3,
    F.EVENT_HELP_CONFIRMED: 3,
    F.EVENT_MESSAGE_CONFIRMED: 3,
}


class SafetySettings:
    """Timings and thresholds; PASS-like defaults (pre-alert at 20 s still, alarm at 30 s)."""

    def __init__(
        self,
        sos_hold_ms: int = 2000,
        prealert_ms: int = 20000,
        alarm_ms: int = 30000,
        motion_mg: int = 60,
        lying_deg: int = 60,
        fall_hold_ms: int = 120000,
        freefall_mg: int = 450,
        impact_mg: int = 2500,
        debounce_ms: int = 30,
        help_confirm_ms: int = 30000,
    ) -> None:
        if not 500 <= sos_hold_ms <= 10000:
            raise ValueError("sos_hold_ms 500..10000")
        if not 1000 <= prealert_ms < alarm_ms <= 600000:
            raise ValueError("1000 <= prealert_ms < alarm_ms <= 600000")
        if not 10 <= motion_mg <= 1000 or not 20 <= lying_deg <= 85:
            raise ValueError("motion_mg 10..1000, lying_deg 20..85")
        if not 100 <= freefall_mg < 1000 < impact_mg <= 16000:
            raise ValueError("freefall_mg 100..999, impact_mg 1001..16000")
        self.sos_hold_ms = sos_hold_ms
        self.prealert_ms = prealert_ms
        self.alarm_ms = alarm_ms
        self.motion_mg = motion_mg
        self.lying_deg = lying_deg
        self.fall_hold_ms = fall_hold_ms
        self.freefall_mg = freefall_mg
        self.impact_mg = impact_mg
        self.debounce_ms = debounce_ms
        self.help_confirm_ms = help_confirm_ms


class HapticPlayer:
    """Which pattern the motor plays, and whether it is on at a given time."""

    def __init__(self) -> None:
        self.pattern: tuple = ()
        self._start = 0
        self._repeat = False
        self._prio = -1

    def play(self, pattern: tuple, now_ms: int, priority: int = _PRIO_TICK, repeat: bool = False) -> bool:
        if self.active(now_ms) and priority < self._prio:
            return False
        self.pattern = pattern
        self._start = now_ms
        self._repeat = repeat
        self._prio = priority
        return True

    def stop(self) -> None:
        self.pattern = ()
        self._prio = -1

    def active(self, now_ms: int) -> bool:
        if not self.pattern:
            return False
        if self._repeat:
            return True
        total = 0
        for d in self.pattern:
            total += d
        if now_ms - self._start >= total:
            self.stop()
            return False
        return True

    def level(self, now_ms: int) -> bool:
        """True when the motor should be on at now_ms."""
        if not self.active(now_ms):
            return False
        total = 0
        for d in self.pattern:
            total += d
        t = now_ms - self._start
        if self._repeat:
            t %= total
        on = True
        for d in self.pattern:
            if t < d:
                return on
            t -= d
            on = not on
        return False


class Button:
    """Debounced button level from raw samples; update() returns 1 on press, -1 on release."""

    def __init__(self, debounce_ms: int = 30) -> None:
        self.debounce_ms = debounce_ms
        self.pressed = False
        self._raw = False
        self._since = 0

    def update(self, raw_pressed: bool, now_ms: int) -> int:
        if raw_pressed != self._raw:
            self._raw = raw_pressed
            self._since = now_ms
        if self._raw != self.pressed and now_ms - self._since >= self.debounce_ms:
            self.pressed = self._raw
            return 1 if self.pressed else -1
        return 0


class MotionMonitor:
    """Motion, posture and fall suspicion from accelerometer samples in milli-g.

    Gravity is tracked by an exponential average over ~16 samples (0.3 s at 50 Hz); motion is
    any sample that deviates from it by more than motion_mg. Lying means the device's up axis
    (up the trunk when standing: the unit is worn upright at the waist) is more than lying_deg from vertical. A fall is a
    free-fall dip (|a| < freefall_mg for 60 ms), an impact (|a| > impact_mg) within a second,
    and 1.5 s later a trunk orientation changed by more than 45 degrees or lying."""

    def __init__(self, settings: SafetySettings, up_axis: int = 1) -> None:
        self.s = settings
        self.up_axis = up_axis
        c = math.cos(math.radians(settings.lying_deg))
        self._lying_cos2_x1000 = int(c * c * 1000)
        self._motion2 = settings.motion_mg * settings.motion_mg
        self._ff2 = settings.freefall_mg * settings.freefall_mg
        self._impact2 = settings.impact_mg * settings.impact_mg
        self._g = [0, 0, 0]
        self._primed = False
        self.last_motion_ms = 0
        self.fall_at_ms = -1  # impact time of the last suspected fall, -1 if none
        self.fall_peak_mg = 0
        self._ff_count = 0
        self._ff_at = -1
        self._pre_g = (0, 0, 0)
        self._impact_at = -1
        self._peak2 = 0

    def gravity(self) -> tuple:
        return (self._g[0], self._g[1], self._g[2])

    def lying(self) -> bool:
        g = self._g
        g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
        if g2 == 0:
            return False
        up = g[self.up_axis]
        return up * up * 1000 < self._lying_cos2_x1000 * g2

    def update(self, x: int, y: int, z: int, now_ms: int, blank: bool = False) -> bool:
        """Feed one sample. Returns True once, when a fall becomes suspected. With blank set
        (the haptic motor is running) the sample cannot count as the officer's motion."""
        g = self._g
        if not self._primed:
            g[0], g[1], g[2] = x, y, z
            self._primed = True
            self.last_motion_ms = now_ms
        dx, dy, dz = x - g[0], y - g[1], z - g[2]
        if dx * dx + dy * dy + dz * dz > self._motion2 and not blank:
            self.last_motion_ms = now_ms
        g[0] += dx // 16
        g[1] += dy // 16
        g[2] += dz // 16

        a2 = x * x + y * y + z * z
        if a2 < self._ff2:
            if self._ff_count == 0:
                self._pre_g = (g[0], g[1], g[2])
            self._ff_count += 1
            if self._ff_count >= 3:
                self._ff_at = now_ms
        else:
            self._ff_count = 0
            if self._ff_at >= 0 and now_ms - self._ff_at <= 1000 and a2 > self._impact2:
                if self._impact_at < 0:
                    self._impact_at = now_ms
                    self._peak2 = a2
                elif a2 > self._peak2:
                    self._peak2 = a2
        if self._ff_at >= 0 and now_ms - self._ff_at > 1000:
            self._ff_at = -1
        if self._impact_at >= 0 and now_ms - self._impact_at >= 1500:
            impact_at = self._impact_at
            self._impact_at = -1
            self._ff_at = -1
            if self._orientation_changed() or self.lying():
                self.fall_at_ms = impact_at
                self.fall_peak_mg = int(math.sqrt(self._peak2))
                return True
        return False

    def _orientation_changed(self) -> bool:
        p = self._pre_g
        g = self._g
        dot = p[0] * g[0] + p[1] * g[1] + p[2] * g[2]
        p2 = p[0] * p[0] + p[1] * p[1] + p[2] * p[2]
        g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
        if p2 == 0 or g2 == 0:
            return True
        # angle > 45 degrees <=> cos^2 < 1/2 (or the vectors point apart)
        return dot < 0 or 2 * dot * dot < p2 * g2


class ManDown:
    """PASS-like man-down: pre-alert after prealert_ms without motion when lying or after a
    suspected fall; full alarm at alarm_ms without motion; motion or a button press during the
    pre-alert cancels it; the full alarm is latched until the officer resets it by hand.
    A device that is not worn (no skin contact: on a charger, on a desk) never pre-alerts."""

    def __init__(self, settings: SafetySettings) -> None:
        self.s = settings
        self.state = IDLE
        self.prealert_at = -1
        self.reason = 0

    def update(self, now_ms: int, last_motion_ms: int, lying: bool, worn: bool, fall_at_ms: int) -> list:
        """Advance the timers; returns a list of (event code, detail) that happened now."""
        out = []
        still_ms = now_ms - last_motion_ms
        if self.state == IDLE:
            after_fall = fall_at_ms >= 0 and now_ms - fall_at_ms <= self.s.fall_hold_ms
            if worn and (lying or after_fall) and still_ms >= self.s.prealert_ms:
                self.state = PREALERT
                self.prealert_at = now_ms
                self.reason = PREALERT_REASON_FALL if after_fall else PREALERT_REASON_LYING
                out.append((F.EVENT_PREALERT_STARTED, self.reason))
        elif self.state == PREALERT:
            if last_motion_ms > self.prealert_at:
                self.state = IDLE
                out.append((F.EVENT_PREALERT_CANCELLED, CANCEL_BY_MOTION))
            elif still_ms >= self.s.alarm_ms:
                self.state = ALARM
                out.append((F.EVENT_MANDOWN_ALARM, min(still_ms // 1000, 0xFFFF)))
        return out

    def press(self) -> list:
        """A button press: cancels a pre-alert, resets a latched alarm."""
        if self.state == PREALERT:
            self.state = IDLE
            return [(F.EVENT_PREALERT_CANCELLED, CANCEL_BY_BUTTON)]
        if self.state == ALARM:
            self.state = IDLE
            return [(F.EVENT_PREALERT_CANCELLED, CANCEL_ALARM_RESET)]
        return []


class SafetyMonitor:
    """The officer-facing behaviour of the wearable, fed by samples, button and clock.

    Call on_accel() for every accelerometer sample, on_button() with the raw button level and
    tick() every few tens of ms; take_events() returns (code, priority, detail, at_ms) tuples
    for the outbox. The haptic player says what the motor does at any time."""

    def __init__(self, settings: SafetySettings | None = None, up_axis: int = 1) -> None:
        self.settings = settings or SafetySettings()
        self.button = Button(self.settings.debounce_ms)
        self.motion = MotionMonitor(self.settings, up_axis)
        self.mandown = ManDown(self.settings)
        self.haptic = HapticPlayer()
        self.worn = True
        self._press_at = -1
        self._sos_sent = False
        self._help_until = -1
        self._message_id = -1  # the message a press would confirm (its word), -1 when none
        self._message_until = -1
        self._events: list = []

    def _emit(self, code: int, detail: int, now_ms: int) -> None:
        self._events.append((code, PRIORITY[code], detail, now_ms))

    def take_events(self) -> list:
        out = self._events
        self._events = []
        return out

    def on_accel(self, x: int, y: int, z: int, now_ms: int) -> None:
        # The motor shakes the accelerometer: its own vibration must not cancel a pre-alert.
        if self.motion.update(x, y, z, now_ms, self.haptic.level(now_ms)):
            self._emit(F.EVENT_FALL_SUSPECTED, min(self.motion.fall_peak_mg, 0xFFFF), now_ms)

    def on_button(self, raw_pressed: bool, now_ms: int) -> None:
        edge = self.button.update(raw_pressed, now_ms)
        if edge == 1:
            self._press_at = now_ms
            self._sos_sent = False
            self.motion.last_motion_ms = now_ms  # a press is a sign of life: restart the count
            cancelled = self.mandown.press()
            for code, detail in cancelled:
                self._emit(code, detail, now_ms)
            if cancelled:
                self.haptic.stop()
                self.haptic.play(PATTERN_CANCELLED, now_ms, _PRIO_TICK)
            else:
                # one press answers whatever the officer was asked to confirm
                confirmed = False
                if self._help_until >= 0 and now_ms <= self._help_until:
                    self._help_until = -1
                    self._emit(F.EVENT_HELP_CONFIRMED, 0, now_ms)
                    confirmed = True
                if self._message_id >= 0 and now_ms <= self._message_until:
                    self._emit(F.EVENT_MESSAGE_CONFIRMED, self._message_id, now_ms)
                    self._message_id = -1
                    confirmed = True
                if confirmed:
                    self.haptic.play(PATTERN_CONFIRMED, now_ms, _PRIO_TICK)
        elif edge == -1:
            self._press_at = -1
        if (self.button.pressed and not self._sos_sent and self._press_at >= 0
                and now_ms - self._press_at >= self.settings.sos_hold_ms):
            self._sos_sent = True
            self._emit(F.EVENT_SOS, 0, now_ms)
            # Felt at once, before any radio work: the officer must know the SOS is out.
            self.haptic.play(PATTERN_SOS_ACCEPTED, now_ms, _PRIO_SOS)

    def tick(self, now_ms: int) -> None:
        before = self.mandown.state
        for code, detail in self.mandown.update(
            now_ms, self.motion.last_motion_ms, self.motion.lying(), self.worn, self.motion.fall_at_ms
        ):
            self._emit(code, detail, now_ms)
        after = self.mandown.state
        if after != before:
            if after == PREALERT:
                self.haptic.play(PATTERN_PREALERT, now_ms, _PRIO_PREALERT, repeat=True)
            elif after == ALARM:
                self.haptic.play(PATTERN_ALARM, now_ms, _PRIO_ALARM, repeat=True)
            else:
                self.haptic.stop()
                self.haptic.play(PATTERN_CANCELLED, now_ms, _PRIO_TICK)
        if after == IDLE and self.motion.fall_at_ms >= 0 and now_ms - self.motion.fall_at_ms > self.settings.fall_hold_ms:
            self.motion.fall_at_ms = -1

    def help_coming(self, pattern_id: int, now_ms: int) -> None:
        """The backend says help is on the way: play the pattern, open the confirm window."""
        self.haptic.play(HELP_PATTERNS.get(pattern_id, HELP_PATTERNS[0]), now_ms, _PRIO_HELP)
        self._help_until = now_ms + self.settings.help_confirm_ms

    def message(self, kind: int, message_id: int, now_ms: int) -> bool:
        """A message from the supervisor (COMMAND_MESSAGE): play its pattern and open the confirm
        window; a press within it sends EVENT_MESSAGE_CONFIRMED with ``message_id``. A newer
        message replaces an unconfirmed one. Returns whether the pattern plays now (an alarm or
        pre-alert of the officer's own is never masked)."""
        pattern = MESSAGE_PATTERNS.get(kind)
        if pattern is None:
            raise ValueError("message kind %d" % kind)
        self._message_id = message_id & 0xFFFF
        self._message_until = now_ms + self.settings.help_confirm_ms
        return self.haptic.play(pattern, now_ms, _PRIO_HELP)
