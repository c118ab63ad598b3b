"""Other parties' text in rich output: escaped for the terminal, then for rich's markup.

rich strips only BEL, BS, VT, FF and CR from what it prints: ESC, C1 controls and bidi
overrides pass, and a string given to `Console.print` or `Table.add_row` is read as markup, so
`[link=https://...]` in a user's image or a member's failure detail would become a live
hyperlink on the reader's terminal. `foreign` makes such a text show as written:
potluck.kernel.terminal_text.shown escapes the characters a terminal interprets, rich's own
`escape` the square brackets that markup would.
"""

from rich.markup import escape

from potluck.kernel.terminal_text import shown

__all__ = ["foreign"]


def foreign(text: object) -> str:
    """`text` (another party's) as markup that rich prints literally, controls shown escaped."""
    return escape(shown(str(text)))
