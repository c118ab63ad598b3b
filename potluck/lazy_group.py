"""A click group whose commands from other modules are attached on first need.

Every service, hostd among them, starts through `potluck`: importing the user and
operator commands there (rich, the HTTP client, the replay tools) would keep them
resident in every long-running process, a member's hostd included (issue 20's
footprint). The group attaches them the first time a name it does not know is looked
up or the commands are listed (`--help`), so `potluck hostd` never loads them.
"""

from collections.abc import Callable

import click

__all__ = ["AttachingGroup"]


class AttachingGroup(click.Group):
    """A `click.Group` that calls `attach(self)` once, when a command it lacks is asked for."""

    def __init__(self, *args: object, attach: Callable[[click.Group], None], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._attach: Callable[[click.Group], None] | None = attach

    def _attached(self) -> None:
        if self._attach is not None:
            attach, self._attach = self._attach, None
            attach(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and self._attach is not None:
            self._attached()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._attached()
        return super().list_commands(ctx)
