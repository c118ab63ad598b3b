"""Host labels that mean something to the pool itself, not only to the requests that name them.

A member may label a host as they like (`arch=arm64`, `gpu=yes`) and requests pick hosts by
those labels. The labels here are set by Potluck's own tools and obeyed by the scheduler, so
the side that sets one and the side that obeys it must spell it alike.
"""

#: What a hollow host (`potluck ops hollow`: an in-memory engine that accepts work and runs
#: none of it, for scale tests) registers with. The scheduler places a request on such a host
#: only when the request is constrained to this label: otherwise a user's work would "run" on
#: nothing (services/allocator/scheduler.py, "Hollow hosts").
HOLLOW_LABEL: tuple[str, str] = ("hollow", "true")
