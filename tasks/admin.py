"""Admin for the platform's own tables. Schedules and monitoring register from their modules."""
