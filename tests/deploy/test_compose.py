"""deploy/docker-compose.yml and deploy/Dockerfile: structure checked in Python always, and
`docker compose config -q` (or docker-compose 1.x) where available. No container is started."""

from __future__ import annotations

import shutil

import pytest

from .helpers import COMPOSE, DEPLOY, DOCKERFILE, load_yaml, run

SERVICES = {"kafka", "syncbus", "prometheus", "alertmanager", "grafana"}


def compose() -> dict:
    return load_yaml(COMPOSE)


def test_services() -> None:
    assert set(compose()["services"]) >= SERVICES


def test_kafka_is_kraft() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "healthcheck" in kafka


def test_syncbus_is_built_and_runs_on_kafka() -> None:
    syncbus = compose()["services"]["syncbus"]
    assert syncbus["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert syncbus["command"] == ["run", "--bus", "kafka://kafka:9092", "--host", "0.0.0.0"]
    assert syncbus["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert any(p.endswith(":8080") for p in syncbus["ports"])


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert "RUN pip install ." in lines
    assert 'ENTRYPOINT ["syncbus"]' in lines
    assert 'CMD ["run", "--bus", "kafka://kafka:9092", "--host", "0.0.0.0"]' in lines
    for line in lines:
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (DEPLOY.parent / src).exists(), f"{line}: {src} missing"


def test_prometheus_alertmanager_grafana_get_our_files() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert any(c.startswith("--storage.tsdb.retention.time=") for c in prometheus["command"])
    alertmanager_config = "./alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
    assert alertmanager_config in services["alertmanager"]["volumes"]
    prom_config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    assert prom_config["rule_files"] == ["rules/*.yml"]
    targets = [t for job in prom_config["scrape_configs"] if job["job_name"] == "syncbus"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["syncbus:8080"]
    assert prom_config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_bind_mounts_and_secrets_exist() -> None:
    data = compose()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in data["volumes"], f"{name}: named volume {source} not declared"
    secret = data["secrets"]["smtp_password"]["file"]
    default = secret.split(":-", 1)[1].rstrip("}") if ":-" in secret else secret
    assert (DEPLOY / default).exists()


def test_no_published_port_listens_beyond_localhost() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"], timeout=60).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    return None


def test_docker_compose_config() -> None:
    """The compose implementation itself validates the file (no daemon, no containers)."""
    command = _compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed; structure checked above")
    got = run([*command, "-f", str(COMPOSE), "config", "-q"], timeout=120, cwd=DEPLOY)
    assert got.returncode == 0, got.stdout + got.stderr
