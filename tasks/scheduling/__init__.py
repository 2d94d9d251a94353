"""Scheduling: declared schedules, the Beat scheduler (lease, mirror, entry, policies), the
history of schedule changes and the schedule admin. Other apps import the front ``tasks.jobs``."""
