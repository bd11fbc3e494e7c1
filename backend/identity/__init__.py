"""Who and what may talk to Vigil: people and their tokens (``auth``, ``security``), the fleet of
officers, devices and assignments (``fleet``), and gateways' broker credentials (``broker``)."""
