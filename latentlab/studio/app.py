"""The studio's HTTP face: the page, its static files, and the JSON API over a `Studio` (FastAPI).

Every error a request can cause is a 4xx JSON {"error": "<one line>"}: a malformed or ill-typed
body 422, a refused value (unknown attribute, image that is no image) 400, an unknown face 404, an
upload over MAX_UPLOAD bytes 413 (counted as it streams in, with or without a Content-Length). Work on the
model runs in the thread pool, one pass at a time; a live render whose page has already moved on (the
browser aborted it for a newer one) is dropped when its turn comes, unrendered, so a fast drag never
queues up work.
"""

from __future__ import annotations

import asyncio
import math
import re
import weakref
from pathlib import Path
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from latentlab.errors import LatentlabError
from latentlab.studio import renders
from latentlab.studio.requests import ExportRequest, RenderRequest, SampleRequest
from latentlab.studio.session import Studio, UnknownFace

STATIC = Path(__file__).with_name("static")
MAX_UPLOAD = 20 * 1024 * 1024  # bytes
Body = TypeVar("Body", bound=BaseModel)
PNG = "image/png"


class RequestError(Exception):
    """A request refused with a status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return f"malformed JSON: {first['msg']}"
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _too_big() -> RequestError:
    return RequestError(413, f"the upload is larger than {MAX_UPLOAD // 2**20} MB; send a smaller photo")


async def _limited(request: Request) -> Request:
    """The request with its body read, refused with 413 as soon as more than the upload limit has arrived."""
    if int(request.headers.get("content-length") or 0) > MAX_UPLOAD + 64 * 1024:
        raise _too_big()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD + 64 * 1024:
            raise _too_big()
        chunks.append(chunk)
    body = b"".join(chunks)

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive=replay)


async def _body(request: Request, model: type[Body]) -> Body:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestError(422, _validation_message(exc)) from None


def create_app(studio: Studio) -> FastAPI:
    """The app serving `studio`: GET /, /static/*, and /api/* as the module doc describes."""
    app = FastAPI(title="latentlab studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    app.state.dropped_renders = 0  # live renders skipped because their page had moved on
    # live renders wait for their turn on the event loop, not in the thread pool, so a dropped one costs
    # nothing; one lock per loop (a server runs one; test clients may run one per request)
    turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestError)
    async def _refused(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(UnknownFace)
    async def _unknown(_: Request, exc: UnknownFace) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(LatentlabError)
    async def _latentlab(_: Request, exc: LatentlabError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> dict:
        return studio.info()

    @app.get("/api/gallery/{name}")
    def gallery(name: str) -> Response:
        index = name.removesuffix(".png")
        if not name.endswith(".png") or not index.isdigit() or len(index) > 9:
            raise UnknownFace(f"no gallery face {name!r}; ask for /api/gallery/<index>.png")
        face = studio.face(f"g{int(index)}")
        return Response(renders.png_bytes(studio.model_view(face.image)), media_type=PNG)

    @app.get("/api/face/{face_id}/{which}")
    def face_image(face_id: str, which: str) -> Response:
        if which not in ("input.png", "reconstruction.png"):
            raise UnknownFace(f"no picture {which!r}; ask for input.png or reconstruction.png")
        face = studio.face(face_id)
        image = studio.model_view(face.image) if which == "input.png" else studio.decode(face.z[None])[0]
        return Response(renders.png_bytes(image), media_type=PNG)

    @app.post("/api/upload")
    async def upload(request: Request) -> dict:
        request = await _limited(request)
        try:
            form = await request.form(max_files=1, max_fields=8)
        except (HTTPException, AssertionError, ValueError) as exc:
            message = f"the upload is not a readable form ({exc}); send the photo as the field 'file'"
            raise RequestError(400, message) from None
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise RequestError(400, "no photo in the upload; send it as the multipart field 'file'")
        data = await file.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise _too_big()
        if not data:
            raise RequestError(400, f"{file.filename or 'the upload'} is empty (0 bytes)")
        face_id, face = await run_in_threadpool(studio.upload, data, file.filename or "upload")
        seen = studio.model_view(face.image).double() / 255
        recon = (await run_in_threadpool(studio.decode, face.z[None]))[0].double() / 255
        mse = float(((recon - seen) ** 2).mean())
        psnr = 100.0 if mse == 0 else min(100.0, -10.0 * math.log10(mse))
        error = float((recon - seen).abs().max())
        return {"id": face_id, "name": face.name, "psnr": psnr, "max_error": error, "face_crop": face.face_crop}

    @app.post("/api/sample")
    async def sample(request: Request) -> dict:
        body = await _body(request, SampleRequest)
        return {"id": await run_in_threadpool(studio.sample, body.seed, body.temperature)}

    @app.post("/api/render")
    async def render(request: Request) -> Response:
        body = await _body(request, RenderRequest)
        async with turns.setdefault(asyncio.get_running_loop(), asyncio.Lock()):
            if await request.is_disconnected():
                app.state.dropped_renders += 1
                return Response(status_code=204)  # nobody is waiting for this picture any more
            return Response(await run_in_threadpool(renders.render, studio, body), media_type=PNG)

    @app.post("/api/command")
    async def command(request: Request) -> dict:
        body = await _body(request, RenderRequest)
        return await run_in_threadpool(renders.command, studio, body)

    @app.post("/api/export")
    async def export(request: Request) -> Response:
        body = await _body(request, ExportRequest)
        data, name = await run_in_threadpool(renders.export, studio, body)
        media = "image/gif" if body.format == "gif" else "video/mp4"
        name = re.sub(r"[^\w.-]", "_", name)
        return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app
