"""Wearable firmware (MicroPython). Also importable from CPython for the shared frame codec."""
