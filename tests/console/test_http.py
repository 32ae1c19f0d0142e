"""The console over plain HTTP (no browser): sessions, CSRF, escaping, actions audited under the key's name."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import ALICE_KEY, BOB_KEY, CAROL_KEY, DAVE_KEY, ROUTE, csrf_of, login, mapping_dead_letter
from tests.e2e.harness import wait_until

PAGES = ["/console", "/console/routes", "/console/dead-letters", "/console/dead-letters/dl-x", "/console/audit",
         "/console/trace?id=x", "/console/catalog", "/console/ledger"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_a_session_redirect_to_the_login(node, path: str):
    r = httpx.get(f"{node.url}{path}", timeout=10)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/console/login")
    if path != "/console":
        assert httpx.URL(r.headers["location"]).params["next"] == path


def test_actions_without_a_session_change_nothing(node):
    dl_id = mapping_dead_letter(node, 101)
    r = httpx.post(f"{node.url}/console/dead-letters/{dl_id}/discard", data={"reason": "x", "csrf": "x"}, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert _status(node, dl_id) == "pending"


def test_a_wrong_key_is_refused_and_gets_no_session(node):
    with httpx.Client(base_url=node.url, timeout=10) as client:
        page = client.get("/console/login")
        assert page.status_code == 200 and 'type="password"' in page.text
        r = client.post("/console/login", data={"csrf": csrf_of(page.text), "key": "not-a-key"})
        assert r.status_code == 403 and "this key is not accepted" in r.text
        assert "syncbus_console" not in client.cookies
        assert client.get("/console/routes").status_code == 303


def test_the_login_form_itself_needs_its_token(node):
    with httpx.Client(base_url=node.url, timeout=10) as client:
        client.get("/console/login")
        r = client.post("/console/login", data={"key": ALICE_KEY})
        assert r.status_code == 403 and "syncbus_console" not in client.cookies
    r = httpx.post(f"{node.url}/console/login", data={"csrf": "forged", "key": ALICE_KEY}, timeout=10)
    assert r.status_code == 403


def test_login_sets_a_strict_http_only_session_cookie_and_goes_where_it_was_asked(node):
    with httpx.Client(base_url=node.url, timeout=10) as client:
        page = client.get("/console/login", params={"next": "/console/audit"})
        r = client.post("/console/login", data={"csrf": csrf_of(page.text), "key": BOB_KEY, "next": "/console/audit"})
        assert r.status_code == 303 and r.headers["location"] == "/console/audit"
        [cookie] = [c for c in r.headers.get_list("set-cookie") if c.startswith("syncbus_console=")]
        attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/console"} <= attrs
        assert BOB_KEY not in cookie
        audit = client.get("/console/audit")
        assert audit.status_code == 200 and "signed in as bob" in audit.text
        assert "default-src 'none'" in audit.headers["content-security-policy"]
        assert audit.headers["x-frame-options"] == "DENY" and audit.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("next_path", ["https://evil.example/", "//evil.example/x", "/metrics", "/console\\..\\x"])
def test_login_never_redirects_off_the_console(node, next_path: str):
    with httpx.Client(base_url=node.url, timeout=10) as client:
        page = client.get("/console/login")
        r = client.post("/console/login", data={"csrf": csrf_of(page.text), "key": ALICE_KEY, "next": next_path})
        assert r.headers["location"] == "/console/routes"


def test_a_post_without_or_with_a_wrong_csrf_token_is_403_and_changes_nothing(node, session):
    dl_id = mapping_dead_letter(node, 102)
    r = session.post(f"/console/dead-letters/{dl_id}/discard", data={"reason": "no token"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = session.post(f"/console/dead-letters/{dl_id}/discard", data={"reason": "bad", "csrf": "0" * 43})
    assert r.status_code == 403
    other = login(node, BOB_KEY)                      # bob's token is no good in alice's session
    token = csrf_of(other.get("/console/routes").text)
    r = session.post(f"/console/dead-letters/{dl_id}/discard", data={"reason": "x", "csrf": token})
    assert r.status_code == 403
    r = session.post(f"/console/dead-letters/{dl_id}/discard", json={"reason": "x"})
    assert r.status_code == 415
    assert _status(node, dl_id) == "pending"


def test_payloads_and_errors_are_escaped(node, session):
    dl_id = mapping_dead_letter(node, 103, note="<script>alert('x')</script>",
                                customer='"><img src=x onerror=alert(1)>')
    for path in (f"/console/dead-letters/{dl_id}", "/console/dead-letters?text=five"):
        page = session.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert scripts == ['<script src="/console/assets/console.js" defer>']
    detail = session.get(f"/console/dead-letters/{dl_id}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in detail
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail


def test_edit_and_discard_are_audited_under_the_keys_name(node, session):
    dl_id = mapping_dead_letter(node, 104)
    token = csrf_of(session.get(f"/console/dead-letters/{dl_id}").text)
    r = session.post(f"/console/dead-letters/{dl_id}/edit",
                     data={"csrf": token, "value": '{\r\n  "order_id": "SO-000104", "amount": 104\r\n}',
                           "reason": "amount typo"})
    assert r.status_code == 303 and r.headers["location"] == f"/console/dead-letters/{dl_id}"
    page = session.get(r.headers["location"]).text
    assert "edited: replay it to send the new value" in page
    r = session.post(f"/console/dead-letters/{dl_id}/discard", data={"csrf": token, "reason": ""})
    assert "give a reason" in session.get(r.headers["location"]).text and _status(node, dl_id) == "pending"
    session.post(f"/console/dead-letters/{dl_id}/discard", data={"csrf": token, "reason": "customer cancelled"})
    assert _status(node, dl_id) == "discarded"
    audit = httpx.get(f"{node.url}/dlq/audit", params={"id": dl_id}, headers={"X-API-Key": BOB_KEY}).json()["items"]
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [("edit", "alice", "amount typo"),
                                                                      ("discard", "alice", "customer cancelled")]
    assert audit[0]["details"]["after"] == '{\n  "order_id": "SO-000104", "amount": 104\n}'   # CRLF → LF
    assert "customer cancelled" in session.get("/console/audit", params={"actor": "alice"}).text


def test_replay_of_an_unfixed_letter_is_refused_with_the_way_to_force(node, session, target):
    dl_id = mapping_dead_letter(node, 105)
    detail = session.get(f"/console/dead-letters/{dl_id}").text
    assert "was not edited since" in detail and 'name="force"' in detail
    r = session.post(f"/console/dead-letters/{dl_id}/replay", data={"csrf": csrf_of(detail), "reason": "try"})
    page = session.get(r.headers["location"]).text
    assert "not replayed:" in page and "the &#34;force&#34; box" in page and _status(node, dl_id) == "pending"


def test_bulk_discard_from_the_list(node, session):
    ids = [mapping_dead_letter(node, 106), mapping_dead_letter(node, 107)]
    page = session.get("/console/dead-letters", params={"status": "pending", "text": "five"})
    back = "/console/dead-letters?status=pending&text=five"
    r = session.post("/console/dead-letters/bulk", data={"csrf": csrf_of(page.text), "id": ids, "action": "discard",
                                                         "reason": "bulk test", "back": back})
    assert r.status_code == 303 and r.headers["location"] == back
    assert "2 discarded" in session.get(back).text
    assert [_status(node, i) for i in ids] == ["discarded", "discarded"]


def test_list_filters_page_and_report_bad_values(node, session):
    for i in range(3):
        mapping_dead_letter(node, 110 + i)
    page = session.get("/console/dead-letters", params={"route": ROUTE, "reason": "mapping", "limit": "25"})
    assert page.status_code == 200 and re.search(r"showing 1-\d+ of \d+", page.text)
    first = session.get("/console/dead-letters", params={"text": "five", "limit": "25"}).text
    total = int(re.search(r"showing 1-\d+ of (\d+)", first).group(1))
    second = session.get("/console/dead-letters", params={"text": "five", "limit": "25", "offset": "1"}).text
    assert f"showing 2-{min(total, 26)} of {total}" in second and 'rel="prev"' in second
    bad = session.get("/console/dead-letters", params={"status": "lost"})
    assert bad.status_code == 400 and "status &#39;lost&#39;: expected one of" in bad.text


def test_routes_catalogue_ledger_and_trace_pages_render(node, session):
    routes = session.get("/console/routes").text
    row = re.search(rf'<tr data-route="{ROUTE}">(.*?)</tr>', routes, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[:3] == [ROUTE, "e2e", "2"]
    assert int(cells[6]) >= 1                                    # dead-lettered, from the metrics
    catalog = session.get("/console/catalog").text
    assert "Interface catalogue" in catalog and ROUTE in catalog and "<style>" not in catalog
    ledger = session.get("/console/ledger", params={"since": "1h"}).text
    assert 'id="ledger-verdict"' in ledger and "records accepted" in ledger
    dl_id = mapping_dead_letter(node, 120)
    # each worker writes its trace events in batches of its own: "received" (the ingress worker's) may come last
    wait_until(lambda: all(f"<td>{stage}</td>" in session.get("/console/trace", params={"id": dl_id}).text
                           for stage in ("received", "dead_lettered")),
               timeout=15, what="the trace is written (in batches)")
    trace = session.get("/console/trace", params={"id": dl_id}).text
    assert "<td>received</td>" in trace and f"dead_letter={dl_id}" in trace


def test_logout_ends_the_session(node):
    client = login(node)
    token = csrf_of(client.get("/console/routes").text)
    cookie = client.cookies["syncbus_console"]
    r = client.post("/console/logout", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    stale = httpx.get(f"{node.url}/console/routes", cookies={"syncbus_console": cookie}, timeout=10)
    assert stale.status_code == 303


def _status(node, dl_id: str) -> str:
    r = httpx.get(f"{node.url}/dlq/{dl_id}", headers={"X-API-Key": ALICE_KEY}, timeout=10)
    return str(r.json()["status"])


def test_assets_are_served_from_the_package(node):
    css = httpx.get(f"{node.url}/console/assets/console.css", timeout=10)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert httpx.get(f"{node.url}/console/assets/app.py", timeout=10).status_code == 404


def test_a_read_only_key_sees_masked_payloads_and_cannot_act(node, session):
    dl_id = mapping_dead_letter(node, 120, customer="Zhang Wei 13812345678")
    carol = login(node, CAROL_KEY)
    page = carol.get(f"/console/dead-letters/{dl_id}")
    assert page.status_code == 200
    assert "13812345678" not in page.text and "Zhang Wei" not in page.text
    assert "13812345678" in session.get(f"/console/dead-letters/{dl_id}").text   # alice (admin) sees it all
    token = csrf_of(carol.get("/console/routes").text)
    for action, data in (("discard", {"reason": "not mine to decide"}), ("replay", {"reason": "x"}),
                         ("edit", {"value": "{}", "reason": "x"})):
        r = carol.post(f"/console/dead-letters/{dl_id}/{action}", data={"csrf": token, **data})
        assert r.status_code == 403 and "dlq:write" in r.text, action
    assert _status(node, dl_id) == "pending"
    carol.close()


def test_an_unknown_console_page_is_an_html_404_and_the_api_keeps_json(node):
    r = httpx.get(f"{node.url}/console/no-such-page", timeout=10)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "There is no such page." in r.text and 'href="/console/routes"' in r.text
    api = httpx.get(f"{node.url}/no-such-endpoint", timeout=10)
    assert api.status_code == 404 and api.json()["error"] == "not_found"


def test_a_key_without_dlq_read_does_not_open_the_console(node):
    with httpx.Client(base_url=node.url, timeout=10) as client:
        page = client.get("/console/login")
        r = client.post("/console/login", data={"csrf": csrf_of(page.text), "key": DAVE_KEY, "next": ""})
        assert r.status_code == 403 and "needs the scope dlq:read" in r.text
        assert "syncbus_console" not in client.cookies
        for path in ("/console/routes", "/console/trace?id=x", "/console/ledger", "/console/audit"):
            assert client.get(path).status_code == 303, path


def test_a_read_only_key_can_log_out(node):
    carol = login(node, CAROL_KEY)
    token = csrf_of(carol.get("/console/routes").text)
    r = carol.post("/console/logout", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/console/login", r.text
    assert carol.get("/console/routes").status_code == 303
    carol.close()
