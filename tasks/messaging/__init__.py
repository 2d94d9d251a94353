"""Messaging: subscriptions and brokers, outbox rows, Delivery rows, the relay, broker-specific code.

Internal to the platform: other apps import the fronts ``tasks.bus`` and ``tasks.transaction``.
"""
