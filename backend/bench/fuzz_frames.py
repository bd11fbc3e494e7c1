"""Coverage-guided fuzzing of the frame decoder with atheris (libFuzzer for Python).

    python -m backend.bench.fuzz_frames -runs=1000000 [corpus_dir]

Three targets in one: the raw bytes as a frame (header parse, tag check), the bytes as a payload
of every frame type (the decoders behind a valid tag), and the bytes sealed with the device key
and opened again (so the decoders see arbitrary authenticated payloads). The only exception
allowed to escape is FrameError; anything else is a crash that libFuzzer reports with its input.
Run through ``vigil bench fuzz``, which seeds the corpus with the golden vectors and prints the
count."""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from firmware import frame as F

KEYS = F.DeviceKeys(bytes(range(32)))
TYPES = tuple(F.TYPE_NAMES)


def one_input(data: bytes) -> None:
    try:
        header, payload = F.open_frame(data, KEYS)
        F.decode_payload(header.frame_type, payload)
    except F.FrameError:
        pass
    if data:
        frame_type = TYPES[data[0] % len(TYPES)]
        body = data[1:F.MAX_PAYLOAD_LEN + 1]
        try:
            F.decode_payload(frame_type, body)
        except F.FrameError:
            pass
        try:
            sealed = F.seal(KEYS, frame_type, 7, len(data), 1, body, flags=data[0] & 0x07)
            header, payload = F.open_frame(sealed, KEYS)
            assert payload == body, "sealed payload did not round-trip"
            F.decode_payload(header.frame_type, payload)
        except F.FrameError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
