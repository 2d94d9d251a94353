"""The task platform: messages, bus, outbox, delivery, reliability and monitoring.

Nothing here knows of the marketplace (or any other domain app).
"""
