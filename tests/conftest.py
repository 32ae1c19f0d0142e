"""Session-wide fixtures: the real Kafka broker (tests/support/kafka.py)."""

pytest_plugins = ["tests.support.kafka"]

# PostgreSQL: a private server per test session and a fresh database per test (tests/support/postgres.py).
pytest_plugins = [*pytest_plugins, "tests.support.postgres"]
