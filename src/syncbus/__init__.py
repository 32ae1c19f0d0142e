"""syncbus: a lightweight enterprise service bus.

Records arrive from connectors, travel over a bus (Kafka or an embedded SQLite
log), are mapped by declarative YAML routes and delivered by retrying sinks;
what cannot be delivered becomes a dead letter that can be replayed.
"""

__version__ = "0.1.0"
