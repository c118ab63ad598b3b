"""The pool's web pages, served by the allocator's own app: server-rendered, live by server-sent events.

`routes.setup` adds them to the app (api.make_app calls it); views.py turns the
folded model into plain values, sessions.py signs browsers in, live.py streams
each page's live part as the fold moves, past.py folds the log's past for the
History page and `?at=` within bounds. Templates and the one script and
style sheet are files of this package: nothing is fetched from elsewhere.
"""

from potluck.allocator.web.routes import is_page, setup
from potluck.allocator.web.strays import is_api, stray

__all__ = ["is_api", "is_page", "setup", "stray"]
