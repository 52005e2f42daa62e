"""HTTP routes: ``POST /infer``, the KServe v2 / Open Inference Protocol paths, ``/metrics``."""

from service.routes import infer, metrics, v2

ROUTERS = (infer.router, v2.router, metrics.router)

__all__ = ["ROUTERS"]
