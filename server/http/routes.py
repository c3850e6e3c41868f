"""POST /webhooks/github: GitHub's deliveries, verified before anything is read."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from server.bodies import read_at_most
from server.domain.webhook import handle_delivery, verify_signature
from server.http.appkeys import CLOCK, METRICS, REQUEST_ID, SETTINGS

logger = logging.getLogger("ghvault.webhooks")

MAX_BODY_BYTES = 1024 * 1024


async def github_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await _read_body(request)
    if body is None:
        return _counted(request, "too_large", _answer(413, "body too large"))
    app_type = verify_signature(
        request.headers.get("X-Hub-Signature-256"), body, settings.github_webhook_secrets
    )
    if app_type is None:
        logger.warning("request %s: webhook signature missing or wrong", request[REQUEST_ID])
        return _counted(request, "bad_signature", _answer(401, "signature missing or wrong"))
    delivery_id = request.headers.get("X-GitHub-Delivery", "").strip()
    event = request.headers.get("X-GitHub-Event", "").strip()
    if not delivery_id or not event or len(delivery_id) > 128 or not delivery_id.isprintable():
        return _counted(
            request, "malformed", _answer(400, "X-GitHub-Delivery and X-GitHub-Event are required")
        )
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the stack
        return _counted(request, "malformed", _answer(400, "body is not JSON"))
    if not isinstance(payload, dict):
        return _counted(request, "malformed", _answer(400, "body is not a JSON object"))
    try:
        outcome = await handle_delivery(
            app_type=app_type,
            delivery_id=delivery_id,
            body=body,
            event=event,
            payload=payload,
            now=request.app[CLOCK](),
        )
    except ValueError as exc:
        return _counted(request, "malformed", _answer(400, str(exc)))
    if not outcome.handled:
        return _counted(request, "ignored", web.Response(status=204))
    logger.info(
        "request %s: webhook %s delivery %s: %s",
        request[REQUEST_ID],
        event,
        delivery_id,
        "duplicate" if outcome.duplicate else f"revoked {outcome.revoked}",
    )
    return _counted(
        request,
        "duplicate" if outcome.duplicate else "processed",
        web.json_response(
            {"status": "duplicate" if outcome.duplicate else "ok", "revoked": outcome.revoked}
        ),
    )


async def _read_body(request: web.Request) -> bytes | None:
    """The whole raw body (the signature covers every byte), or None past the cap."""
    return await read_at_most(request.content, request.content_length, MAX_BODY_BYTES)


def _counted(request: web.Request, result: str, response: web.Response) -> web.Response:
    request.app[METRICS].webhook_done(result)
    return response


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
