"""Security of `loraforge serve`, over real HTTP: with a token set no route answers without it; cross-site writes
are refused; no path parameter reaches outside its folder; oversized, non-image and hostile-zip uploads refused."""

from __future__ import annotations

import io
import re
import socket
import zipfile
from pathlib import Path

import pytest
from compare_runs import make_run
from PIL import Image
from web_helpers import call, running_app

from orchestrator.events import Progress
from orchestrator.web.app import App, Settings
from orchestrator.web.uploads import Limits

TOKEN = "correct-horse-battery-staple"
SECRET = "TOPSECRET-4d1f"
LIMITS = Limits(file_bytes=64 * 1024, zip_bytes=256 * 1024, total_bytes=6 * 1024**2, files=10)


def png(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A token-guarded server over a runs folder with one run, one draft with a photo, one queued job; a secret
    file beside the runs folder, and links that point at it from inside."""
    (tmp_path / "secret.txt").write_text(SECRET)
    run = make_run(tmp_path, "simpletuner", [Progress(1, 2, loss=0.5)], status="failed")
    (run.output / "escape.txt").symlink_to(tmp_path / "secret.txt")
    outside = tmp_path / "outside-run"
    outside.mkdir()
    (outside / "job.yaml").write_text(SECRET)
    (tmp_path / "runs" / "linked-run").symlink_to(outside)
    with running_app(tmp_path / "runs", token=TOKEN, gpus=[], limits=LIMITS, worker=["false"]) as app:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        draft = call(app, "POST", "/api/drafts", headers=bearer).json()["id"]
        assert call(app, "PUT", f"/api/drafts/{draft}/files/a.png", png(), bearer).status == 201
        (app.drafts.photos(draft) / "escape.png").symlink_to(tmp_path / "secret.txt")
        job = app.runner.submit(run.job_file.read_text(), "simpletuner", name="queued")
        values = {"name": run.path.name, "path": "job.yaml", "job": job.id, "draft": draft, "file": "b.png"}
        yield app, values, tmp_path


def fill(template: str, values: dict[str, str]) -> str:
    path = template.replace("{path*}", "photos/a.png" if template.startswith("/drafts") else values["path"])
    path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
    if template in ("/api/events", "/compare"):
        path += f"?run={values['name']}"
    if template == "/api/compare":
        path += f"?run={values['name']}&run={values['name']}"
    return path


def test_with_a_token_no_route_answers_without_it(world) -> None:  # type: ignore[no-untyped-def]
    app, values, _ = world
    assert len(app.routes.table) >= 25
    for method, template, _, _ in app.routes.table:
        path = fill(template, values)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{app.guard.cookie_name}=wrong"}):
            reply = call(app, method, path, b"{}" if method != "GET" else None, headers, csrf=False)
            assert reply.status == 401, (method, path, headers, reply.status)
            assert values["name"] not in reply.text and SECRET not in reply.text
        body = b"{}" if method != "GET" else None
        ok = call(app, method, path, body, {"Authorization": f"Bearer {TOKEN}"}, stream=template == "/api/events")
        assert ok.status != 401, (method, path)
    # unknown paths and the static files too
    for path in ("/nope", "/static/app.css", f"/runs/{values['name']}/files/output/cmp.safetensors?download=1"):
        assert call(app, "GET", path).status == 401


def test_the_printed_url_sets_a_cookie_and_the_cookie_works(world) -> None:  # type: ignore[no-untyped-def]
    app, values, _ = world
    reply = call(app, "GET", f"/runs/{values['name']}?token={TOKEN}&x=1")
    assert reply.status == 303
    assert reply.headers["location"] == f"/runs/{values['name']}?x=1"  # the token leaves the address bar
    cookie = reply.headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in reply.headers["set-cookie"]
    page = call(app, "GET", f"/runs/{values['name']}", headers={"Cookie": cookie})
    assert page.status == 200 and values["name"] in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert call(app, "GET", "/", headers={"Cookie": cookie + "x"}).status == 401


def test_cross_site_writes_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    app, values, _ = world
    cookie = {"Cookie": f"{app.guard.cookie_name}={TOKEN}"}
    assert call(app, "POST", "/api/drafts", b"", cookie, csrf=False).status == 403  # a form on another site
    assert call(app, "POST", "/api/drafts", b"", {**cookie, "X-CSRF-Token": "guess"}, csrf=False).status == 403
    evil = {**cookie, "X-CSRF-Token": app.guard.csrf_token, "Origin": "http://evil.example"}
    assert call(app, "POST", f"/api/runs/{values['name']}/retry", b"", evil, csrf=False).status == 403
    assert call(app, "POST", "/api/drafts", b"", cookie).status == 201  # the app's own page
    lower = {"cookie": cookie["Cookie"], "x-csrf-token": app.guard.csrf_token}  # header names in any case
    assert call(app, "POST", "/api/drafts", b"", lower, csrf=False).status == 201
    assert call(app, "GET", "/api/runs", headers={"authorization": f"bearer {TOKEN}"}).status == 200
    assert call(app, "POST", "/api/drafts", b"", {"Authorization": f"Bearer {TOKEN}"}, csrf=False).status == 201


def test_a_loopback_server_refuses_other_host_names(tmp_path: Path) -> None:
    make_run(tmp_path, "kohya", [Progress(1, 2, loss=0.5)])
    with running_app(tmp_path / "runs", gpus=[]) as app:  # no token: loopback only
        assert call(app, "GET", "/api/runs").status == 200
        for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example"):
            reply = call(app, "GET", "/api/runs", headers={"Host": host})
            assert reply.status == 403 and b"cmp" not in reply.body
        assert call(app, "POST", "/api/drafts", b"", csrf=False).status == 403  # no token is no excuse
    with pytest.raises(ValueError, match="needs a token"):
        App(Settings(runs=tmp_path / "runs", host="0.0.0.0"))


TRAVERSALS = [
    "..",
    "%2e%2e",
    "..%2f..%2fsecret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "..%5c..%5csecret.txt",
    "%2fetc%2fpasswd",
    "secret.txt%00.png",
    ".loraforge-web",
    "%2eloraforge-web",
    "linked-run",
]
PATH_TRAVERSALS = [
    "../../secret.txt",
    "..%2f..%2fsecret.txt",
    "%2e%2e/%2e%2e/secret.txt",
    "output/../../../secret.txt",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "output/escape.txt",
    "escape.png",
    "photos/escape.png",
    "..%5c..%5csecret.txt",
    "job.yaml%00",
    ".loraforge-web/secret",
    "../.loraforge-web/queue.sqlite",
]


def test_no_path_parameter_reaches_outside_its_folder(world) -> None:  # type: ignore[no-untyped-def]
    app, values, tmp = world
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    tried = 0
    for method, template, _, _ in app.routes.table:
        for param in re.findall(r"\{(\w+)\*?\}", template):
            payloads = PATH_TRAVERSALS if f"{{{param}*}}" in template else TRAVERSALS
            for payload in payloads:
                path = fill(template, {**values, param: payload})
                if f"{{{param}*}}" in template:
                    path = re.sub(r"/files/.*$", f"/files/{payload}", path)
                reply = call(app, method, path, b"{}" if method != "GET" else None, bearer, stream=True)
                tried += 1
                assert reply.status in (400, 404, 405, 415), (method, path, reply.status, reply.text[:200])
                assert SECRET not in reply.text
    # the run names of the query-string routes, too
    for payload in TRAVERSALS:
        for path in (f"/api/events?run={payload}", f"/api/compare?run={payload}&run={values['name']}"):
            reply = call(app, "GET", path, headers=bearer, stream=True)
            assert reply.status in (400, 404) and SECRET not in reply.text, (path, reply.status)
    assert tried > 150
    assert (tmp / "secret.txt").read_text() == SECRET


# --- uploads ----------------------------------------------------------------------------------------------------
def zip_bytes(members: dict[str, bytes], *, encrypted: set[str] = frozenset()) -> bytes:  # type: ignore[assignment]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    raw = bytearray(buffer.getvalue())
    for name in encrypted:  # zipfile cannot encrypt: set the "encrypted" flag in both of the member's headers
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = raw.find(signature + b"", 0)
            while at != -1 and name.encode() not in raw[at : at + 80]:
                at = raw.find(signature, at + 4)
            raw[at + offset] |= 0x1
    return bytes(raw)


def test_uploads_are_capped_and_checked(world) -> None:  # type: ignore[no-untyped-def]
    app, values, tmp = world
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    draft = call(app, "POST", "/api/drafts", headers=bearer).json()["id"]
    photos = app.drafts.photos(draft)

    said: dict[str, str] = {}

    def put(name: str, body: bytes) -> int:
        reply = call(app, "PUT", f"/api/drafts/{draft}/files/{name}", body, bearer)
        assert SECRET not in reply.text
        said[name] = reply.json().get("error", "")
        return reply.status

    # oversized: an image over the per-file cap, refused before it is read
    assert put("big.png", png(8) + b"\0" * (LIMITS.file_bytes + 1)) == 413
    # non-images: by suffix, and by content whatever the suffix says
    assert put("tool.exe", b"MZ\x90\0") == 415
    assert put("photo.jpg", b"MZ\x90\0 this is a program") == 415
    assert put("photo.png", b"<html><script>alert(1)</script>") == 415
    assert put("photos.zip", png()) == 415  # an image is not a zip
    assert put("archive.png", zip_bytes({"a.png": png()})) == 415  # nor a zip an image
    assert put("caption.txt", b"\xff\xfe\xfa") == 415
    # hostile zips: escaping members, absolute paths, a bomb, encrypted members, a corrupt archive, too many files
    assert put("escape.zip", zip_bytes({"ok.png": png(), "../../evil.png": png()})) == 422
    assert put("absolute.zip", zip_bytes({"/tmp/evil-abs.png": png()})) == 422
    assert put("bomb.zip", zip_bytes({"zeros.png": b"\0" * (4 * 1024**2)})) == 422
    assert put("locked.zip", zip_bytes({"a.png": png()}, encrypted={"a.png"})) == 422
    assert put("corrupt.zip", b"PK\x03\x04" + b"\x13" * 400) == 422
    assert put("many.zip", zip_bytes({f"{i}.png": png(8) for i in range(LIMITS.files + 1)})) == 413
    for name, words in [
        ("escape.zip", "outside"),
        ("absolute.zip", "absolute"),
        ("bomb.zip", "bomb"),
        ("locked.zip", "encrypted"),
        ("corrupt.zip", "zip"),
        ("big.png", "at most"),
    ]:
        assert words in said[name], (name, said[name])
    assert not list(photos.rglob("*")), "nothing of a refused upload stays"
    assert not (tmp / "evil.png").exists() and not Path("/tmp/evil-abs.png").exists()
    # what is allowed still works: a photo, a caption, a good zip
    assert put("ok.png", png()) == 201
    assert put("ok.txt", b"a photo of ohwx") == 201
    assert put("set.zip", zip_bytes({"one.png": png(), "sub/two.png": png()})) == 201
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*") if p.is_file()) == [
        "ok.png",
        "ok.txt",
        "set/one.png",
        "set/sub/two.png",
    ]
    # the count cap holds across uploads
    for i in range(LIMITS.files - 4):
        assert put(f"more{i}.png", png(8)) == 201
    assert put("one-too-many.png", png(8)) == 413


def test_a_huge_declared_body_is_refused_without_reading_it(world) -> None:  # type: ignore[no-untyped-def]
    app, values, _ = world
    with socket.create_connection(("127.0.0.1", app.server.server_port), timeout=10) as sock:
        sock.sendall(
            (
                f"PUT /api/drafts/{values['draft']}/files/huge.png HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: {50 * 1024**3}\r\n\r\n"
            ).encode()
        )
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413") and "Connection: close" in answer
