"""``mask2former serve``: load the model once, then answer HTTP requests until SIGTERM/SIGINT
(which stop accepting, finish the requests in flight and exit 0)."""
from __future__ import annotations

import argparse
import signal
import sys
import warnings

from .. import tta


def add_parser(sub: argparse._SubParsersAction, default_model: str) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP: Hugging Face Inference API, native API, web page")
    p.add_argument("--model", default=default_model, help="HF folder, hub id or original .pkl (default: %(default)s)")
    p.add_argument("--task", choices=["semantic", "instance", "panoptic"],
                   help="default task of requests (default: the checkpoint's own); requests may ask for another")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--resize", choices=["original", "config"], default="original",
                   help="as for segment: the original's test-time resize (default) or preprocessor_config.json")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"], default="fp32",
                   help="as for segment (default: fp32, exact)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the model (default: one per core)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="as for segment (default: onnxruntime for a .onnx --model, else torch); see docs/export.md")
    p.add_argument("--threshold", type=float, default=None,
                   help="panoptic: object mask threshold (default 0.8); instance: minimum score (default 0)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="most concurrent requests run in one forward (default: %(default)s; 1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a request waits for others to share its forward (default: %(default)s)")
    p.add_argument("--queue-size", type=int, default=64,
                   help="requests waiting for the model before new ones get 503 (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a request may take before it gets 504 (default: %(default)s)")
    p.add_argument("--max-bytes", type=int, default=20 * 2**20,
                   help="largest request body in bytes, 413 beyond (default: %(default)s = 20 MiB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image in pixels (width x height), 413 beyond (default: %(default)s)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on API calls (default: none; or $MASK2FORMER_API_KEY)")
    p.add_argument("--no-access-log", action="store_true", help="no JSON access log line per request on stderr")
    tta.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    try:
        import uvicorn

        from ..serve import ServeConfig, build_app
    except ImportError as e:
        print(f"error: serving needs the serve extra (pip install 'mask2former[serve]'): {e}", file=sys.stderr)
        return 1
    from ..precision import PrecisionFallbackWarning
    from ..segmenter import Segmenter

    config = ServeConfig(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                         queue_size=args.queue_size, timeout_s=args.timeout, max_bytes=args.max_bytes,
                         max_pixels=args.max_pixels, api_key=args.api_key or os.environ.get("MASK2FORMER_API_KEY"),
                         access_log=not args.no_access_log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionFallbackWarning)  # reported below, on one line
        seg = Segmenter(args.model, task=args.task, device=args.device, resize=args.resize,
                        threshold=args.threshold, **tta.segmenter_kwargs(args), precision=args.precision,
                        num_threads=args.threads, backend=args.backend)
    if seg.precision.message:
        print(f"warning: {seg.precision.message}", file=sys.stderr)
    app = build_app(seg, config, model_name=args.model)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=int(config.timeout_s) + 5))
    # uvicorn re-raises the signal it stopped on once it has shut down; a no-op handler makes
    # that a normal exit (0) instead of death by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    print(f"model {args.model} loaded ({seg.task}, {seg.precision.used}); starting http://{args.host}:{args.port}/ "
          f"(batch <= {config.max_batch_size}, wait <= {config.max_wait_ms:g} ms)", file=sys.stderr, flush=True)
    server.run()
    return 0 if server.started else 1
