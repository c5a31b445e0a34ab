"""``build_app(segmenter, config)``: the FastAPI application ``mask2former serve`` runs.

Routes: ``POST /`` (Hugging Face Inference API), ``POST /v1/segment`` and
``POST /v1/segment/{output}`` (native), ``GET /v1/model``, the web page at ``GET /`` with its
assets under ``/static``, ``/healthz``, ``/readyz``, ``/metrics`` and the OpenAPI docs.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..segmenter import SegmentationResult, Segmenter
from . import hf_api, native
from .batching import Batcher, QueueFull
from .config import ServeConfig
from .errors import ApiError, install_error_handlers, install_internal_error_handler
from .inputs import decode_image, image_stem, is_raw_image_type, media_type, multipart_image, read_body
from .metrics import Metrics
from .middleware import AccessLog, json_log_line
from .model_card import describe_model

STATIC = Path(__file__).parent / "static"
NATIVE_QUERY = {"task", "threshold", "mask_threshold", "overlap_threshold", "alpha", "name", "label_map"}
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
HF_BODY = {"requestBody": {"required": True, "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "inputs": {"type": "string", "description": "the image, base64"},
        "parameters": {"type": "object", "properties": {
            "threshold": {"type": "number"}, "mask_threshold": {"type": "number"},
            "overlap_mask_area_threshold": {"type": "number"},
            "subtask": {"type": "string", "enum": ["semantic", "instance", "panoptic"]}}}}}}}}}


class Service:
    """The one model, its batcher and the request steps every route shares."""

    def __init__(self, segmenter: Segmenter, config: ServeConfig, metrics: Metrics):
        self.segmenter, self.config = segmenter, config
        self.batcher = Batcher(config.max_batch_size, config.max_wait_ms / 1000.0, config.queue_size,
                               on_batch=metrics.batch, warmup=segmenter)

    def check_key(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                           {"WWW-Authenticate": "Bearer"})

    async def image_upload(self, request: Request) -> tuple[bytes, Optional[str]]:
        """A native request's image: multipart field or raw body."""
        kind = media_type(request)
        if kind != "multipart/form-data" and not is_raw_image_type(kind):
            raise ApiError(415, f"unsupported media type {kind!r}: send multipart/form-data with an 'image' "
                                "field, or the image itself as the body (image/*)")
        body = await read_body(request, self.config.max_bytes)
        if kind == "multipart/form-data":
            return await multipart_image(request, body)
        return body, None

    async def segment(self, data: bytes, options: hf_api.Options, started: float) -> SegmentationResult:
        rgb = await run_in_threadpool(decode_image, data, self.config.max_pixels)
        try:
            seg = self.segmenter.with_options(options.task, options.threshold, options.overlap_threshold,
                                              options.mask_threshold)
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        key = (seg.task, seg.threshold, seg.overlap_threshold, seg.mask_threshold)
        try:
            future = self.batcher.submit(rgb, seg, key)
        except QueueFull as e:
            raise ApiError(503, str(e), {"Retry-After": str(e.retry_after)}) from None
        left = self.config.timeout_s - (time.monotonic() - started)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(left, 0.001))
        except asyncio.TimeoutError:
            raise ApiError(504, f"no result within the request timeout of {self.config.timeout_s:g} s") from None


def _reject_unknown_query(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise ApiError(422, f"unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}")


def build_app(segmenter: Segmenter, config: Optional[ServeConfig] = None, model_name: str = "",
              log: Optional[Callable[[dict[str, Any]], None]] = json_log_line) -> FastAPI:
    config = config or ServeConfig()
    metrics = Metrics(lambda: service.batcher.queue_depth)
    service = Service(segmenter, config, metrics)
    card = describe_model(segmenter, model_name, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        yield
        await run_in_threadpool(service.batcher.stop, 60.0)

    app = FastAPI(title="mask2former", version="1", lifespan=lifespan,
                  description="Mask2Former segmentation: Hugging Face Inference API at POST /, native API under /v1.")
    install_error_handlers(app)
    install_internal_error_handler(app, lambda text: log({"level": "error", "message": text}) if log else None)
    app.add_middleware(AccessLog, metrics=metrics, log=log if config.access_log else None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    auth = [Depends(service.check_key)]

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        if service.batcher.ready.is_set():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": service.batcher.warmup_error or "warming up"}, status_code=503)

    @app.get("/metrics", dependencies=auth, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/model", dependencies=auth, summary="the loaded model: architecture, classes, task, precision")
    async def model() -> dict[str, Any]:
        return card

    @app.post("/", dependencies=auth, openapi_extra=HF_BODY,
              summary="Hugging Face Inference API image-segmentation (InferenceClient.image_segmentation)")
    async def hf_segment(request: Request) -> JSONResponse:
        started = time.monotonic()
        _reject_unknown_query(request, set())
        kind = media_type(request)
        if kind != "application/json" and not is_raw_image_type(kind):
            raise ApiError(415, f"unsupported media type {kind!r}: send the image itself (image/*) or JSON "
                                '{"inputs": "<base64 image>", "parameters": {...}}')
        body = await read_body(request, config.max_bytes)
        if kind == "application/json":
            data, options = hf_api.parse_json_request(body)
        else:
            data, options = body, hf_api.Options()
        result = await service.segment(data, options, started)
        return JSONResponse(await run_in_threadpool(hf_api.response_elements, result))

    def native_options(task: Optional[str], threshold: Optional[float], mask_threshold: Optional[float],
                       overlap_threshold: Optional[float]) -> hf_api.Options:
        return hf_api.check_options(hf_api.Options(task, threshold, mask_threshold, overlap_threshold))

    @app.post("/v1/segment", dependencies=auth, openapi_extra=IMAGE_BODY,
              summary="segment an image: one JSON with areas, classes present, segments/instances, label PNG")
    async def segment_summary(request: Request, task: Optional[str] = None, threshold: Optional[float] = None,
                              mask_threshold: Optional[float] = None, overlap_threshold: Optional[float] = None,
                              name: Optional[str] = None,
                              label_map: bool = Query(False, description="add the raw class id of every pixel")
                              ) -> JSONResponse:
        started = time.monotonic()
        _reject_unknown_query(request, NATIVE_QUERY - {"alpha"})
        options = native_options(task, threshold, mask_threshold, overlap_threshold)
        data, filename = await service.image_upload(request)
        result = await service.segment(data, options, started)
        stem = image_stem(name or filename)
        body = await run_in_threadpool(native.summary, result, stem, segmenter.info.stuff_ids, label_map)
        return JSONResponse(body)

    @app.post("/v1/segment/{output}", dependencies=auth, openapi_extra=IMAGE_BODY,
              summary="segment an image: one of the files `segment` writes, byte for byte")
    async def segment_file(request: Request, output: str, task: Optional[str] = None,
                           threshold: Optional[float] = None, mask_threshold: Optional[float] = None,
                           overlap_threshold: Optional[float] = None, alpha: Optional[float] = None,
                           name: Optional[str] = None) -> Response:
        started = time.monotonic()
        _reject_unknown_query(request, NATIVE_QUERY - {"label_map"})
        options = native_options(task, threshold, mask_threshold, overlap_threshold)
        native.check_output(output, options.task or segmenter.task)
        opacity = config.overlay_alpha if alpha is None else alpha
        if not 0.0 <= opacity <= 1.0:
            raise ApiError(422, f"alpha must be in [0, 1]; got {opacity}")
        data, filename = await service.image_upload(request)
        result = await service.segment(data, options, started)
        stem = image_stem(name or filename)
        content = await run_in_threadpool(native.render, result, output, stem, segmenter.info.stuff_ids, opacity)
        return Response(content, media_type=native.OUTPUTS[output][0])

    return app
