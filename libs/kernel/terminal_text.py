"""Another party's text, made safe to show on a terminal.

A user's command, environment, image reference or job name reaches a member's and an
operator's terminal; a member's host name and hostd's failure details reach a user's. A
terminal interprets some characters in what it prints: ESC and C1 controls start sequences that
move the cursor over earlier lines, retitle the window, make hyperlinks (OSC 8) or write the
reader's clipboard (OSC 52); `\\r` and backspace hide what came before; bidi overrides show
text in another order than it reads. Printed raw, such text makes the reader's terminal lie to
them, or act for the writer.

`shown` writes each such character as an escape (`\\x1b`, `\\x9b`, `\\u202e`) instead: the
terminal interprets nothing, and the reader sees that something odd is there, which silently
stripping would hide. It is for human output only: JSON output already escapes (json.dumps
writes `\\u001b`). The characters escaped are those of the Unicode categories that
potluck.contracts.host_labels refuses in a label (Cc: C0, DEL, C1; Cf: format, bidi
overrides and isolates among them; Cs: lone surrogates; Zl, Zp: line and paragraph
separators), newline and tab among them: one foreign text is one line, so it cannot forge a
line of the reader's own output. The zero-width joiner and non-joiner (Cf too) are kept: emoji
sequences and several scripts need them, and they move nothing on a terminal.

A backslash is left as it is, so a text that holds a literal `\\x1b` looks like one that held
an ESC; that costs the reader nothing (neither is interpreted) and keeps paths readable.
"""

import unicodedata

__all__ = ["shown"]

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_KEPT = frozenset({"\u200c", "\u200d"})  # zero-width non-joiner and joiner: text needs them


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _needs_escape(ch: str) -> bool:
    return ch not in _KEPT and unicodedata.category(ch) in _ESCAPED_CATEGORIES


def shown(text: str) -> str:
    """`text` with every control, format and separator character written as an escape."""
    if text.isprintable() and text.isascii():
        return text  # the common case, checked at C speed: printable ASCII has nothing to escape
    return "".join(_escape(ch) if _needs_escape(ch) else ch for ch in text)
