"""The small shared kernel: values and helpers every layer may use, none of them Potluck's domain.

Sizes and durations as users write them (sizes, durations), refusals with a
stable code (rejections), SSH key files (ssh_identity), the version (version),
and the span helpers for what has no instrumentation of its own (spans).
"""
