"""The HTTP sink in SOAP mode against a real HTTP server on 127.0.0.1 that answers with faults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import xmltodict
from pydantic import ValidationError

from syncbus.errors import DeliveryError
from syncbus.formats import XmlCodec
from syncbus.sinks.base import Delivery
from syncbus.sinks.http import HttpSink, HttpSinkConfig
from syncbus.sinks.retry import DeliveryFailed
from syncbus.sinks.soap import SOAP11_NS, SOAP12_NS, SoapFaultError, parse_fault
from tests.sinks.target_server import Reply, TargetServer

MakeDelivery = Callable[..., Delivery]
ORDER = {"VBELN": "4711", "KUNNR": "100042", "NAME": "上海贸易有限公司"}
ACTION = "urn:sap-com:document:sap:rfc:functions:ZSD_ORDER_CREATE"


def order(make_delivery: MakeDelivery, encoding: str = "utf-8", **more: Any) -> Delivery:
    codec = XmlCodec(root="ORDERS05", encoding=encoding)
    content_type = "application/xml" if encoding == "utf-8" else f"application/xml; charset={encoding}"
    return make_delivery(body=codec.encode(ORDER), content_type=content_type, payload=ORDER, **more)


def fault11(code: str, reason: str = "Kunde 100042 ist gesperrt", prefix: str = "soap") -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>'
            f'<{prefix}:Envelope xmlns:{prefix}="{SOAP11_NS}"><{prefix}:Body><{prefix}:Fault>'
            f"<faultcode>{code}</faultcode><faultstring>{reason}</faultstring>"
            f"<detail><e:Info xmlns:e='urn:erp'>KUNNR</e:Info></detail>"
            f"</{prefix}:Fault></{prefix}:Body></{prefix}:Envelope>")


def fault12(code: str, reason: str = "Auftrag abgelehnt", subcode: str | None = None) -> str:
    sub = (f"<env:Subcode><env:Value>{subcode}</env:Value></env:Subcode>" if subcode else "")
    return (f'<env:Envelope xmlns:env="{SOAP12_NS}" xmlns:m="urn:erp:faults"><env:Body><env:Fault>'
            f"<env:Code><env:Value>{code}</env:Value>{sub}</env:Code>"
            f'<env:Reason><env:Text xml:lang="de">{reason}</env:Text>'
            f'<env:Text xml:lang="en">order rejected</env:Text></env:Reason>'
            f"</env:Fault></env:Body></env:Envelope>")


def soap_sink(url: str, version: str = "1.1", action: str | None = ACTION, **options: Any) -> HttpSink:
    soap: dict[str, Any] = {"version": version}
    if action is not None:
        soap["action"] = action
    config: dict[str, Any] = {"name": "erp-soap", "type": "http", "url": url, "soap": soap,
                              "retry": {"attempts": 3, "initial": "10ms", "max": "20ms"}, "timeout": "2s"}
    config.update(options)
    return HttpSink(config)


@pytest.fixture
async def open_sink(target: TargetServer) -> AsyncIterator[Callable[..., HttpSink]]:
    sinks: list[HttpSink] = []

    def make(version: str = "1.1", **options: Any) -> HttpSink:
        sink = soap_sink(target.url_for("/sap/bc/srt/orders"), version, **options)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


# ---------------------------------------------------------------------- the request


async def test_soap11_envelope_and_headers(target: TargetServer, open_sink, make_delivery) -> None:
    await open_sink("1.1").send(order(make_delivery))
    (req,) = target.requests
    assert req.headers["content-type"] == "text/xml; charset=utf-8"
    assert req.headers["soapaction"] == f'"{ACTION}"'
    assert req.headers["idempotency-key"] == "crm-to-erp:order-42:rec-1"  # the syncbus headers stay
    assert req.body.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<soap:Envelope')
    assert req.body.count(b"<?xml") == 1  # the record's own declaration is gone
    envelope = xmltodict.parse(req.body, process_namespaces=True)[f"{SOAP11_NS}:Envelope"]
    assert envelope[f"{SOAP11_NS}:Body"] == {"ORDERS05": ORDER}


async def test_soap12_content_type_carries_the_action(target: TargetServer, open_sink, make_delivery) -> None:
    await open_sink("1.2").send(order(make_delivery))
    await open_sink("1.2", action=None).send(order(make_delivery))
    with_action, without = target.requests
    assert with_action.headers["content-type"] == f'application/soap+xml; charset=utf-8; action="{ACTION}"'
    assert without.headers["content-type"] == "application/soap+xml; charset=utf-8"
    assert "soapaction" not in with_action.headers
    parsed = xmltodict.parse(with_action.body, process_namespaces=True)
    assert parsed[f"{SOAP12_NS}:Envelope"][f"{SOAP12_NS}:Body"]["ORDERS05"] == ORDER


async def test_soap11_without_action_sends_an_empty_soapaction(target: TargetServer, open_sink,
                                                               make_delivery) -> None:
    await open_sink("1.1", action=None).send(order(make_delivery))
    assert target.requests[0].headers["soapaction"] == '""'


async def test_a_gbk_document_is_sent_as_utf8(target: TargetServer, open_sink, make_delivery) -> None:
    delivery = order(make_delivery, encoding="gbk")
    assert "上海".encode("gbk") in delivery.body
    await open_sink().send(delivery)
    body = target.requests[0].body
    assert "上海贸易有限公司".encode() in body and b"gbk" not in body
    assert xmltodict.parse(body)["soap:Envelope"]["soap:Body"]["ORDERS05"]["NAME"] == "上海贸易有限公司"


async def test_a_json_body_is_refused_without_a_request(target: TargetServer, open_sink, make_delivery) -> None:
    with pytest.raises(DeliveryError, match=r"erp-soap: soap needs an XML body .* not application/json") as info:
        await open_sink().send(make_delivery())
    assert not info.value.retryable
    assert target.requests == []


def test_config() -> None:
    base = {"name": "s", "type": "http", "url": "https://erp.example/soap"}
    assert HttpSinkConfig.model_validate({**base, "soap": {"version": 1.2}}).soap.version == "1.2"  # YAML float
    assert HttpSinkConfig.model_validate({**base, "soap": {}}).soap.version == "1.1"
    with pytest.raises(ValidationError, match="version"):
        HttpSinkConfig.model_validate({**base, "soap": {"version": "2.0"}})
    with pytest.raises(ValidationError, match="action must be printable ASCII"):
        HttpSinkConfig.model_validate({**base, "soap": {"action": 'urn:a"b'}})
    with pytest.raises(ValidationError, match=r"verison\s+Extra inputs are not permitted"):
        HttpSinkConfig.model_validate({**base, "soap": {"verison": "1.1"}})


# ---------------------------------------------------------------------- faults


@pytest.mark.parametrize(("version", "body", "retryable", "kind"), [
    ("1.1", fault11("soap:Client"), False, "Client"),
    ("1.1", fault11("soap:Client.Authentication"), False, "Client"),
    ("1.1", fault11("soap:Server"), True, "Server"),
    ("1.1", fault11("SOAP-ENV:Server.Busy", prefix="SOAP-ENV"), True, "Server"),
    ("1.1", fault11("soap:VersionMismatch"), False, "VersionMismatch"),
    ("1.1", fault11("soap:MustUnderstand"), False, "MustUnderstand"),
    ("1.1", fault11("Client"), False, "Client"),  # unqualified, as sloppy stacks write it
    ("1.2", fault12("env:Sender", subcode="m:InvalidOrder"), False, "Sender"),
    ("1.2", fault12("env:Receiver", subcode="m:Timeout"), True, "Receiver"),
    ("1.2", fault12("env:DataEncodingUnknown"), False, "DataEncodingUnknown"),
])
async def test_http_500_with_a_fault_is_classified_by_the_fault(
        target: TargetServer, open_sink, make_delivery, version: str, body: str, retryable: bool,
        kind: str) -> None:
    target.script(Reply(500, body, {"Content-Type": "text/xml; charset=utf-8"}))
    with pytest.raises(SoapFaultError) as info:
        await open_sink(version).send(order(make_delivery))
    err = info.value
    assert isinstance(err, DeliveryError)
    assert (err.retryable, err.status, err.fault.kind, err.fault.version) == (retryable, 500, kind, version)
    assert str(err).startswith(f"SOAP fault from {target.url}/sap/bc/srt/orders (HTTP 500): ")


async def test_fault_message_names_code_subcode_and_reason(target: TargetServer, open_sink, make_delivery) -> None:
    target.script(Reply(500, fault12("env:Sender", "Kunde gesperrt", "m:Blocked"), {"Content-Type":
                                                                                   "application/soap+xml"}))
    with pytest.raises(SoapFaultError) as info:
        await open_sink("1.2").send(order(make_delivery))
    assert str(info.value) == (f"SOAP fault from {target.url}/sap/bc/srt/orders (HTTP 500): "
                               "env:Sender [m:Blocked]: Kunde gesperrt")


async def test_client_fault_on_500_is_dead_lettered_after_one_try(target: TargetServer, open_sink,
                                                                  make_delivery) -> None:
    target.set_default(Reply(500, fault11("soap:Client"), {"Content-Type": "text/xml"}))
    sink = open_sink()
    with pytest.raises(DeliveryFailed) as info:
        await sink.retry.run(lambda: sink.send(order(make_delivery)))
    assert info.value.permanent and info.value.attempts == 1
    assert len(target.requests) == 1


async def test_server_fault_is_retried_until_it_succeeds(target: TargetServer, open_sink, make_delivery) -> None:
    server_fault = Reply(500, fault11("soap:Server", "DB lock"), {"Content-Type": "text/xml"})
    target.script(server_fault, server_fault, Reply(200, "<ok/>"))
    sink = open_sink()
    assert await sink.retry.run(lambda: sink.send(order(make_delivery))) == 3
    assert [r.status for r in target.requests] == [500, 500, 200]


async def test_a_fault_with_http_200_is_not_delivered(target: TargetServer, open_sink, make_delivery) -> None:
    target.script(Reply(200, fault11("soap:Client"), {"Content-Type": "text/xml"}))
    with pytest.raises(SoapFaultError) as info:
        await open_sink().send(order(make_delivery))
    assert not info.value.retryable and info.value.status == 200


async def test_an_application_fault_code_falls_back_on_the_status(target: TargetServer, open_sink,
                                                                  make_delivery) -> None:
    app = fault11("e:OrderLocked").replace("<soap:Fault>", "<soap:Fault xmlns:e='urn:erp'>")
    target.script(Reply(500, app), Reply(400, app))
    sink = open_sink()
    with pytest.raises(SoapFaultError) as first:
        await sink.send(order(make_delivery))
    with pytest.raises(SoapFaultError) as second:
        await sink.send(order(make_delivery))
    assert first.value.fault.kind is None
    assert (first.value.retryable, second.value.retryable) == (True, False)


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (400, False), (404, False)])
async def test_an_answer_without_a_fault_is_classified_by_status(
        target: TargetServer, open_sink, make_delivery, status: int, retryable: bool) -> None:
    target.script(Reply(status, "<html><body>Fault tolerance is down</body></html>"))
    with pytest.raises(DeliveryError) as info:
        await open_sink().send(order(make_delivery))
    assert not isinstance(info.value, SoapFaultError)
    assert (info.value.retryable, info.value.status) == (retryable, status)


async def test_a_hostile_fault_is_not_expanded(target: TargetServer, open_sink, make_delivery) -> None:
    """A billion-laughs answer must not be parsed with entities: judged by status, not by its text."""
    bomb = ('<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "Client"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            f'<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><soap:Fault>'
            "<faultcode>soap:&a;</faultcode><faultstring>&b;</faultstring></soap:Fault></soap:Body></soap:Envelope>")
    xxe = ('<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           f'<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><soap:Fault>'
           "<faultcode>soap:Client</faultcode><faultstring>&x;</faultstring></soap:Fault></soap:Body>"
           "</soap:Envelope>")
    target.script(Reply(500, bomb), Reply(500, xxe))
    sink = open_sink()
    for _ in range(2):
        with pytest.raises(DeliveryError) as info:
            await sink.send(order(make_delivery))
        assert not isinstance(info.value, SoapFaultError)
        assert info.value.retryable  # plain HTTP 500: the entity-declared "Client" was never read
        assert "root:" not in str(info.value)


def test_parse_fault_ignores_what_is_not_a_soap_fault() -> None:
    assert parse_fault(b"") is None
    assert parse_fault(b"<ok/>") is None
    assert parse_fault(b"<Fault><faultcode>Client</faultcode></Fault>") is None  # no envelope
    assert parse_fault(b"<soap:Envelope xmlns:soap='urn:other'><soap:Body><soap:Fault/></soap:Body>"
                       b"</soap:Envelope>") is None  # not a SOAP namespace
    assert parse_fault(fault11("soap:Client").encode()[:-20]) is None  # truncated
    envelope = f'<s:Envelope xmlns:s="{SOAP11_NS}"><s:Body><r>no Fault here</r></s:Body></s:Envelope>'
    assert parse_fault(envelope.encode()) is None


def test_parse_fault_reads_gbk_and_default_namespaces() -> None:
    gbk = ('<?xml version="1.0" encoding="GBK"?>' + fault11("soap:Client", "客户已冻结")[38:]).encode("gbk")
    fault = parse_fault(gbk, "text/xml; charset=gbk")
    assert fault is not None and (fault.kind, fault.reason) == ("Client", "客户已冻结")
    default_ns = (f'<Envelope xmlns="{SOAP12_NS}"><Body><Fault><Code><Value>Receiver</Value></Code>'
                  "<Reason><Text>busy</Text></Reason></Fault></Body></Envelope>")
    fault = parse_fault(default_ns.encode())
    assert fault is not None and (fault.version, fault.kind, fault.retryable) == ("1.2", "Receiver", True)


def _resolve_env(block: Any) -> Any:
    """An example as the config loader hands it over: every `x_env: VAR` replaced by `x: <value>`."""
    if isinstance(block, dict):
        out: dict[str, Any] = {}
        for key, value in block.items():
            if key.endswith("_env"):
                out[key.removesuffix("_env")] = "https://erp.example/x" if "url" in key else "value"
            else:
                out[key] = _resolve_env(value)
        return out
    return block


def test_the_http_spec_describes_every_option_and_its_examples_validate() -> None:
    assert all(f.description for f in HttpSinkConfig.model_fields.values())
    assert HttpSinkConfig.model_json_schema()["properties"]["soap"]
    examples = HttpSink.examples
    assert any("soap" in example for example in examples)
    for example in examples:
        HttpSinkConfig.model_validate(_resolve_env(example))
