"""The Starlette app: ``POST /sync/`` (PROTOCOL.md section 5) and ``GET /health``.

A request is checked in the order that costs least first: auth, headers,
size and gzip (``reading.py``), then JSON, the number of records per model,
the manifest, and the node id the token may sync as. Only a manifest that
passes all of them reaches the engine, so a malformed request is refused with
a 4xx and never touches the database. Parsing, ``process`` and encoding run
together, as one call of ``SyncService.run``: at most one hop off the event
loop per round (JSON work holds the GIL anyway, so it gains nothing from more
threads).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from client_sdk.protocol.sealed import parse_sealed
from client_sdk.protocol.wire import SyncManifest, parse_json
from client_sdk.transport.binding import (
    INVALID_JSON,
    MANIFEST_ERRORS,
    NODE_FORBIDDEN,
    NOT_ALLOWED,
    NOT_AN_OBJECT,
    SYNC_ABORTED,
    abort_reason,
    invalid_manifest,
    is_refusal,
    response_json,
)
from client_sdk.transport.compression import gzip_bytes

from .config import ServerConfig
from .guards import AcceptFailureLog
from .reading import Grant, Refusal, accepts_gzip, authorize, read_json_body
from .service import INLINE_BYTES_MAX, SyncService, is_lock_error

log = logging.getLogger("server_stub")


def create_app(config: ServerConfig) -> Starlette:
    """The server for ``config``; the database is opened (and its schema created) right away."""
    service = SyncService(config)

    async def sync(request: Request) -> Response:
        try:
            grant = authorize(request, config)
            body = await read_json_body(request, config.request_bytes_max, config.body_timeout)
            gzipped = accepts_gzip(request)
            small = len(body) <= INLINE_BYTES_MAX
            return await service.run(lambda: answer(service, body, grant, gzipped), inline=small)
        except Refusal as refusal:
            return error_response(refusal.status, refusal.text, refusal.headers, refusal.extra)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "node_id": service.node_id})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(AcceptFailureLog(previous))
        try:
            yield
        finally:
            loop.set_exception_handler(previous)
            service.close()

    return Starlette(
        routes=[Route("/sync/", sync, methods=["POST"]), Route("/health", health, methods=["GET"])],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )


def error_response(
    status: int, text: str, headers: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"ok": False, "error": text, **(extra or {})}, status_code=status, headers=headers)


def answer(service: SyncService, body: bytes, grant: Grant, gzipped: bool) -> Response:
    """One round, as ``SyncService.run`` calls it: parse, check the node id, ``process`` within the
    grant's user's scope, encode."""
    manifest = parse_manifest(body, service.config.records_per_model_max)
    if grant.nodes is not None and manifest.node_id not in grant.nodes:
        raise Refusal(403, NODE_FORBIDDEN)
    try:
        response, result = service.process(manifest, grant.user)
    except MANIFEST_ERRORS as exc:  # a value the server's column cannot hold (e.g. an integer past 64 bits)
        raise Refusal(400, invalid_manifest(exc)) from exc
    except Exception as exc:
        if not (is_refusal(exc) or is_lock_error(exc)):
            raise
        log.info("sync from %r aborted: %s", manifest.node_id, exc)
        reason = abort_reason(exc) or ("lock_contention" if is_lock_error(exc) else None)
        extra = {"detail": str(exc)} if reason is None else {"reason": reason, "detail": str(exc)}
        raise Refusal(409, SYNC_ABORTED, extra) from exc
    return _encode(response_json(response, result), gzipped)


def parse_manifest(body: bytes, records_per_model_max: int) -> SyncManifest:
    try:
        raw, covered_digest = _decode(body)
    except (ValueError, RecursionError) as exc:
        raise Refusal(400, INVALID_JSON) from exc
    if not isinstance(raw, dict):
        raise Refusal(400, NOT_AN_OBJECT)
    check_record_counts(raw, records_per_model_max)
    try:
        return SyncManifest.from_dict(raw, covered_digest=covered_digest)
    except MANIFEST_ERRORS as exc:
        raise Refusal(400, invalid_manifest(exc)) from exc
    except RecursionError as exc:  # nesting deep enough to pass json.loads but not the checksum's dumps
        raise Refusal(400, invalid_manifest("data nested too deeply")) from exc


def _decode(body: bytes) -> tuple[Any, str | None]:
    """The decoded body, and the digest of its covered part if it is laid out as the SDK seals it
    (``parse_sealed``): checking its checksum then costs no second encoding of a pushed page."""
    try:
        return parse_sealed(body)
    except (ValueError, RecursionError):  # a seam inside a body laid out otherwise: read it whole
        return parse_json(body), None


def check_record_counts(raw: dict[str, Any], limit: int) -> None:
    """413 if one payload (one model: labels are unique) holds more than ``limit`` records and deletes.

    Counted on the decoded JSON, before a single record is built or checked:
    an oversized request costs its parse and nothing more. Shapes that are
    wrong are left to ``SyncManifest.from_dict`` to name.
    """
    payloads = raw.get("payloads")
    if not isinstance(payloads, list):
        return
    for index, payload in enumerate(payloads):
        if not isinstance(payload, dict):
            continue
        count = sum(len(part) for part in (payload.get("records"), payload.get("deletes")) if isinstance(part, dict))
        if count > limit:
            label = payload.get("model_label")
            where = f"model {label[:100]!r}" if isinstance(label, str) else f"payload {index}"
            raise Refusal(413, f"Too many records: {where} has {count} records and deletes in this request, "
                               f"over the limit of {limit} per model per request; send them in smaller batches")


def _encode(body: str, gzipped: bool) -> Response:
    content = body.encode("ascii")
    headers = {"Vary": "Accept-Encoding"}
    if gzipped:
        content = gzip_bytes(content)
        headers["Content-Encoding"] = "gzip"
    return Response(content, media_type="application/json", headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    text = NOT_ALLOWED if exc.status_code == 405 else exc.detail
    return error_response(exc.status_code, text, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Internal server error")
