"""Seeded city simulation: drivers, traffic, imperfect phones and customers, against the running platform.

The simulator reaches the system only through its public HTTP, MQTT and WebSocket
interfaces (ARCHITECTURE.md): it signs in as an admin, creates its depot, zone, vehicles
and drivers through `/v1/admin/*`, places orders like customers do, and drives its vans
like drivers do. What really happened (true positions, true arrival times) is logged
apart from what the platform sees, so the grade can compare the two.
"""
