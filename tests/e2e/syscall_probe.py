"""A tiny static x86-64 program that makes one syscall and exits with its errno (0 if it
succeeded): what a test puts into a container to ask its seccomp profile about one call,
in an image (busybox) that has no program making that call. Built here, byte by byte, so
that no compiler is needed where the tests run."""

import struct

__all__ = ["holder", "probe", "probe_i386"]

_BASE = 0x400000
_HEADERS = 64 + 56  # the ELF header and its one program header


def _mov(register: int, value: int) -> bytes:
    """`mov r64, imm32` (sign-extended): rax 0, rdx 2, rsi 6, rdi 7."""
    return bytes([0x48, 0xC7, 0xC0 | register]) + struct.pack("<i", value)


def _mov32(register: int, value: int) -> bytes:
    """`mov r32, imm32`: eax 0, ecx 1, edx 2, ebx 3."""
    return bytes([0xB8 | register]) + struct.pack("<I", value)


def probe(number: int, *args: int) -> bytes:
    """The program: syscall `number` with up to three `args`, then exit(errno), exit(0) on success."""
    rdi, rsi, rdx = (*args, 0, 0, 0)[:3]
    code = (
        _mov(0, number) + _mov(7, rdi) + _mov(6, rsi) + _mov(2, rdx)
        + b"\x0f\x05"  # syscall
        + b"\x31\xff"  # xor edi, edi: status 0 ...
        + b"\x48\x85\xc0"  # test rax, rax
        + b"\x79\x05"  # jns exit: ... when it succeeded
        + b"\x48\xf7\xd8"  # neg rax
        + b"\x89\xc7"  # mov edi, eax: status errno
        + b"\xb8\x3c\x00\x00\x00"  # exit: mov eax, 60 (exit)
        + b"\x0f\x05"  # syscall
    )  # fmt: skip
    return _elf(code)


def probe_i386(number: int, *args: int) -> bytes:
    """The same through i386's table (`int 0x80`, i386's `number`, args in ebx, ecx, edx), which
    a 64-bit program may call too: a seccomp filter sees another architecture's call."""
    ebx, ecx, edx = (*args, 0, 0, 0)[:3]
    code = (
        _mov32(0, number) + _mov32(3, ebx) + _mov32(1, ecx) + _mov32(2, edx)
        + b"\xcd\x80"  # int 0x80
        + b"\x31\xff"  # xor edi, edi: status 0 ...
        + b"\x85\xc0"  # test eax, eax
        + b"\x79\x04"  # jns exit: ... when it succeeded
        + b"\xf7\xd8"  # neg eax
        + b"\x89\xc7"  # mov edi, eax: status errno
        + b"\xb8\x3c\x00\x00\x00"  # exit: mov eax, 60 (exit, 64-bit)
        + b"\x0f\x05"  # syscall
    )  # fmt: skip
    return _elf(code)


def _elf(code: bytes) -> bytes:
    size = _HEADERS + len(code)
    elf = (
        b"\x7fELF\x02\x01\x01" + b"\x00" * 9
        + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, _BASE + _HEADERS, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    )  # fmt: skip
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)
    return elf + program + code


def holder(number: int, times: int) -> bytes:
    """The program: syscall `number` (its first argument 0) `times` times, keeping whatever each
    gives (a file descriptor), then pause() until killed: what holds a per-user count of the
    kernel's for as long as the test looks."""
    code = (
        _mov32(3, times)  # mov ebx, times (the syscall instruction leaves rbx alone)
        + _mov32(0, number) + _mov(7, 0)  # again: mov eax, number; mov rdi, 0
        + b"\x0f\x05"  # syscall
        + b"\xff\xcb"  # dec ebx
        + b"\x75\xee"  # jnz again (back 18 bytes)
        + _mov32(0, 34)  # pause: mov eax, 34 (pause)
        + b"\x0f\x05"  # syscall
        + b"\xeb\xf7"  # jmp pause (back 9 bytes)
    )  # fmt: skip
    return _elf(code)
