"""The docker SDK and requests, as hostd imports them: without a character-set detector.

requests imports charset_normalizer at its own import (~3 MB resident for hostd's whole life,
issue 20) for one thing: guessing the encoding of an answer that names none, when its `.text`
is read (`Response.apparent_encoding`). The engine's answers are JSON or name their charset
(`text/plain; charset=utf-8`), the SDK reads the rest as bytes, and without a detector
requests takes UTF-8, the engine's own encoding. requests warns at import when it finds no
detector; that is this choice, so the warning is silenced for this import only.

docker_driver.py and image_pull.py take the SDK from here, so whichever hostd imports first
imports it this way (tests/unit/test_hostd_lazy_imports.py).
"""

import warnings

from potluck.kernel.hidden_modules import hidden

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection dependency")
    with hidden("chardet", "charset_normalizer"):
        import docker
        import docker.auth
        import docker.errors
        import docker.models.containers
        import docker.transport.unixconn
        import requests

__all__ = ["docker", "requests"]
