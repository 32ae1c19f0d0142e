"""The parts of issue 12 on their own: scopes, address lists, X-Forwarded-For, masking, rate limits, JWT."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from pathlib import Path

import orjson
import pytest

from syncbus.ingress.security.ipfilter import AddressList, AddressListError, ForwardedForError, client_address
from syncbus.ingress.security.jwt import JwtConfigError, JwtVerifier, TokenRejected, looks_like_jwt
from syncbus.ingress.security.masking import HIDDEN_TEXT, MASK, UNREADABLE, Masker, mask_document
from syncbus.ingress.security.ratelimit import KeyedLimiter, RateBucket
from syncbus.ingress.security.scopes import (
    Principal,
    ScopeError,
    parse_key_scopes,
    scope_for_request,
    scopes_of,
)
from syncbus.state.models import DeadLetter, encode_value
from tests.security.jwks import AUDIENCE, ISSUER, TestIdp

# -- scopes ---------------------------------------------------------------------------------------


def test_key_scopes_parse_and_default_to_admin() -> None:
    scopes = parse_key_scopes("alice=dlq:read, bob=dlq:read+dlq:write,feeder=ingress:crm ingress:shop",
                              ["alice", "bob", "carol", "feeder"])
    assert scopes["alice"] == {"dlq:read"}
    assert scopes["feeder"] == {"ingress:crm", "ingress:shop"}
    assert scopes_of("carol", scopes) == {"admin"}          # not listed: what admin keys always could do


@pytest.mark.parametrize(("text", "message"), [
    ("mallory=dlq:read", "has no key in SYNCBUS_ADMIN_KEYS"),
    ("alice=dlq:reed", "unknown scope 'dlq:reed'"),
    ("alice=", "lists no scope"),
    ("alice", "expected name=scope"),
    ("alice=admin,alice=dlq:read", "twice"),
])
def test_key_scopes_refused(text: str, message: str) -> None:
    with pytest.raises(ScopeError, match=message):
        parse_key_scopes(text, ["alice"])


def test_principal_implications() -> None:
    reader = Principal("r", frozenset({"dlq:read"}), "key")
    writer = Principal("w", frozenset({"dlq:write"}), "key")
    boss = Principal("b", frozenset({"admin"}), "key")
    feeder = Principal("f", frozenset({"ingress:*"}), "jwt")
    assert reader.allows("dlq:read") and not reader.allows("dlq:write") and not reader.sees_personal_data
    assert writer.allows("dlq:read") and writer.sees_personal_data and not writer.allows("admin")
    assert boss.allows("dlq:write") and not boss.allows("ingress:crm")   # admin is not a licence to inject records
    assert feeder.allows("ingress:crm") and not feeder.allows("dlq:read")
    assert str(reader.actor()) == "r"


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/dlq", "dlq:read"), ("GET", "/ledger", "dlq:read"), ("POST", "/dlq/x/replay", "dlq:write"),
    ("DELETE", "/dlq/x", "dlq:write"), ("POST", "/admin/reload", "admin"),
])
def test_scope_implied_by_request(method: str, path: str, scope: str) -> None:
    assert scope_for_request(method, path) == scope


# -- address lists and X-Forwarded-For ---------------------------------------------------------------


def test_allow_list_matches_networks_and_mapped_addresses() -> None:
    allow = AddressList.from_text("10.0.0.0/8, 127.0.0.1, 2001:db8::/32", "test")
    trusted = AddressList(())
    assert allow.contains(client_address("10.2.3.4", [], trusted))
    assert allow.contains(client_address("::ffff:127.0.0.1", [], trusted))   # IPv4-mapped IPv6 is IPv4
    assert allow.contains(client_address("2001:db8::5", [], trusted))
    assert not allow.contains(client_address("127.0.0.2", [], trusted))
    assert not allow.contains(None)


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "10.0.0.0/33", "not-an-ip", "10.0.0"])
def test_allow_list_refuses_bad_entries(bad: str) -> None:
    with pytest.raises(AddressListError, match="SYNCBUS_ADMIN_ALLOW_IPS"):
        AddressList.from_text(f"127.0.0.1,{bad}", "SYNCBUS_ADMIN_ALLOW_IPS")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = AddressList.from_text("127.0.0.3,10.9.0.0/16", "proxies")
    # From a stranger: the header is ignored, the peer is the client.
    assert str(client_address("127.0.0.2", ["10.0.0.5"], proxies)) == "127.0.0.2"
    # From a proxy: the nearest hop that is not a proxy.
    assert str(client_address("127.0.0.3", ["10.0.0.5"], proxies)) == "10.0.0.5"
    assert str(client_address("127.0.0.3", ["10.0.0.5, 10.9.1.1"], proxies)) == "10.0.0.5"
    # The client forged a first hop; the proxy appended the real address after it.
    assert str(client_address("127.0.0.3", ["10.0.0.5, 203.0.113.9"], proxies)) == "203.0.113.9"
    assert str(client_address("127.0.0.3", ["10.0.0.5", "203.0.113.9:5123"], proxies)) == "203.0.113.9"
    with pytest.raises(ForwardedForError, match="not an IP address"):
        client_address("127.0.0.3", ["10.0.0.5, evil"], proxies)


# -- masking ---------------------------------------------------------------------------------------


def test_masking_json_paths_through_lists() -> None:
    masker = Masker.from_text("customer.phone, id_card, lines.serial")
    record = {"order_id": "SO-1", "id_card": "110101199001011234", "customer": {"phone": "13812345678", "name": "A"},
              "lines": [{"serial": "S1", "qty": 1}, {"serial": "S2", "qty": 2}], "note": None}
    masked = orjson.loads(masker.mask_payload(orjson.dumps(record), "application/json"))
    assert masked == {"order_id": "SO-1", "id_card": MASK, "customer": {"phone": MASK, "name": "A"},
                      "lines": [{"serial": MASK, "qty": 1}, {"serial": MASK, "qty": 2}], "note": None}


def test_masking_xml_by_element_and_attribute_name() -> None:
    masker = Masker.from_text("customer.phone,id_card")
    xml = (b'<Order><id>1</id><customer><phone>13812345678</phone></customer>'
           b'<contact phone="13900000000" id_card="X1"/><ns:phone xmlns:ns="urn:x">1</ns:phone></Order>')
    out = masker.mask_payload(xml, "application/xml").decode()
    assert "13812345678" not in out and "13900000000" not in out and "X1" not in out and ">1</ns:phone>" not in out
    assert "<id>1</id>" in out


def test_masking_fails_closed_on_unreadable_payloads() -> None:
    masker = Masker.from_text("phone")
    assert masker.mask_payload(b"phone;13812345678", "text/csv") == UNREADABLE
    assert masker.mask_payload(b"{not json", "application/json") == UNREADABLE
    assert Masker.from_text("").mask_payload(b"anything") == b"anything"


def test_masking_a_dead_letter_document_with_its_edit_audit() -> None:
    masker = Masker.from_text("customer.phone")
    before, before_enc = encode_value(b'{"customer": {"phone": "13812345678"}}')
    after, after_enc = encode_value(b'{"customer": {"phone": "13987654321"}}')
    page = {"items": [{"id": "dl1", "value": before, "value_encoding": before_enc,
                       "headers": {"content-type": "application/json"},
                       "audit": [{"action": "edit", "details": {"before": before, "before_encoding": before_enc,
                                                                "after": after, "after_encoding": after_enc}}]}],
            "total": 1}
    text = json.dumps(mask_document(masker, page))
    assert "13812345678" not in text and "13987654321" not in text and MASK in text and '"total": 1' in text


def test_scrubbing_free_text_of_the_records_masked_values() -> None:
    masker = Masker.from_text("customer.phone,id_card,lines.serial")
    value = orjson.dumps({"customer": {"phone": "13812345678", "name": "王芳"}, "id_card": 110101199001011234,
                          "lines": [{"serial": "SN-77"}, {"serial": "SN-78"}]})
    assert sorted(masker.secrets(value) or []) == ["110101199001011234", "13812345678", "SN-77", "SN-78"]
    error = "HTTP 422: {'TEL': '13812345678', 'ID': 110101199001011234, 'serials': ['SN-77', 'SN-78'], 'n': '王芳'}"
    assert masker.scrub(error, value) == \
        "HTTP 422: {'TEL': '****', 'ID': ****, 'serials': ['****', '****'], 'n': '王芳'}"
    xml = b'<order><customer phone="13812345678"><name>Li</name></customer><id_card>X1-77</id_card></order>'
    assert masker.scrub("bad phone=13812345678 id X1-77", xml, "application/xml") == "bad phone=**** id ****"
    # whole values only: a value inside a longer number or word is left (cutting it out would show where it is)
    assert masker.scrub("amount 13812345678.5 ok", xml, "application/xml") == "amount ****.5 ok"
    assert masker.scrub("ref A13812345678 ok", xml, "application/xml") == "ref A13812345678 ok"
    # a value too short to be told from the text around it: the text is hidden whole if it appears at all
    short = orjson.dumps({"customer": {"phone": "20"}})
    assert masker.scrub("after 20.0 s", short) == HIDDEN_TEXT
    assert masker.scrub("after 2.5 s (attempt 201)", short) == "after 2.5 s (attempt 201)"
    assert masker.scrub("anything at all", b"not json nor xml") == HIDDEN_TEXT   # unreadable: hidden whole
    escaped = orjson.dumps({"customer": {"phone": "电话 138"}})
    assert masker.scrub('{"TEL": "\\u7535\\u8bdd 138"}', escaped) == '{"TEL": "****"}'  # JSON-escaped form


def test_a_key_that_is_a_masked_value_is_masked_too() -> None:
    masker = Masker.from_text("id_card")
    dl = DeadLetter(route="r", reason="delivery", error="no customer 110101199001011234", record_id="r1", topic="t",
                    key="110101199001011234", value=b'{"id_card": "110101199001011234"}',
                    headers={"content-type": "application/json"})
    seen = masker.letter(dl)
    assert (seen.key, seen.error) == ("****", "no customer ****")
    doc = mask_document(masker, dl.to_json())
    assert doc["key"] == doc["record"]["key"] == "****" and "110101199001011234" not in orjson.dumps(doc).decode()
    edited = dataclasses.replace(dl, edited=True)
    assert masker.letter(edited).error.startswith("[masked: the record was edited")


def test_a_masked_trace_hides_errors_it_cannot_scrub() -> None:
    masker = Masker.from_text("customer.phone")
    view = {"record_id": "r1", "events": [
        {"stage": "attempt", "detail": {"sink": "erp", "error": "HTTP 422: phone 13812345678"}},
        {"stage": "mapped", "detail": {"key": "SO-1", "targets": ["erp"]}}]}
    letter = DeadLetter(route="r", reason="delivery", error="e", record_id="r1", topic="t",
                        value=b'{"customer": {"phone": "13812345678"}}', headers={"content-type": "application/json"})
    scrubbed = masker.trace(view, [letter])
    assert scrubbed["events"][0]["detail"]["error"] == "HTTP 422: phone ****"
    assert scrubbed["events"][1]["detail"] == {"key": "SO-1", "targets": ["erp"]}
    blind = masker.trace(view, [])          # no dead letter: the record's values are unknown here
    assert blind["events"][0]["detail"]["error"] == HIDDEN_TEXT and blind["events"][0]["detail"]["sink"] == "erp"


# -- rate limits ----------------------------------------------------------------------------------


def test_token_bucket_refuses_with_the_wait() -> None:
    now = [100.0]
    bucket = RateBucket(2.0, clock=lambda: now[0])
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0


def test_keyed_limiter_is_per_key_and_bounded() -> None:
    now = [0.0]
    limiter = KeyedLimiter(1.0, max_keys=3, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") > 0
    assert limiter.take("b") == 0
    for key in "cdef":
        limiter.take(key)
    assert len(limiter._buckets) == 3
    assert limiter.take("a") == 0   # forgotten, so a fresh bucket


# -- JWT ------------------------------------------------------------------------------------------


def test_jwt_verification(tmp_path: Path) -> None:
    idp = TestIdp(tmp_path)
    (tmp_path / "other").mkdir()
    verifier = JwtVerifier(ISSUER, AUDIENCE, str(idp.jwks_file))
    claims = verifier.verify(idp.token("carol", "dlq:read openid ingress:crm"))
    assert claims.subject == "carol" and claims.scopes == {"dlq:read", "ingress:crm"}   # openid: not ours, ignored
    assert looks_like_jwt(idp.token()) and not looks_like_jwt("plain-api-key")
    cases = {
        "expired": (idp.token(expires_in=-120), "expired"),
        "audience": (idp.token(aud="someone-else"), "not meant for this service"),
        "issuer": (idp.token(iss="https://evil.example/"), "not issued by"),
        "no exp": (idp.token(exp=None), "'exp'"),
        "other key": (TestIdp(tmp_path / "other").token(), "does not verify"),
    }
    for name, (token, message) in cases.items():
        with pytest.raises(TokenRejected, match=message):
            verifier.verify(token)
        assert name


def test_jwt_refuses_none_and_hmac_algorithms(tmp_path: Path) -> None:
    import jwt as pyjwt

    idp = TestIdp(tmp_path)
    verifier = JwtVerifier(ISSUER, AUDIENCE, str(idp.jwks_file))
    unsigned = pyjwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**40}, None, algorithm="none",
                            headers={"kid": idp.kid})
    with pytest.raises(TokenRejected, match="not accepted"):
        verifier.verify(unsigned)
    # The classic confusion: a token "signed" with HS256 using the public key as the shared secret.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "kid": idp.kid, "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 2**40}).encode())
    mac = hmac.new(idp.jwks_file.read_bytes(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    hmac_token = f"{head}.{body}.{b64(mac)}"
    with pytest.raises(TokenRejected, match="not accepted"):
        verifier.verify(hmac_token)


def test_jwt_with_an_algorithm_that_is_not_a_name_is_refused_not_a_crash(tmp_path: Path) -> None:
    idp = TestIdp(tmp_path)
    verifier = JwtVerifier(ISSUER, AUDIENCE, str(idp.jwks_file))
    good = idp.token()
    body, sig = good.split(".", 2)[1:]
    for alg in (["ES256"], {"x": 1}, 256, None):
        head = base64.urlsafe_b64encode(json.dumps({"alg": alg, "kid": idp.kid}).encode()).rstrip(b"=").decode()
        with pytest.raises(TokenRejected, match="not accepted"):
            verifier.verify(f"{head}.{body}.{sig}")


def test_a_jwks_file_that_turns_bad_keeps_the_keys_read_before(tmp_path: Path) -> None:
    idp = TestIdp(tmp_path)
    verifier = JwtVerifier(ISSUER, AUDIENCE, str(idp.jwks_file))
    good = idp.jwks_file.read_bytes()
    for broken in (good[: len(good) // 2], b'{"keys": []}', b""):   # half-written, emptied, truncated to nothing
        idp.jwks_file.write_bytes(broken)
        assert verifier.verify(idp.token("dave")).subject == "dave"
    idp.jwks_file.write_bytes(good)
    assert verifier.verify(idp.token("erin")).subject == "erin"
    with pytest.raises(JwtConfigError, match="has no RSA, EC or OKP signing key"):  # bad at start: start-up error
        (tmp_path / "bad.json").write_bytes(b'{"keys": []}')
        JwtVerifier(ISSUER, AUDIENCE, str(tmp_path / "bad.json"))


def test_jwt_settings_are_checked(tmp_path: Path) -> None:
    assert JwtVerifier.from_env({}) is None
    with pytest.raises(JwtConfigError, match="all set"):
        JwtVerifier.from_env({"SYNCBUS_JWT_ISSUER": ISSUER})
    with pytest.raises(JwtConfigError, match="cannot read"):
        JwtVerifier(ISSUER, AUDIENCE, str(tmp_path / "missing.json"))
    with pytest.raises(JwtConfigError, match="https://"):
        JwtVerifier(ISSUER, AUDIENCE, "http://idp.example.test/jwks")


def test_jwks_from_a_url(tmp_path: Path) -> None:
    """Fetched at start (loopback may be plain http; anything else must be https)."""
    import http.server
    import threading

    idp = TestIdp(tmp_path)
    body = idp.jwks_file.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        verifier = JwtVerifier(ISSUER, AUDIENCE, f"http://127.0.0.1:{server.server_address[1]}/jwks")
        assert verifier.verify(idp.token("frank", "dlq:write")).scopes == {"dlq:write"}
        (tmp_path / "other").mkdir()
        stranger = TestIdp(tmp_path / "other", kid="idp-2").token()
        with pytest.raises(TokenRejected, match="unknown key id"):
            verifier.verify(stranger)
    finally:
        server.shutdown()
