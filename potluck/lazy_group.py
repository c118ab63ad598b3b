"""A click group whose commands from other modules are attached on first need.

Every service, hostd among them, starts through `potluck`: importing the user and
operator commands there (rich, the HTTP client, the replay tools) would keep them
resident in every long-running process, a member's hostd included (issue 20's
footprint). And a user's command pays at every call for what it imports: `potluck alloc
ls` has no use for the Docker SDK `potluck image` needs, nor for the job contracts. So a
command named in `lazy` ("module:attribute") is imported only when it is asked for, and
`attach` (for a module that registers several at once) only when a name the group does
not know yet is asked for; listing the commands (`--help`) attaches them all. So `potluck
hostd` never loads them, and each user command loads its own module alone.
"""

import importlib
from collections.abc import Callable, Mapping

import click

__all__ = ["AttachingGroup"]


class AttachingGroup(click.Group):
    """A `click.Group` that imports each of `lazy`'s commands when it is asked for, and calls
    `attach(self)` once when any other command it lacks is."""

    def __init__(
        self,
        *args: object,
        attach: Callable[[click.Group], None] | None = None,
        lazy: Mapping[str, str] | None = None,
        hints: Mapping[str, str] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._attach = attach
        self._lazy = dict(lazy or {})
        #: Names people try that are not commands here, each with the command they want instead.
        self._hints = dict(hints or {})

    def _attached(self) -> None:
        if self._attach is not None:
            attach, self._attach = self._attach, None
            attach(self)

    def _imported(self, name: str) -> None:
        where = self._lazy.pop(name, None)
        if where is not None:
            module, _, attribute = where.partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._imported(cmd_name)
        command = super().get_command(ctx, cmd_name)
        if command is None and self._attach is not None:
            self._attached()
            command = super().get_command(ctx, cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if name in self._hints and self.get_command(ctx, name) is None:
            ctx.fail(f"No such command '{name}'; {self._hints[name]}")
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._attached()
        for name in list(self._lazy):
            self._imported(name)
        return super().list_commands(ctx)
