"""The read-only status page: server-rendered HTML (Jinja2, autoescaped), no JavaScript.

Served by the daemon's listener (`[http] listen`, daemon/listener.py) and by
`renewald web` (cli/web.py). Every read goes through the store (store/status.py and the
store's public methods); why a job is (not) going out comes from `store/explain.py`,
the same rule the CLI's `show` and `jobs` render.
"""

from renewald.web.app import StatusApp

__all__ = ["StatusApp"]
