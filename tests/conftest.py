"""Session-wide fixtures: the real Kafka broker (tests/support/kafka.py)."""

pytest_plugins = ["tests.support.kafka"]
