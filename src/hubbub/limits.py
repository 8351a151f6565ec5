"""Request bodies read within bounds: a body is refused as soon as it passes its limit.

Nothing an outsider sends is buffered whole before it is checked: the declared length
is checked first, then the bytes are counted as they stream in. Malformed JSON, or JSON
nested deeper than any real request, is a 400, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import HTTPException, Request
from starlette.datastructures import FormData, Headers
from starlette.formparsers import MultiPartException, MultiPartParser

MAX_JSON_BYTES = 64 << 10
MAX_JSON_DEPTH = 32


def _too_large(limit: int) -> HTTPException:
    size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
    return HTTPException(413, f"request body larger than {size}")


def check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, "bad Content-Length") from None
        if size > limit:
            raise _too_large(limit)


async def bounded_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk; 413 the moment it passes ``limit`` bytes."""
    check_declared_length(request, limit)
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        yield chunk


async def read_body(request: Request, limit: int = MAX_JSON_BYTES) -> bytes:
    return b"".join([chunk async for chunk in bounded_stream(request, limit)])


def _depth(value: object, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping at ``limit`` (iterative: no recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
    return deepest


async def read_json(request: Request, limit: int = MAX_JSON_BYTES) -> object:
    """A JSON body of at most ``limit`` bytes and ``MAX_JSON_DEPTH`` levels, or 400/413."""
    raw = await read_body(request, limit)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPException(400, "the body is not valid JSON") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise HTTPException(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


async def read_form(request: Request, limit: int) -> FormData:
    """A multipart form, its files spooled to disk, refused (413) past ``limit`` bytes."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(400, "expected a multipart/form-data body")
    parser = MultiPartParser(
        Headers(raw=request.headers.raw),
        bounded_stream(request, limit),
        max_files=1,
        max_fields=16,
        max_part_size=64 << 10,
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, exc.message) from None
