"""Evaluation of models/ on recorded public datasets (``vigil eval hr``, ``vigil eval falls``)."""
