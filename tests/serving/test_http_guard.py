"""The HTTP guard on its own, around an app that echoes what reaches it.

How the service wires it (its routes' form fields, its limits) is tested through the service.
"""

from __future__ import annotations

import asyncio

import pytest
from starlette.responses import JSONResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from ai_image_detection.serving.http_guard import ClientError, FormSpec, RequestGuard, answers_client_errors

FORM = b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\npixels\r\n--XyZ--\r\n'


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the body and content type that reached the app."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    await JSONResponse({"body": body.decode("latin-1"), "content_type": content_type})(scope, receive, send)


@pytest.fixture
def client() -> TestClient:
    """The guard around :func:`echo`: bodies up to ``len(FORM)`` bytes; ``/upload`` takes ``image``."""
    return TestClient(RequestGuard(echo, max_bytes=len(FORM), forms={"/upload": FormSpec.uploads("image")}))


def test_a_body_that_passes_reaches_the_app_unchanged_with_a_canonical_content_type(
    client: TestClient,
) -> None:
    response = client.post(
        "/upload/", content=FORM, headers={"content-type": 'Multipart/Form-Data; BOUNDARY="XyZ"'}
    )
    assert response.json() == {"body": FORM.decode(), "content_type": 'multipart/form-data; boundary="XyZ"'}
    other_route = client.post("/info", content=b"{}", headers={"content-type": "application/json"})
    assert other_route.json() == {"body": "{}", "content_type": "application/json"}, "no form expected there"


def test_an_oversized_body_is_a_413_whether_declared_or_chunked(client: TestClient) -> None:
    declared = client.post("/info", content=b"x" * (len(FORM) + 1))
    chunked = client.post("/info", content=iter([b"x" * len(FORM), b"x"]))
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert f"the limit is {len(FORM):,} bytes" in response.json()["error"]["message"]
    assert "content-length" not in chunked.request.headers


def test_a_client_error_is_answered_as_json_with_its_status_and_retry_after() -> None:
    @answers_client_errors
    async def endpoint() -> str:
        raise ClientError("overloaded", "retry shortly", 503, retry_after_s=2)

    response = asyncio.run(endpoint())
    assert isinstance(response, JSONResponse)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "2")
    assert response.body == b'{"error":{"code":"overloaded","message":"retry shortly"}}'
