"""Reliability: the deliver task, ``PlatformTask`` and its retries, dead letters and requeue, the
re-send sweeper. Other apps import the front ``tasks.jobs``."""
