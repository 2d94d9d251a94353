"""Monitoring: health checks, metrics, queue stats, the platform status page and its admin site."""
