"""Log output (syncbus/logs.py): JSON lines on request, masked fields, no payloads, library loggers included.

The formatters are checked through real loggers writing to a stream; the
whole thing through a real ``syncbus run --log-format json`` whose log file
must hold nothing but JSON objects, uvicorn's lines and the start banner
included.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncbus.logs import MASK, OMITTED, JsonFormatter, LogSetupError, Masker, TextFormatter, configure
from tests.e2e.harness import ADMIN_KEY, Node, wait_until, write_config


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() rewires the root logger and uvicorn's: put them back for the other tests."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn = logging.getLogger("uvicorn")
    saved_uvicorn = (list(uvicorn.handlers), uvicorn.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    uvicorn.handlers[:] = saved_uvicorn[0]
    uvicorn.propagate = saved_uvicorn[1]
    logging.captureWarnings(False)


def emit(formatter: logging.Formatter, msg: str, *args: Any, exc: BaseException | None = None,
         **extra: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("syncbus.test.logs")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(msg, *args, extra=extra)
        else:
            logger.warning(msg, *args, extra=extra)
    finally:
        logger.handlers.clear()
    return stream.getvalue()


def test_json_line_has_the_fixed_fields_and_the_extras() -> None:
    out = emit(JsonFormatter(), "route %s: %d records", "crm-to-erp", 3, route="crm-to-erp", record_id="r-1")
    assert out.endswith("\n") and out.count("\n") == 1
    line = json.loads(out)
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert line["level"] == "WARNING" and line["logger"] == "syncbus.test.logs"
    assert line["message"] == "route crm-to-erp: 3 records"
    assert line["route"] == "crm-to-erp" and line["record_id"] == "r-1"
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_json_exception_stays_on_one_line() -> None:
    out = emit(JsonFormatter(), "failed", exc=ValueError("bad\nthing"))
    assert out.count("\n") == 1
    line = json.loads(out)
    assert "Traceback" in line["exception"] and "ValueError: bad" in line["exception"]


def test_configured_keys_are_masked_in_extras_and_in_the_message() -> None:
    masker = Masker(["phone", "id_card"])
    out = json.loads(emit(JsonFormatter(masker),
                          'customer phone=13812345678, id_card: 110101199003077777 "phone": "139 0000 1111" '
                          "telephone=keep phone_number=keep",
                          phone="13812345678", customer={"id_card": "110101199003077777", "name": "Li"}))
    assert out["message"] == (f'customer phone={MASK}, id_card: {MASK} "phone": "{MASK}" '
                              "telephone=keep phone_number=keep")
    assert out["phone"] == MASK
    assert out["customer"] == {"id_card": MASK, "name": "Li"}
    assert "13812345678" not in json.dumps(out) and "110101199003077777" not in json.dumps(out)


def test_payloads_are_not_logged_unless_asked_for() -> None:
    body = {"order_id": "SO-1", "amount": 10}
    out = json.loads(emit(JsonFormatter(Masker.from_env({})), "delivered", payload=body, route="r"))
    assert out["payload"] == OMITTED and out["route"] == "r"
    allowed = Masker.from_env({"SYNCBUS_LOG_PAYLOADS": "1", "SYNCBUS_LOG_MASK": "amount"})
    out = json.loads(emit(JsonFormatter(allowed), "delivered", payload=body))
    assert out["payload"] == {"order_id": "SO-1", "amount": MASK}


def test_text_format_masks_too_and_appends_extras() -> None:
    out = emit(TextFormatter(Masker(["phone"])), "call phone=13812345678 now", route="r1", phone="1")
    assert "phone=***" in out and "13812345678" not in out
    assert out.rstrip().endswith("[route=r1 phone=***]")


def test_configure_replaces_handlers_and_refuses_unknown_settings(restore_logging: None) -> None:
    stream = io.StringIO()
    configure("json", "info", env={"SYNCBUS_LOG_MASK": "phone"}, stream=stream)
    configure("json", "info", env={"SYNCBUS_LOG_MASK": "phone"}, stream=stream)  # twice: still one handler
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("aiokafka.conn").warning("Unable connect to node phone=1")
    logging.getLogger("aiokafka.conn").info("metadata refreshed")  # the chatty library stays at WARNING
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [("aiokafka.conn", "Unable connect to node phone=***")]
    with pytest.raises(LogSetupError, match="unknown log format 'yaml'"):
        configure("yaml", "info")
    with pytest.raises(LogSetupError, match="unknown log level"):
        configure("json", "loud")


# --------------------------------------------------------------------------- a real node


@pytest.fixture
def json_node(tmp_path: Path) -> Iterator[Node]:
    cfg = write_config(tmp_path / "config", "http://127.0.0.1:9/nowhere")

    class JsonNode(Node):
        def env(self) -> dict[str, str]:
            return {**super().env(), "SYNCBUS_LOG_FORMAT": "json", "SYNCBUS_LOG_MASK": "phone"}

    node = JsonNode(cfg, f"embedded://{tmp_path}/bus.db", f"sqlite:///{tmp_path}/store.db",
                    extra_args=["--log-level", "info"]).start()
    # /readyz answers once worker 0 listens; the start-up line once every worker does
    wait_until(lambda: "routes, bus " in node.tail(200), timeout=60, what="every worker started")
    yield node
    assert node.stop() == 0, node.tail()


def test_a_running_node_logs_only_json(json_node: Node) -> None:
    r = httpx.post(f"{json_node.url}/admin/reload", timeout=30,
                   headers={"X-API-Key": ADMIN_KEY, "X-Actor": "phone=13812345678"})
    assert r.status_code == 200, r.text
    assert json_node.log is not None
    wait_until(lambda: "POST /admin/reload by" in json_node.log.read_text("utf-8"), what="the reload logged")
    lines = [json.loads(line) for line in json_node.log.read_text("utf-8").splitlines()]  # all JSON, or it fails
    assert all("color_message" not in x for x in lines)  # uvicorn's coloured duplicate of the message
    by_logger = {x["logger"].split(".")[0] for x in lines}
    assert {"syncbus", "uvicorn"} <= by_logger, by_logger
    assert any(x["message"].startswith("syncbus: 1 routes, bus embedded://") for x in lines)  # the banner
    reload = next(x for x in lines if x["logger"] == "syncbus.reload" and x["trigger"] == "POST /admin/reload")
    assert reload["actor"] == f"admin (for phone={MASK})" and "13812345678" not in json.dumps(lines)


def test_an_unknown_log_format_is_one_line_and_exit_1(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "config", "http://127.0.0.1:9/nowhere")
    node = Node(cfg, f"embedded://{tmp_path}/bus.db", f"sqlite:///{tmp_path}/store.db",
                extra_args=["--log-format", "xml"])
    with pytest.raises(RuntimeError, match="unknown log format 'xml'"):
        node.start(timeout=30)
