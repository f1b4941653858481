"""``convzoo explore [RUN]``: a local web page to play with the chapter's operations and look inside a run.

    server.py     the ASGI application (Starlette) and its server (uvicorn): routes, refusals, binding
    security.py   the door: Host and Origin checks, the per-start secret, the page's security headers
    validate.py   every number and field a request carries, bounded
    ops.py        the operations endpoint: ``convzoo.ops`` on an edited grid and kernel
    uploads.py    an image the page sends, capped and decoded through ``convzoo.images``
    network.py    a run's prediction, feature maps, kernels and saliency for one image
    receptive.py  receptive fields from the layers' kernel, stride, padding and dilation
    static/       the page: index.html, explore.js, explore.css (no build step, nothing from elsewhere)

Needs the ``explore`` extra (``pip install 'convzoo[explore]'``: starlette, uvicorn, captum).
"""

from .server import ExploreError, ExplorerServer, create_app, open_server

__all__ = ["ExploreError", "ExplorerServer", "create_app", "open_server"]
