"""potluck.kernel.terminal_text.shown and potluck.terminal.foreign: another party's text on a
terminal shows every character a terminal would interpret as an escape, and leaves the rest."""

import io
import os
import pty
import subprocess
import sys
import unicodedata

import pytest
from rich.console import Console

from potluck.kernel.terminal_text import shown
from potluck.terminal import foreign

#: What a terminal acts on: C0 controls, DEL, C1 controls.
CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]
BIDI = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
]


@pytest.mark.parametrize("ch", CONTROLS, ids=lambda ch: f"U+{ord(ch):04X}")
def test_every_c0_c1_control_and_del_is_shown_as_a_hex_escape(ch: str) -> None:
    # Tried: each control alone between letters. Holds: it is written as \xNN, nothing of it left raw.
    assert shown(f"a{ch}b") == f"a\\x{ord(ch):02x}b"


@pytest.mark.parametrize("ch", BIDI, ids=lambda ch: unicodedata.name(ch))
def test_bidi_overrides_isolates_and_marks_are_shown_as_unicode_escapes(ch: str) -> None:
    assert shown(f"abc{ch}def") == f"abc\\u{ord(ch):04x}def"


def test_escape_sequences_keep_their_letters_but_lose_their_escape() -> None:
    # Tried: an OSC 52 clipboard write, an OSC 8 hyperlink, a window title, a cursor move, a CSI
    # by its C1 form, a carriage return hiding text. Holds: no ESC, BEL, CSI or CR remains, and
    # the reader still reads each sequence's text.
    hostile = (
        "\x1b]52;c;aGFjaw==\x07\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\"
        "\x1b]0;title\x07\x1b[2A\x1b[2K\x9b31mred\rhidden\u2028next"
    )
    out = shown(hostile)
    assert not any(c in out for c in "\x1b\x07\x9b\r\n\u2028")
    assert out == (
        "\\x1b]52;c;aGFjaw==\\x07\\x1b]8;;https://evil.example\\x1b\\link\\x1b]8;;\\x1b\\"
        "\\x1b]0;title\\x07\\x1b[2A\\x1b[2K\\x9b31mred\\x0dhidden\\u2028next"
    )


@pytest.mark.parametrize(
    "text",
    [
        "python3 train.py --epochs 3",
        "café naïve Zürich",
        "日本語のテキスト",
        "مرحبا بالعالم",  # right-to-left by its letters, with no override
        "👩\u200d💻 and 🇫🇷",  # an emoji sequence keeps its zero-width joiner
        "C:\\path\\to [link] {x}",
        "",
    ],
)
def test_ordinary_text_in_any_script_is_left_as_it_is(text: str) -> None:
    assert shown(text) == text


def test_a_lone_surrogate_is_escaped_so_printing_it_cannot_fail() -> None:
    assert shown("a\udcffb") == "a\\udcffb"


def test_foreign_text_in_rich_prints_literally_without_markup_or_controls() -> None:
    # Tried: a member's failure detail holding rich markup (a hyperlink, a style) and an ESC,
    # printed by a rich Console that believes it writes to a terminal. Holds: no hyperlink (OSC 8)
    # nor other sequence comes from the text; its brackets and the escaped ESC are shown as written.
    text = "[link=https://evil.example]click[/link] [bold]x[/bold] \x1b[2J\u202e"
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, color_system=None, width=200).print(
        f"detail: {foreign(text)}", highlight=False
    )
    printed = buffer.getvalue()
    assert "\x1b" not in printed
    assert "\u202e" not in printed
    assert printed == "detail: [link=https://evil.example]click[/link] [bold]x[/bold] \\x1b[2J\\u202e\n"


def test_a_log_line_for_people_shows_a_quoted_text_escaped_on_a_terminal() -> None:
    # Tried: a service that logs for people (stderr a terminal, as a member's hostd in a shell)
    # a message quoting a user's text with an ESC sequence, and a value holding one. Holds: the
    # terminal gets no ESC from that text; the message and the value show it escaped.
    program = (
        "from potluck.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "import structlog\n"
        "structlog.get_logger().warning('starting evil\\x1b]52;c;aGk=\\x07 now', command='x\\x1b[2Jy')\n"
    )
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", program], stderr=follower, check=True, timeout=60)
        os.close(follower)
        written = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower is closed and everything was read
                break
            if not chunk:
                break
            written += chunk
    finally:
        os.close(leader)
    line = written.decode()
    assert "\x1b" not in line, line
    assert "starting evil\\x1b]52;c;aGk=\\x07 now" in line
    assert "x\\x1b[2Jy" in line
