"""A test-only app for rolling-deploy tests: a message whose shape changed, a renamed handler,
and a handler whose worker exits. Installed (``EXTRA_INSTALLED_APPS``) in the processes that
run the new code; a worker started without it is a worker of the old release."""
