"""A test-only app: a ledger of side effects, to count what ran and what ran twice.

Installed through ``EXTRA_INSTALLED_APPS`` (tests/environment.py), so worker subprocesses
started by tests load it too.
"""
