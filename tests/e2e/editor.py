"""n8n's REST API as its editor calls it, in n8n 1.x and 2.x alike: a logged-in user (the
instance's owner, set up on first use), the node types, credentials and their *Test*, the
dropdowns and fields a node loads from its methods, and saving and activating workflows.

Every call carries the cookie n8n issues at log-in and the `browser-id` header the editor sends
(n8n ties the cookie to it); answers come wrapped in `{"data": …}`, which `call` unwraps. n8n marks
its cookie `Secure`; a browser sends it to a loopback address over plain HTTP, aiohttp's cookie jar
does not, so the client keeps it itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

AUTH_COOKIE = "n8n-auth"
OWNER = {
    "email": "owner@example.com",
    "firstName": "Ada",
    "lastName": "Owner",
    "password": "An-owner-passw0rd",
}


class EditorError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class Editor:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.cookie: str | None = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """`path` under the server (`/rest/…`, `/types/…`); the answer's `data`, or the
        whole answer where there is none (the type files)."""
        headers = {"Cookie": f"{AUTH_COOKIE}={self.cookie}"} if self.cookie else {}
        async with self.session.request(
            method, f"{self.url}{path}", json=body, headers=headers
        ) as response:
            if AUTH_COOKIE in response.cookies:  # issued at log-in, renewed now and then
                self.cookie = response.cookies[AUTH_COOKIE].value
            answer = await response.json(content_type=None)
            if response.status >= 400:
                raise EditorError(response.status, answer)
        return answer["data"] if isinstance(answer, dict) and "data" in answer else answer

    async def sign_in(self) -> None:
        """Set up the owner if no one has yet (what a fresh n8n's first screen does), else log in."""
        settings = await self.call("GET", "/rest/settings")
        if settings["userManagement"]["showSetupOnFirstLoad"]:
            await self.call("POST", "/rest/owner/setup", OWNER)
        else:
            login = {"emailOrLdapLoginId": OWNER["email"], "password": OWNER["password"]}
            await self.call("POST", "/rest/login", login)

    # The node types: the list the editor loads at start, then the full description of one.
    async def node_types(self) -> list[dict[str, Any]]:
        return await self.call("GET", "/types/nodes.json")  # type: ignore[no-any-return]

    async def node_type(self, name: str, version: int = 1) -> dict[str, Any]:
        (described,) = await self.call(
            "POST", "/rest/node-types", {"nodeInfos": [{"name": name, "version": version}]}
        )
        return described  # type: ignore[no-any-return]

    # Credentials: opened in the credential modal (secrets redacted), then *Test* with what the
    # form holds — n8n fills redacted fields from the stored credential.
    async def credential(self, credential_id: str) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", f"/rest/credentials/{credential_id}?includeData=true"
        )

    async def test_credential(self, credential: dict[str, Any]) -> dict[str, Any]:
        """n8n's verdict: `{"status": "OK" | "Error", "message": …}`."""
        fields = {key: credential[key] for key in ("id", "name", "type", "data")}
        return await self.call(  # type: ignore[no-any-return]
            "POST", "/rest/credentials/test", {"credentials": fields}
        )

    async def create_credential(self, name: str, kind: str, data: dict[str, Any]) -> str:
        created = await self.call(
            "POST", "/rest/credentials", {"name": name, "type": kind, "data": data}
        )
        return str(created["id"])

    # A node's methods, called while its parameters are edited.
    async def options(self, node: dict[str, Any], path: str, method: str) -> list[dict[str, Any]]:
        """A dropdown's options (`loadOptions.<method>`) for the parameter at `path`."""
        body = {**self._node_request(node, path), "methodName": method}
        return await self.call(  # type: ignore[no-any-return]
            "POST", "/rest/dynamic-node-parameters/options", body
        )

    async def resource_mapper_fields(
        self, node: dict[str, Any], path: str, method: str
    ) -> list[dict[str, Any]]:
        """The fields a resource mapper (`resourceMapping.<method>`) offers."""
        body = {**self._node_request(node, path), "methodName": method}
        answer = await self.call(
            "POST", "/rest/dynamic-node-parameters/resource-mapper-fields", body
        )
        return answer["fields"]  # type: ignore[no-any-return]

    @staticmethod
    def _node_request(node: dict[str, Any], path: str) -> dict[str, Any]:
        return {
            "path": path,
            "nodeTypeAndVersion": {"name": node["type"], "version": node["typeVersion"]},
            "currentNodeParameters": node["parameters"],
            "credentials": node.get("credentials", {}),
        }

    # Workflows: saved, then activated (published, in 2.x) — its webhooks and triggers go live.
    async def create_workflow(self, workflow: dict[str, Any]) -> dict[str, Any]:
        fields = ("name", "nodes", "connections", "settings")
        body = {"active": False, **{key: workflow[key] for key in fields}}  # 1.x requires it
        return await self.call("POST", "/rest/workflows", body)  # type: ignore[no-any-return]

    async def activate(self, saved: dict[str, Any]) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", f"/rest/workflows/{saved['id']}/activate", {"versionId": saved["versionId"]}
        )


@asynccontextmanager
async def editor(url: str) -> AsyncIterator[Editor]:
    """A signed-in editor session on the n8n at `url`."""
    headers = {"browser-id": str(uuid.uuid4())}
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), headers=headers
    ) as session:
        client = Editor(url, session)
        await client.sign_in()
        yield client
