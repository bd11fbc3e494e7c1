"""Tools for one machine, apart from the service: private Mosquitto and PostgreSQL (``infra``)
and the demo that runs the whole system with simulated officers (``demo``)."""
