"""SOS, man-down and fall logic, driven sample by sample at 50 Hz with time passed in."""
from firmware import frame as F
from firmware import safety as S

TICK_MS = 20  # one accelerometer sample per tick at 50 Hz


class Noise:
    """Deterministic small noise (an LCG): a still body is never perfectly still."""

    def __init__(self, seed=1):
        self.x = seed

    def mg(self, amplitude):
        self.x = (1103515245 * self.x + 12345) & 0x7FFFFFFF
        return (self.x % (2 * amplitude + 1)) - amplitude


def upright(t, n):  # arm hanging or seated: gravity along the device's +Y (up the arm)
    return (n.mg(6), 1000 + n.mg(6), n.mg(6))


def lying(t, n):  # on the back: gravity along Z
    return (n.mg(6), n.mg(6), 1000 + n.mg(6))


def walking(t, n):
    phase = (t % 500) / 500.0
    bump = 350 if phase < 0.25 else -120
    return (80 + n.mg(40), 1000 + bump + n.mg(40), 60 + n.mg(40))


class Run:
    def __init__(self, settings=None, worn=True):
        self.m = S.SafetyMonitor(settings)
        self.m.worn = worn
        self.t = 0
        self.n = Noise()
        self.events = []  # (code, priority, detail, at_ms)
        self.haptic_on_ms = []

    def go(self, ms, accel, pressed=False):
        end = self.t + ms
        while self.t < end:
            x, y, z = accel(self.t, self.n)
            self.m.on_accel(x, y, z, self.t)
            self.m.on_button(pressed, self.t)
            self.m.tick(self.t)
            if self.m.haptic.level(self.t):
                self.haptic_on_ms.append(self.t)
            self.events.extend(self.m.take_events())
            self.t += TICK_MS
        return self

    def codes(self):
        return [e[0] for e in self.events]

    def first(self, code):
        for e in self.events:
            if e[0] == code:
                return e
        return None


def test_sos_needs_a_two_second_hold_and_buzzes_at_once():
    r = Run().go(2000, upright)
    r.go(1900, upright, pressed=True)
    assert F.EVENT_SOS not in r.codes()  # 1.9 s is not an SOS
    r.go(400, upright, pressed=True)
    sos = r.first(F.EVENT_SOS)
    assert sos is not None and sos[1] == 1
    held_ms = sos[3] - 2000
    assert 2000 <= held_ms <= 2000 + 30 + 2 * TICK_MS  # hold + debounce + one tick
    assert sos[3] in r.haptic_on_ms  # the motor starts in the very tick the SOS is raised
    r.go(5000, upright, pressed=True)
    assert r.codes().count(F.EVENT_SOS) == 1  # one SOS per press, however long
    r.go(500, upright).go(2100, upright, pressed=True)
    assert r.codes().count(F.EVENT_SOS) == 2


def test_short_presses_and_bounces_are_not_sos():
    r = Run().go(1000, upright)
    for _ in range(20):
        r.go(20, upright, pressed=True).go(20, upright)
    r.go(1500, upright, pressed=True).go(1000, upright)
    assert F.EVENT_SOS not in r.codes()


def test_lying_still_prealerts_at_20_s_and_alarms_at_30_s():
    r = Run().go(3000, walking)
    last_motion = r.m.motion.last_motion_ms
    r.go(40000, lying)
    pre = r.first(F.EVENT_PREALERT_STARTED)
    alarm = r.first(F.EVENT_MANDOWN_ALARM)
    # lying down is itself motion; the still time counts from the last movement
    still_from = r.m.motion.last_motion_ms
    assert still_from >= last_motion
    assert pre is not None and alarm is not None
    assert 20000 <= pre[3] - still_from <= 20000 + TICK_MS
    assert pre[2] == S.PREALERT_REASON_LYING
    assert 30000 <= alarm[3] - still_from <= 30000 + TICK_MS
    assert alarm[1] == 1 and alarm[2] == 30
    assert r.m.mandown.state == S.ALARM
    assert any(pre[3] <= t < alarm[3] for t in r.haptic_on_ms)  # the pre-alert vibrates


def test_sitting_still_for_minutes_never_pages_anyone():
    r = Run().go(2000, walking).go(180000, upright)
    assert r.codes() == []


def test_a_device_on_the_charger_never_prealerts():
    r = Run(worn=False).go(2000, walking).go(60000, lying)
    assert r.codes() == []


def test_button_press_during_prealert_cancels_it():
    r = Run().go(1000, walking).go(21000, lying)
    assert r.m.mandown.state == S.PREALERT
    r.go(100, lying, pressed=True).go(200, lying)
    cancel = r.first(F.EVENT_PREALERT_CANCELLED)
    assert cancel is not None and cancel[2] == S.CANCEL_BY_BUTTON
    r.go(12000, lying)
    assert F.EVENT_MANDOWN_ALARM not in r.codes()
    assert F.EVENT_SOS not in r.codes()


def test_motion_during_prealert_cancels_it_but_not_the_motor_itself():
    r = Run().go(1000, walking).go(21000, lying)
    assert r.m.mandown.state == S.PREALERT

    def lying_with_motor_buzz(t, n):  # the ERM shakes the device by ~150 mg while on
        x, y, z = lying(t, n)
        if r.m.haptic.level(t):
            return (x + 150 * (1 if (t // 20) % 2 else -1), y, z)
        return (x, y, z)

    r.go(5000, lying_with_motor_buzz)
    assert r.m.mandown.state == S.PREALERT  # its own vibration is not the officer moving
    r.go(1000, walking)
    cancel = r.first(F.EVENT_PREALERT_CANCELLED)
    assert cancel is not None and cancel[2] == S.CANCEL_BY_MOTION
    assert r.m.mandown.state == S.IDLE


def test_full_alarm_is_latched_until_reset_by_hand():
    r = Run().go(1000, walking).go(31000, lying)
    assert r.m.mandown.state == S.ALARM
    r.go(3000, walking)
    assert r.m.mandown.state == S.ALARM  # motion does not clear a full alarm
    r.go(100, walking, pressed=True).go(100, walking)
    assert r.m.mandown.state == S.IDLE
    assert r.events[-1][0] == F.EVENT_PREALERT_CANCELLED and r.events[-1][2] == S.CANCEL_ALARM_RESET


def _fall(t0):
    def accel(t, n):
        dt = t - t0
        if dt < 0:
            return walking(t, n)
        if dt < 400:  # free fall
            return (n.mg(30), 120 + n.mg(30), n.mg(30))
        if dt < 480:  # impact
            return (1500, 2500, 4200)
        return lying(t, n)
    return accel


def test_fall_is_suspected_and_arms_the_man_down_timer():
    r = Run().go(3000, walking)
    r.go(4000, _fall(3000))
    fall = r.first(F.EVENT_FALL_SUSPECTED)
    assert fall is not None and fall[1] == 2
    assert 3400 + 1500 <= fall[3] <= 3400 + 1500 + 200
    assert fall[2] > 4000  # peak impact in mg
    r.go(25000, lying)
    pre = r.first(F.EVENT_PREALERT_STARTED)
    assert pre is not None and pre[2] == S.PREALERT_REASON_FALL


def test_fall_then_still_while_upright_still_prealerts():
    def fall_upright(t, n):
        dt = t - 3000
        if 0 <= dt < 400:
            return (n.mg(30), 100, n.mg(30))
        if 400 <= dt < 480:
            return (3000, 2000, 3500)
        if dt >= 480:  # slumped against a wall: trunk tilted ~50 degrees
            return (760 + n.mg(5), 640 + n.mg(5), n.mg(5))
        return walking(t, n)

    r = Run().go(3000, walking).go(26000, fall_upright)
    assert F.EVENT_FALL_SUSPECTED in r.codes()
    assert F.EVENT_PREALERT_STARTED in r.codes()


def test_jumping_and_sitting_down_hard_are_not_falls():
    def jump(t, n):
        dt = t % 3000
        if dt < 200:
            return (0, 200, 0)  # short airborne phase (< 3 samples below threshold? no: 10)
        if dt < 260:
            return (0, 2800, 0)  # landing, upright
        return upright(t, n)

    r = Run().go(12000, jump)
    assert F.EVENT_FALL_SUSPECTED not in r.codes()  # landing upright: no orientation change


def test_timings_are_configurable():
    s = S.SafetySettings(sos_hold_ms=1000, prealert_ms=10000, alarm_ms=15000)
    r = Run(s).go(1000, walking).go(16000, lying)
    still_from = r.m.motion.last_motion_ms
    pre = r.first(F.EVENT_PREALERT_STARTED)
    alarm = r.first(F.EVENT_MANDOWN_ALARM)
    assert 10000 <= pre[3] - still_from <= 10000 + TICK_MS
    assert 15000 <= alarm[3] - still_from <= 15000 + TICK_MS
    r2 = Run(s).go(500, upright).go(1100, upright, pressed=True)
    assert F.EVENT_SOS in r2.codes()


def test_bad_settings_are_refused():
    from fw_portable_helpers import raises

    raises(ValueError, S.SafetySettings, prealert_ms=30000, alarm_ms=20000)
    raises(ValueError, S.SafetySettings, sos_hold_ms=100)


def test_help_coming_plays_and_a_press_confirms():
    r = Run().go(1000, upright)
    r.m.help_coming(0, r.t)
    start = r.t
    r.go(1500, upright)
    assert any(start <= t < start + 1500 for t in r.haptic_on_ms)
    r.go(100, upright, pressed=True).go(100, upright)
    assert r.first(F.EVENT_HELP_CONFIRMED) is not None


def test_haptic_player_patterns_and_priorities():
    h = S.HapticPlayer()
    h.play((100, 50, 100), 0)
    assert h.level(0) and h.level(99) and not h.level(100) and h.level(150) and not h.level(250)
    assert not h.active(300)
    h.play(S.PATTERN_ALARM, 1000, 4, repeat=True)
    assert not h.play(S.PATTERN_CONFIRMED, 1100, 0)  # a tick never masks an alarm
    assert h.level(1000 + 1000 * 7 + 10)  # still repeating
