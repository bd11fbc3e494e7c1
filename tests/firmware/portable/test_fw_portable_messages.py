"""Messages from the supervisor on the wearable (COMMAND_MESSAGE): each kind plays its own
pattern, a press confirms it with the message's id, and the officer's own alarm is never masked.
Runs under CPython and MicroPython (tests/firmware/test_fw_micropython.py)."""
from firmware import frame as F
from firmware import safety as S
from fw_portable_helpers import raises
from test_fw_portable_safety import Run, lying, upright


def _on_off(run, since):
    """The motor's on/off durations (ms) from ``since``, from what the run recorded each tick."""
    on = [t for t in run.haptic_on_ms if t >= since]
    spans, start, last = [], on[0], on[0]
    for t in on[1:]:
        if t != last + 20:
            spans.append(last + 20 - start)
            spans.append(t - last - 20)
            start = t
        last = t
    spans.append(last + 20 - start)
    return spans


def _felt_as(spans, pattern):
    """Sampled every 20 ms, each on or off span is the pattern's within one tick."""
    return len(spans) == len(pattern) and all(abs(a - b) <= 20 for a, b in zip(spans, pattern))


def test_every_message_has_its_own_pattern_unlike_any_other():
    assert sorted(S.MESSAGE_PATTERNS) == sorted(F.MESSAGE_NAMES)
    others = [S.PATTERN_SOS_ACCEPTED, S.PATTERN_PREALERT, S.PATTERN_ALARM, S.PATTERN_CANCELLED,
              S.PATTERN_CONFIRMED, S.HELP_PATTERNS[1]]
    seen = []
    for kind in sorted(S.MESSAGE_PATTERNS):
        p = S.MESSAGE_PATTERNS[kind]
        assert p not in seen and p not in others, F.MESSAGE_NAMES[kind]
        seen.append(p)


def test_colleague_pattern_plays_and_a_press_confirms_with_the_message_id():
    r = Run().go(1000, upright)
    start = r.t
    assert r.m.message(F.MESSAGE_COLLEAGUE_NEEDS_HELP, 0x1234, r.t)
    r.go(3000, upright)
    spans = _on_off(r, start)
    assert _felt_as(spans, S.MESSAGE_PATTERNS[F.MESSAGE_COLLEAGUE_NEEDS_HELP]), spans
    assert not _felt_as(spans, S.MESSAGE_PATTERNS[F.MESSAGE_STAY_PUT])
    assert F.EVENT_MESSAGE_CONFIRMED not in r.codes()  # nothing until the officer presses
    r.go(100, upright, pressed=True).go(100, upright)
    confirmed = r.first(F.EVENT_MESSAGE_CONFIRMED)
    assert confirmed is not None and confirmed[2] == 0x1234
    r.go(100, upright, pressed=True).go(100, upright)
    assert r.codes().count(F.EVENT_MESSAGE_CONFIRMED) == 1  # once per message


def test_a_press_after_the_window_confirms_nothing():
    s = S.SafetySettings(help_confirm_ms=2000)
    r = Run(s).go(500, upright)
    r.m.message(F.MESSAGE_CHECK_IN, 7, r.t)
    r.go(2500, upright).go(100, upright, pressed=True).go(100, upright)
    assert F.EVENT_MESSAGE_CONFIRMED not in r.codes()


def test_a_message_never_masks_the_officers_own_alarm():
    s = S.SafetySettings(prealert_ms=2000, alarm_ms=4000)
    r = Run(s).go(1000, upright).go(6000, lying)
    assert F.EVENT_MANDOWN_ALARM in r.codes()
    assert not r.m.message(F.MESSAGE_STAY_PUT, 3, r.t)
    assert r.m.haptic.pattern == S.PATTERN_ALARM


def test_unknown_message_kinds_are_refused_on_both_sides():
    raises(F.FrameError, F.encode_command, F.COMMAND_MESSAGE, 99, 1)
    raises(F.FrameError, F.decode_command, bytes([F.COMMAND_MESSAGE, 0, 1, 0]))
    raises(ValueError, S.SafetyMonitor().message, 0, 1, 0)
    assert F.decode_command(F.encode_command(F.COMMAND_MESSAGE, F.MESSAGE_ALL_CLEAR, 0xFFFF)) == (
        F.COMMAND_MESSAGE, F.MESSAGE_ALL_CLEAR, 0xFFFF)
