"""Sensor drivers: the bus is passed in, the chip is identified in __init__, readings come out
in physical units."""
