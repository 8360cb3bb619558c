"""The service's HTTP guard: what a refused request is, the one shape of error answers, the body checks.

Client mistakes never give a 500: each is a JSON ``{"error": {"code", "message"}}`` with a 4xx
status (or 503 with ``Retry-After`` when the client should come back). An endpoint raises
:class:`ClientError` and :func:`answers_client_errors` answers it; :class:`RequestGuard` refuses
oversized bodies and malformed forms (413, 415, 400) before the framework parses them.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import ParamSpec, TypeVar

import bentoml
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai_image_detection.serving.metrics import count_error

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class ClientError(Exception):
    """A request the service refuses: a stable ``code``, a message, a status (4xx, or 503 to retry)."""

    def __init__(self, code: str, message: str, status: int, retry_after_s: int | None = None) -> None:
        """Create the error.

        Args:
            code: Machine-readable reason (``"too_many_files"``, ``"not_an_image"``, ...).
            message: What is wrong and what would be accepted.
            status: The HTTP status (4xx, or 503 when the client should come back).
            retry_after_s: When to come back (``Retry-After``), for a 503.
        """
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.retry_after_s = retry_after_s


def error_response(code: str, message: str, status: int, retry_after_s: int | None = None) -> JSONResponse:
    """The one shape of every error the service itself answers (with ``Retry-After`` when given).

    Every error answer is built here, so each is counted here (``aiid_errors_total{code}``).
    """
    count_error(code)
    headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def answers_client_errors(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn a :class:`ClientError` raised by an endpoint into its JSON 4xx answer.

    BentoML sends a Starlette response returned by an endpoint as it is, so the endpoint keeps
    its declared return type (and its OpenAPI schema) for the successful case.
    """

    @functools.wraps(func)
    async def endpoint(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except ClientError as error:
            logger.info("refused (%s): %s", error.code, error.message)
            for argument in (*args, *kwargs.values()):
                if isinstance(argument, bentoml.Context):  # BentoML applies its status to the response
                    argument.response.status_code = error.status
            return error_response(  # type: ignore[return-value]
                error.code, error.message, error.status, error.retry_after_s
            )

    return endpoint


@dataclass(frozen=True)
class FormSpec:
    """The multipart form an upload route takes.

    Attributes:
        fields: Every field it takes.
        files: The fields that hold a file.
        required: The fields it needs.
    """

    fields: frozenset[str]
    files: frozenset[str]
    required: frozenset[str]

    @classmethod
    def uploads(cls, *names: str) -> FormSpec:
        """A form of required file fields only (``/predict``'s ``image``)."""
        return cls(frozenset(names), frozenset(names), frozenset(names))

    def describe(self) -> str:
        """The form in words, for error messages."""
        parts = []
        for name in sorted(self.fields):
            kind = "a file" if name in self.files else "text"
            parts.append(f"'{name}' ({kind}{'' if name in self.required else ', optional'})")
        return "the form takes " + ", ".join(parts)


def _form_names(body: bytes, boundary: str) -> tuple[set[str], set[str]]:
    """The field names of a multipart body, and those of them that carry a file name (the files)."""
    names, files = set(), set()
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        head = part.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        for disposition in _DISPOSITION.findall(head):
            name = _FIELD_NAME.search(disposition)
            if name:
                names.add(name.group(1))
                if _FILE_NAME.search(disposition):
                    files.add(name.group(1))
    return names, files


class RequestGuard:
    """ASGI middleware: refuse what the framework would parse badly, before it parses anything.

    - a POST body over ``max_bytes``: 413 (a declared ``Content-Length`` at once, a chunked body
      as it arrives);
    - an upload endpoint called without ``multipart/form-data``: 415;
    - a form with a field the endpoint does not take, or without the one it needs: 400.

    Bodies that pass are replayed to the app unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, forms: dict[str, FormSpec]) -> None:
        """Wrap ``app``.

        Args:
            app: The service's ASGI app.
            max_bytes: Largest accepted body.
            forms: For each upload route, the form it takes.
        """
        self.app, self.max_bytes, self.forms = app, max_bytes, forms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, or answer the 4xx."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, "payload_too_large", self._too_large(int(declared)), 413)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, "payload_too_large", self._too_large(size), 413)
                return
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        boundary = _multipart_boundary(content_type)
        problem = self._form_problem(scope["path"], content_type, boundary, body)
        if problem is not None:
            await self._refuse(scope, receive, send, *problem)
            return
        if boundary is not None:  # the framework reads only the lower-case, boundary-first spelling
            canonical = f'multipart/form-data; boundary="{boundary}"'.encode("latin-1")
            scope = {
                **scope,
                "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
                + [(b"content-type", canonical)],
            }
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return f"the request body has {size:,} bytes or more; the limit is {self.max_bytes:,} bytes"

    def _form_problem(
        self, path: str, content_type: str, boundary: str | None, body: bytes
    ) -> tuple[str, str, int] | None:
        """What is wrong with an upload's form, or None (also for routes that take no upload)."""
        form = self.forms.get(path.rstrip("/"))
        if form is None:
            return None
        if boundary is None:
            message = f"send multipart/form-data ({form.describe()}); got {content_type!r}"
            return "not_multipart", message, 415
        names, files = _form_names(body, boundary)
        if unexpected := names - form.fields:
            return (
                "unexpected_field",
                f"unexpected form field(s) {sorted(unexpected)}; {form.describe()}",
                400,
            )
        if missing := form.required - names:
            return "missing_field", f"the form has no field {sorted(missing)}; {form.describe()}", 400
        if not_files := (names & form.files) - files:
            message = f"form field(s) {sorted(not_files)} hold text, not a file; send the image file in them"
            return "not_a_file", message, 400
        return None

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, code: str, message: str, status: int
    ) -> None:
        logger.info("refused (%s): %s", code, message)
        await error_response(code, message, status)(scope, receive, send)


def _multipart_boundary(content_type: str) -> str | None:
    """The boundary of a ``multipart/form-data`` content type (any case, any parameter order), or None."""
    header = EmailMessage()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        return None
    return boundary


_DISPOSITION = re.compile(r"^content-disposition:\s*form-data\s*;([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_FIELD_NAME = re.compile(r'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILE_NAME = re.compile(r"(?:^|;)\s*filename\*?=", re.IGNORECASE)
