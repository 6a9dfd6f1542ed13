"""The console's sign-in, session cookie, CSRF guard and security headers (a browser drives the
same in tests/console/test_browser*.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bridge.auth import mint_token
from bridge.console.live import MAX_PER_CREDENTIAL as STREAMS_PER_CREDENTIAL
from bridge.console.live import MAX_STREAMS
from bridge.console.render import CSP
from bridge.console.sessions import COOKIE, MAX_PER_CREDENTIAL, MAX_SESSIONS, SESSIONS
from bridge.console.throttle import DELAY_S, FAILURES
from bridge.history import History
from bridge.settings import Settings
from tests.conftest import API_KEY, ClientFactory, token
from tests.console.signin import csrf_of, sign_in
from tests.test_worker import finished

LOGIN = "/admin/ui/login"


@pytest.fixture
def admin_token(settings: Settings) -> str:
    return token(settings, "admin")


def session_cookie(client: TestClient) -> str:
    for cookie in client.session.cookie_jar:
        if cookie.key == COOKIE:
            return cookie.value
    raise AssertionError("no session cookie")


async def test_every_page_sends_the_signed_out_to_sign_in(client: TestClient) -> None:
    answer = await client.get("/admin/ui/jobs?status=failed", allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/admin/ui/login?next=/admin/ui/jobs%3Fstatus%3Dfailed"
    assert (await client.post("/admin/ui/drain", data={"action": "drain"})).status == 403


async def test_sign_in_sets_a_strict_short_lived_http_only_cookie(
    client: TestClient, admin_token: str
) -> None:
    form = await client.get(LOGIN)
    assert form.status == 200
    html = await form.text()
    assert 'type="password"' in html and 'for="credential"' in html
    answer = await client.post(
        LOGIN,
        data={"credential": admin_token, "csrf": csrf_of(html), "next": "/admin/ui/jobs"},
        allow_redirects=False,
    )
    assert answer.status == 303 and answer.headers["Location"] == "/admin/ui/jobs"
    cookies = SimpleCookie()
    for header in answer.headers.getall("Set-Cookie"):
        cookies.load(header)
    session = cookies[COOKIE]
    assert session["httponly"] and session["samesite"] == "Strict" and not session["secure"]
    # The session's lifetime (an hour), cut to its token's (five minutes here).
    assert session["path"] == "/admin/ui/" and 290 <= int(session["max-age"]) <= 300
    assert admin_token not in session.value and admin_token.split(".")[2] not in session.value
    overview = await client.get("/admin/ui/")
    assert overview.status == 200
    assert admin_token not in await overview.text()


async def test_behind_https_the_cookie_is_secure(client: TestClient, admin_token: str) -> None:
    html = await (await client.get(LOGIN)).text()
    answer = await client.post(
        LOGIN,
        data={"credential": admin_token, "csrf": csrf_of(html)},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    cookies = SimpleCookie()
    for header in answer.headers.getall("Set-Cookie"):
        cookies.load(header)
    assert cookies[COOKIE]["secure"]


@pytest.mark.parametrize(
    "credential",
    ["wrong", "", "a.b.c", "x" * 9000],
    ids=["unknown key", "empty", "not a JWT", "huge"],
)
async def test_a_bad_credential_opens_no_session(client: TestClient, credential: str) -> None:
    html = await (await client.get(LOGIN)).text()
    answer = await client.post(LOGIN, data={"credential": credential, "csrf": csrf_of(html)})
    assert answer.status == 401
    assert "Not signed in" in await answer.text()
    assert COOKIE not in {cookie.key for cookie in client.session.cookie_jar}


async def test_a_credential_without_the_admin_scope_is_refused(
    client: TestClient, settings: Settings
) -> None:
    for credential in (token(settings, "execute,status"), API_KEY):
        html = await (await client.get(LOGIN)).text()
        answer = await client.post(LOGIN, data={"credential": credential, "csrf": csrf_of(html)})
        assert answer.status == 401
        assert "admin scope" in await answer.text()


async def test_an_admin_api_key_signs_in(make_client: ClientFactory) -> None:
    client = await make_client(api_key_scopes=["admin"])
    await sign_in(client, API_KEY)
    assert (await client.get("/admin/ui/")).status == 200


async def test_sign_in_without_the_form_token_is_refused(
    client: TestClient, admin_token: str
) -> None:
    """Login CSRF: another site cannot sign a browser in to the attacker's session."""
    answer = await client.post(LOGIN, data={"credential": admin_token, "csrf": "forged"})
    assert answer.status == 403
    assert COOKIE not in {cookie.key for cookie in client.session.cookie_jar}


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/admin/ui/\\evil",
        "/api/v1/processors",
        "/admin/ui/../../api/v1/processors",
        "/admin/ui/jobs/%2e%2e/%2E%2E/%2e%2e/health",
        '/admin/ui/a"<b',
        "/admin/ui/logout",
    ],
)
async def test_sign_in_sends_only_to_a_console_page(
    client: TestClient, admin_token: str, target: str
) -> None:
    html = await (await client.get(LOGIN)).text()
    answer = await client.post(
        LOGIN,
        data={"credential": admin_token, "csrf": csrf_of(html), "next": target},
        allow_redirects=False,
    )
    assert answer.headers["Location"] == "/admin/ui/"


async def test_a_post_without_the_session_csrf_token_changes_nothing(
    client: TestClient, admin_token: str
) -> None:
    csrf = await sign_in(client, admin_token)
    for data in ({"action": "drain"}, {"action": "drain", "csrf": "x" * len(csrf)}):
        answer = await client.post("/admin/ui/drain", data=data)
        assert answer.status == 403
        assert "CSRF" in await answer.text()
    assert (await client.get("/ready")).status == 200
    answer = await client.post("/admin/ui/logout", data={}, allow_redirects=False)
    assert answer.status == 403
    assert (await client.get("/admin/ui/")).status == 200


async def test_sign_out_ends_the_session_on_the_server(
    client: TestClient, admin_token: str
) -> None:
    csrf = await sign_in(client, admin_token)
    cookie = session_cookie(client)
    answer = await client.post("/admin/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 303 and answer.headers["Location"] == LOGIN
    # The old cookie, sent again as a thief would, opens nothing.
    again = await client.get("/admin/ui/", cookies={COOKIE: cookie}, allow_redirects=False)
    assert again.status == 303


async def test_the_cookie_grants_nothing_on_the_json_api(
    client: TestClient, admin_token: str
) -> None:
    await sign_in(client, admin_token)
    cookies = {COOKIE: session_cookie(client)}
    for method, path in (
        ("GET", "/admin/status"),
        ("POST", "/admin/drain"),
        ("GET", "/api/v1/processors"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/subscriptions"),
    ):
        answer = await client.request(method, path, cookies=cookies)
        assert answer.status == 401, (method, path)
    assert (await client.get("/ready")).status == 200


async def test_a_forged_or_foreign_cookie_opens_nothing(
    make_client: ClientFactory, admin_token: str, tmp_path: Path
) -> None:
    first = await make_client(data_dir=tmp_path / "first")
    await sign_in(first, admin_token)
    cookie = session_cookie(first)
    session_id, _, mac = cookie.partition(".")
    second = await make_client(
        data_dir=tmp_path / "second"
    )  # another process: another key, other sessions
    for forged in (f"{session_id}.{'A' * len(mac)}", session_id, cookie):
        answer = await second.get("/admin/ui/", cookies={COOKIE: forged}, allow_redirects=False)
        assert answer.status == 303


async def test_a_session_ends_with_its_lifetime_and_with_its_token(
    make_client: ClientFactory, make_settings: Callable[..., Settings]
) -> None:
    client = await make_client(jwt_leeway_s=0)
    settings = make_settings(jwt_leeway_s=0)
    await sign_in(client, mint_token(settings, ["admin"], 1.5))
    assert (await client.get("/admin/ui/", allow_redirects=False)).status == 200
    await asyncio.sleep(2.1)
    assert (await client.get("/admin/ui/", allow_redirects=False)).status == 303
    await sign_in(client, mint_token(settings, ["admin"], 300))
    for session in client.app[SESSIONS]._open.values():
        session.expires_at = time.time() - 1
    assert (await client.get("/admin/ui/", allow_redirects=False)).status == 303


async def test_sessions_are_bounded(client: TestClient, settings: Settings) -> None:
    sessions = client.app[SESSIONS]
    for _ in range(MAX_SESSIONS + 50):  # each a credential of its own
        sessions.open(mint_token(settings, ["admin"], 300))
    assert len(sessions._open) == MAX_SESSIONS


async def test_every_console_answer_carries_the_security_headers(
    client: TestClient, admin_token: str
) -> None:
    await sign_in(client, admin_token)
    for path in ("/admin/ui/", LOGIN, "/admin/ui/static/console.css", "/admin/ui/nowhere"):
        answer = await client.get(path)
        assert answer.headers["Content-Security-Policy"] == CSP, path
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    assert (await client.get("/admin/ui/nowhere")).status == 404
    assert "<main" in await (await client.get("/admin/ui/nowhere")).text()


async def test_a_limited_admin_token_sees_no_cross_workflow_page(
    client: TestClient, settings: Settings
) -> None:
    limited = mint_token(settings, ["admin"], 300, workflows=["wf-a"])
    html = await (await client.get(LOGIN)).text()
    await client.post(LOGIN, data={"credential": limited, "csrf": csrf_of(html)})
    assert session_cookie(client)
    answer = await client.get("/admin/ui/")
    assert answer.status == 403
    html = await answer.text()
    assert "limited to workflows" in html
    assert 'href="/admin/ui/dead-letters"' not in html


async def test_the_console_can_be_turned_off(make_client: ClientFactory, admin_token: str) -> None:
    client = await make_client(console=False)
    for path in (LOGIN, "/admin/ui/", "/admin/ui/static/console.js"):
        assert (await client.get(path)).status == 404


async def test_failed_sign_ins_slow_down_but_never_lock_the_right_credential_out(
    client: TestClient, admin_token: str
) -> None:
    for _ in range(FAILURES):
        html = await (await client.get(LOGIN)).text()
        answer = await client.post(LOGIN, data={"credential": "guess", "csrf": csrf_of(html)})
        assert answer.status == 401
    html = await (await client.get(LOGIN)).text()
    started = time.monotonic()
    answer = await client.post(LOGIN, data={"credential": "guess", "csrf": csrf_of(html)})
    assert answer.status == 401 and time.monotonic() - started >= DELAY_S
    # Behind a proxy every operator may share one address: the right credential still signs in.
    html = await (await client.get(LOGIN)).text()
    started = time.monotonic()
    answer = await client.post(
        LOGIN, data={"credential": admin_token, "csrf": csrf_of(html)}, allow_redirects=False
    )
    assert answer.status == 303 and time.monotonic() - started < DELAY_S


async def test_a_form_past_the_body_limit_is_a_413_page(
    make_client: ClientFactory, settings: Settings
) -> None:
    client = await make_client(max_body_bytes=65_536)
    big = {"credential": "x" * 70_000, "csrf": "y"}
    answer = await client.post(LOGIN, data=big)
    assert answer.status == 413 and "<main" in await answer.text()
    await sign_in(client, token(settings, "admin"))
    answer = await client.post("/admin/ui/drain", data={**big, "action": "drain"})
    assert answer.status == 413 and "<main" in await answer.text()
    assert (await client.get("/ready")).status == 200


async def test_a_limited_token_signs_in_to_the_jobs_page(
    client: TestClient, settings: Settings
) -> None:
    limited = mint_token(settings, ["admin"], 300, workflows=["wf-a"])
    html = await (await client.get(LOGIN)).text()
    answer = await client.post(
        LOGIN,
        data={"credential": limited, "csrf": csrf_of(html), "next": "/admin/ui/"},
        allow_redirects=False,
    )
    assert answer.headers["Location"] == "/admin/ui/jobs"


async def test_an_unexpected_error_is_a_page_with_its_trace_id(
    client: TestClient, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sign_in(client, admin_token)

    def broken(self: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(History, "series", broken)
    answer = await client.get("/admin/ui/")
    assert answer.status == 500
    html = await answer.text()
    assert "<main" in html and answer.headers["X-Trace-ID"] in html
    assert "a bug" not in html
    assert answer.headers["Content-Security-Policy"] == CSP


async def read_until_closed(stream: aiohttp.ClientResponse, bound_s: float) -> bytes:
    """What the stream sent until it ended; TimeoutError if it is still open after bound_s."""
    return await asyncio.wait_for(stream.content.read(), bound_s)


@pytest.mark.parametrize("end", ["sign-out", "expiry"])
async def test_an_open_event_stream_ends_with_its_session(
    client: TestClient, admin_token: str, end: str
) -> None:
    csrf = await sign_in(client, admin_token)
    stream = await client.get("/admin/ui/events")
    assert stream.status == 200
    if end == "sign-out":
        await client.post("/admin/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    else:
        for session in client.app[SESSIONS]._open.values():
            session.expires_at = time.time() - 1
    # Jobs keep coming; the ended session is told none of them.
    auth = {"Authorization": f"Bearer {admin_token}"}
    await client.post(
        "/api/v1/workflow/execute",
        json={"processing_type": "echo", "mode": "async", "items": [{"json": {}}]},
        headers=auth,
    )
    sent = await read_until_closed(stream, 5)
    assert b"workflow.queued" not in sent


async def test_a_session_never_outlives_its_token(
    client: TestClient, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    # A token past its exp but within the verifier's leeway opens no session at all.
    expired = mint_token(settings, ["admin"], -5)
    html = await (await client.get(LOGIN)).text()
    answer = await client.post(LOGIN, data={"credential": expired, "csrf": csrf_of(html)})
    assert answer.status == 401 and "expired" in await answer.text()
    html = await (await client.get(LOGIN)).text()
    answer = await client.post(
        LOGIN,
        data={"credential": mint_token(settings, ["admin"], 100), "csrf": csrf_of(html)},
        allow_redirects=False,
    )
    cookies = SimpleCookie()
    for header in answer.headers.getall("Set-Cookie"):
        cookies.load(header)
    assert 90 <= int(cookies[COOKIE]["max-age"]) <= 100


async def test_pages_answer_head_as_get(client: TestClient, admin_token: str) -> None:
    await sign_in(client, admin_token)
    for path in ("/admin/ui/", "/admin/ui/jobs", "/admin/ui/drain", "/admin/ui/processors"):
        get, head = await client.get(path), await client.head(path)
        assert (head.status, await head.read()) == (get.status, b""), path
        assert head.headers["Content-Security-Policy"] == CSP


async def test_nothing_but_the_assets_is_cached(client: TestClient, admin_token: str) -> None:
    await sign_in(client, admin_token)
    for path in ("/admin/ui/", "/admin/ui/jobs", LOGIN, "/admin/ui/nowhere"):
        assert (await client.get(path)).headers["Cache-Control"] == "no-store", path
    stream = await client.get("/admin/ui/events")
    assert stream.headers["Cache-Control"] == "no-store"
    stream.close()
    asset = await client.get("/admin/ui/static/console.css")
    assert asset.headers["Cache-Control"] == "private, max-age=300"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
    ],
    ids=["origin", "fetch-metadata", "opaque origin"],
)
async def test_a_form_from_another_site_is_refused_even_with_its_token(
    client: TestClient, admin_token: str, headers: dict[str, str]
) -> None:
    csrf = await sign_in(client, admin_token)
    answer = await client.post(
        "/admin/ui/drain", data={"action": "drain", "csrf": csrf}, headers=headers
    )
    assert answer.status == 403 and "another site" in await answer.text()
    assert (await client.get("/ready")).status == 200
    html = await (await client.get(LOGIN)).text()
    answer = await client.post(
        LOGIN, data={"credential": admin_token, "csrf": csrf_of(html)}, headers=headers
    )
    assert answer.status == 403
    # The console's own origin, as a browser sends it, is fine.
    same = {"Origin": str(client.make_url("")).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    answer = await client.post(
        "/admin/ui/drain", data={"action": "drain", "csrf": csrf}, headers=same
    )
    assert answer.status == 200
    assert (await client.get("/ready")).status == 503


async def test_one_credential_signing_in_again_and_again_signs_no_one_else_out(
    client: TestClient, settings: Settings, admin_token: str
) -> None:
    await sign_in(client, admin_token)
    cookie = session_cookie(client)
    sessions = client.app[SESSIONS]
    limited = mint_token(settings, ["admin"], 300, workflows=["wf-a"])
    for _ in range(MAX_SESSIONS + 10):
        sessions.open(limited)
    assert sum(s.credential == limited for s in sessions._open.values()) == MAX_PER_CREDENTIAL
    again = await client.get("/admin/ui/", cookies={COOKIE: cookie}, allow_redirects=False)
    assert again.status == 200


async def test_the_pages_streams_are_bounded_and_end_at_a_drain(
    client: TestClient, settings: Settings, admin_token: str
) -> None:
    csrf = await sign_in(client, admin_token)
    streams = [await client.get("/admin/ui/events") for _ in range(STREAMS_PER_CREDENTIAL)]
    assert [s.status for s in streams] == [200] * STREAMS_PER_CREDENTIAL
    # A credential holds its share, whatever its sessions …
    _, cookie = client.app[SESSIONS].open(admin_token)
    assert (await client.get("/admin/ui/events", cookies={COOKIE: cookie})).status == 429
    # … a page left frees its place at once …
    streams.pop().close()
    await asyncio.sleep(0.1)
    again = await client.get("/admin/ui/events")
    assert again.status == 200
    streams.append(again)
    # … and all of them together hold at most MAX_STREAMS; n8n's streams are not crowded out.
    others = []
    for _ in range(MAX_STREAMS):
        _, cookie = client.app[SESSIONS].open(mint_token(settings, ["admin"], 300))
        answer = await client.get("/admin/ui/events", cookies={COOKIE: cookie})
        others.append(answer)
        if answer.status == 429:
            break
    assert [a.status for a in others] == [200] * (MAX_STREAMS - STREAMS_PER_CREDENTIAL) + [429]
    auth = {"Authorization": f"Bearer {admin_token}"}
    api = await client.get("/api/v1/events", headers=auth)
    assert api.status == 200
    api.close()
    # A drain ends them within a second or two, and opens no new one.
    await client.post("/admin/ui/drain", data={"action": "drain", "csrf": csrf})
    for stream in streams:
        await read_until_closed(stream, 5)
    assert (await client.get("/admin/ui/events")).status == 503


HIDDEN = "\u202e\u202c\u200b\u2066\u00ad\u034f\u115f\u3164\U000e0041\u2028\ufe0f\u00a0"


async def test_hidden_characters_are_spelled_out(client: TestClient, admin_token: str) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}
    workflow = "wf\u202eLIVE\u202c-\u200bab\u00ad\U000e0041"
    answer = await client.post(
        "/api/v1/workflow/execute",
        json={
            "processing_type": "echo",
            "mode": "async",  # its items are kept, to be shown
            "workflow_id": workflow,
            "execution_id": "ex\u200b\u200bid",
            "node": "N\u3164\u115fM",
            "items": [{"json": {"name": "a\u2066b\u00a0c\ufe0f\u2028"}}],
        },
        headers=auth,
    )
    job_id = (await answer.json())["job_id"]
    await finished(client, auth, job_id)
    await sign_in(client, admin_token)
    for path in ("/admin/ui/jobs", f"/admin/ui/jobs/{job_id}"):
        html = await (await client.get(path)).text()
        assert "wf⟨U+202E⟩LIVE⟨U+202C⟩-⟨U+200B⟩ab⟨U+00AD⟩⟨U+E0041⟩" in html, path
        assert "ex⟨U+200B⟩⟨U+200B⟩id" in html
        assert not any(ch in html for ch in HIDDEN), path
    page = await (await client.get(f"/admin/ui/jobs/{job_id}")).text()
    assert "N⟨U+3164⟩⟨U+115F⟩M" in page and "a⟨U+2066⟩b⟨U+00A0⟩c⟨U+FE0F⟩⟨U+2028⟩" in page
    # A form's field gets back what was typed, so that sending it again asks the same.
    query = urlencode({"workflow_id": workflow})
    filtered = await (await client.get(f"/admin/ui/jobs?{query}")).text()
    assert f'name="workflow_id" value="{workflow}"' in filtered and job_id in filtered


async def test_an_error_page_leads_on_to_what_its_reader_may_open(
    client: TestClient, settings: Settings
) -> None:
    signed_out = await client.post("/admin/ui/drain", data={"action": "drain"})
    assert 'href="/admin/ui/login">Sign in<' in await signed_out.text()
    limited = mint_token(settings, ["admin"], 300, workflows=["wf-a"])
    html = await (await client.get(LOGIN)).text()
    await client.post(LOGIN, data={"credential": limited, "csrf": csrf_of(html)})
    refused = await (await client.get("/admin/ui/dead-letters")).text()
    assert 'href="/admin/ui/jobs">Back to the jobs<' in refused
