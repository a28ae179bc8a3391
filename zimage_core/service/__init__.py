"""The headless HTTP service, one module per concern:

request      the POST /generate fields, limits and validation (no aiohttp: ComfyUI's route and Ray Serve reuse it)
jobs         a bounded, cancellable job queue with one worker thread (knows nothing of Z-Image)
runner       one request → the pipeline → the answer payload (model bundle, upscaler and face model caches)
connections  connection cap, header deadline and JSON protocol errors on aiohttp's public classes
app          the aiohttp handlers, access policy, `create_app` and `serve`
"""

from .request import GenerateRequest, Limits, RequestError, parse_request

__all__ = ["GenerateRequest", "Limits", "RequestError", "parse_request"]
