"""What follows the id in `potluck ssh ALLOC_ID ...`: ssh's options, then the remote command.

`potluck ssh a-1 -L 8080:localhost:80` ran `-L 8080:localhost:80` in the container's shell
("/bin/sh: Illegal option -L"), and `potluck ssh a-1 grep -i root /etc/passwd` took `-i root`
as its own key file. As with ssh itself, options come between the destination and the command:
the arguments after the id are read as ssh reads its own (a cluster `-vt`, a value joined `-oX=Y`
or apart `-o X=Y`) up to the first one that is not an option, or up to `--`; the rest is the
command, passed whole to the far side.

An option is passed on to ssh only if it means something through the gateway (PASSED); the
others are refused with a line saying why, before anything is run: the gateway forwards no
port, agent or X11 connection (-L, -R, -D, -W, -A, -X, -Y; ssh_argv switches them off, so
ssh would drop them without a word), and the login name, port and host are Potluck's own.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PASSED", "SshArgs", "SshOptionError", "split_ssh_args"]

#: Flags passed on to ssh as given: verbosity, a terminal or none, the address family.
_FLAGS = {
    "v": "more of ssh's own messages (-vv, -vvv for more still)",
    "q": "fewer of ssh's own messages",
    "t": "a terminal for the command (-tt: even when stdin is not one)",
    "T": "no terminal",
    "4": "IPv4 only",
    "6": "IPv6 only",
}
#: Options with a value passed on to ssh (-i is potluck ssh's own --identity).
_VALUED = {
    "i": "the private key file to log in with",
    "o": "an ssh_config option (not one that forwards, or names the user, port or host)",
    "F": "another ssh_config file",
    "E": "ssh's own messages to a file",
    "J": "reach the gateway through a jump host",
}
#: What `potluck ssh --help` lists.
PASSED = {**_FLAGS, **_VALUED}

_FORWARDING = "the gateway forwards no ports, agent or X11 connections"
#: Options refused for a reason worth its own words.
_REFUSED = {
    "L": _FORWARDING,
    "R": _FORWARDING,
    "D": _FORWARDING,
    "W": _FORWARDING,
    "A": _FORWARDING,
    "X": _FORWARDING,
    "Y": _FORWARDING,
    "N": f"there is nothing to do without a command: {_FORWARDING}",
    "l": "the login name is the allocation's id",
    "p": "the gateway's address and port are those given to `potluck login`",
    "M": "connection sharing is not passed on",
    "S": "connection sharing is not passed on",
    "O": "connection sharing is not passed on",
    "s": "the only subsystem is sftp: `potluck cp` copies files",
}
#: ssh_config keywords refused in -o, for the same reasons (ssh takes keywords in any case).
_REFUSED_CONFIG = {
    **dict.fromkeys(
        (
            "localforward",
            "remoteforward",
            "dynamicforward",
            "forwardagent",
            "forwardx11",
            "forwardx11trusted",
            "clearallforwardings",
            "tunnel",
            "tunneldevice",
            "gatewayports",
            "exitonforwardfailure",
        ),
        _FORWARDING,
    ),
    "user": _REFUSED["l"],
    "port": _REFUSED["p"],
    "hostname": _REFUSED["p"],
    "remotecommand": "give the command after the id (after `--` if it starts with '-')",
    "sessiontype": "give the command after the id (after `--` if it starts with '-')",
    "controlmaster": _REFUSED["M"],
    "controlpath": _REFUSED["M"],
    "controlpersist": _REFUSED["M"],
}


class SshOptionError(ValueError):
    """An argument after the id that potluck ssh does not pass on; the message says why."""


@dataclass
class SshArgs:
    #: Options for ssh, in the order given (put before the destination).
    options: list[str] = field(default_factory=list)
    #: The key file given with -i after the id (None: none was).
    identity: str | None = None
    #: The command for the far side, unchanged.
    command: list[str] = field(default_factory=list)


def _refusal(option: str, why: str) -> SshOptionError:
    return SshOptionError(
        f"{option}: not passed on to ssh ({why}); potluck ssh passes on "
        f"{' '.join('-' + letter for letter in PASSED)}, and runs what follows them (or `--`) "
        "in the allocation"
    )


def _config_keyword(value: str) -> str:
    """The keyword of an `-o` value: `Keyword=value` or `Keyword value`."""
    return value.replace("=", " ", 1).split(maxsplit=1)[0].lower() if value.strip() else ""


def split_ssh_args(args: Sequence[str]) -> SshArgs:
    """ssh's options and the command in `args` (what followed the id); SshOptionError if an
    option is not one PASSED on, or lacks its value."""
    found = SshArgs()
    rest = list(args)
    while rest:
        arg = rest[0]
        if arg == "--":
            rest.pop(0)
            break
        if not arg.startswith("-") or arg == "-":
            break
        rest.pop(0)
        letters = arg[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            option = f"-{letter}"
            if letter in _REFUSED:
                raise _refusal(option, _REFUSED[letter])
            if letter in _FLAGS:
                found.options.append(option)
                continue
            if letter not in _VALUED:
                raise _refusal(option, "it changes nothing a session through the gateway needs")
            if letters:
                value, letters = letters, ""
            elif rest:
                value = rest.pop(0)
            else:
                raise SshOptionError(f"{option} needs a value ({_VALUED[letter]})")
            if letter == "i":
                found.identity = value
                continue
            if letter == "o" and (keyword := _config_keyword(value)) in _REFUSED_CONFIG:
                raise _refusal(f"-o {value}", _REFUSED_CONFIG[keyword])
            found.options += [option, value]
    found.command = rest
    return found
