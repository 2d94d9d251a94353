"""Fixtures for the reliability tests."""

import pytest


@pytest.fixture
def quick_confirmation(settings):
    """The sweeper's second look at the broker a moment after the first (production waits 3 s)."""
    settings.DELIVERY_LOST_CONFIRM_AFTER = 0.05
