"""A test app that makes every process (tests, relay, consumers) know the streamed test message."""
