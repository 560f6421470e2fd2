"""The gate's rules on their own: host names, tokens, cookies and cross-site requests."""

from __future__ import annotations

from orchestrator.web.auth import Guard, host_name, is_loopback, new_token, parse_cookies

SECRET = b"k" * 32


def guard(token: str | None = "t0ken", loopback: bool = True) -> Guard:
    return Guard(token, SECRET, 7860, loopback)


def test_host_names_and_loopback() -> None:
    assert host_name("127.0.0.1:7860") == "127.0.0.1"
    assert host_name("[::1]:7860") == "::1"
    assert host_name("LocalHost:1") == "localhost"
    assert host_name("example.com") == "example.com"
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "evil.com", "localhost.evil.com", ""))


def test_loopback_server_answers_only_to_loopback_names() -> None:
    g = guard(None)
    assert g.host_ok("127.0.0.1:7860") and g.host_ok("localhost:7860") and g.host_ok("[::1]:7860")
    assert not g.host_ok("evil.com:7860")  # DNS rebinding: a page of evil.com resolved to 127.0.0.1
    assert not g.host_ok(None)
    assert guard("t", loopback=False).host_ok("my-workstation.lan:7860")


def test_token_from_bearer_cookie_or_query_and_nothing_else() -> None:
    g = guard("s3cret")
    assert g.authenticate({"Authorization": "Bearer s3cret"}, {}, None) == "bearer"
    assert g.authenticate({}, {g.cookie_name: "s3cret"}, None) == "cookie"
    assert g.authenticate({}, {}, "s3cret") == "query"
    for headers, cookies, query in [
        ({}, {}, None),
        ({"Authorization": "Bearer wrong"}, {}, None),
        ({"Authorization": "s3cret"}, {}, None),
        ({}, {"loraforge_9999": "s3cret"}, None),  # another server's cookie
        ({}, {g.cookie_name: "s3cre"}, "S3CRET"),
    ]:
        assert g.authenticate(headers, cookies, query) is None
    assert guard(None).authenticate({}, {}, None) == "open"


def test_state_changing_requests_need_the_csrf_header_and_the_same_origin() -> None:
    g = guard()
    good = {"X-CSRF-Token": g.csrf_token, "Host": "127.0.0.1:7860", "Origin": "http://127.0.0.1:7860"}
    assert g.cross_site_ok("POST", good, "cookie")
    assert g.cross_site_ok("GET", {}, "cookie")  # reads change nothing
    assert g.cross_site_ok("POST", {}, "bearer")  # a script: browsers never send Authorization by themselves
    assert not g.cross_site_ok("POST", {**good, "X-CSRF-Token": "x"}, "cookie")
    assert not g.cross_site_ok("PUT", {k: v for k, v in good.items() if k != "X-CSRF-Token"}, "open")
    assert not g.cross_site_ok("POST", {**good, "Origin": "http://evil.com"}, "cookie")
    assert not g.cross_site_ok("POST", {**good, "Origin": "null"}, "open")
    assert not g.cross_site_ok("DELETE", {**good, "Sec-Fetch-Site": "cross-site"}, "cookie")
    assert g.cross_site_ok("POST", {k: v for k, v in good.items() if k != "Origin"}, "open")


def test_csrf_token_is_stable_per_secret_and_differs_between_secrets() -> None:
    assert guard().csrf_token == guard().csrf_token
    assert Guard(None, b"x" * 32, 1, True).csrf_token != guard().csrf_token
    assert len({new_token() for _ in range(20)}) == 20


def test_cookie_is_http_only_and_per_port() -> None:
    g = guard("abc")
    header = g.cookie_header()
    assert header.startswith("loraforge_7860=abc;") and "HttpOnly" in header and "SameSite" in header
    assert parse_cookies("a=1; loraforge_7860=abc; b") == {"a": "1", "loraforge_7860": "abc"}
