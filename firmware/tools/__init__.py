"""Host-side tools for the wearable (CPython only, never deployed): provisioning, checks,
chip emulators, waveforms, pin map and power budget."""
