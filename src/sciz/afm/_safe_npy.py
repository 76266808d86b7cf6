"""Read the one string out of a 0-d object ``.npy`` member without unpickling anything.

playNano stores text (channel, JSON blobs) as 0-d object arrays, which ``numpy.save`` writes as a
pickle of the whole ndarray. Loading that with ``allow_pickle=True`` would execute whatever the
pickle says. Instead, the opcodes are parsed with :func:`pickletools.genops` (a parser that runs
nothing) and interpreted by a tiny stack machine that knows only numpy's array reconstruction
(``_reconstruct``, ``ndarray``, ``dtype``) and ``_codecs.encode`` (protocol 2 bytes), treats them as
inert tokens, and accepts the result only if it is a 0-d object array holding one ``str`` or
``bytes``. Every other global, opcode or shape is refused with a FormatError.
"""

from __future__ import annotations

import pickletools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError

__all__ = ["read_object_string"]

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
}
_MAX_OPS = 10_000

_PUSH_ARG = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
    "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BINSTRING", "SHORT_BINSTRING",
    "BININT", "BININT1", "BININT2", "INT", "LONG1", "LONG4",
}  # fmt: skip


@dataclass(frozen=True)
class _Global:
    kind: str


@dataclass
class _Made:
    kind: str
    args: tuple[Any, ...]
    state: Any = None
    built: bool = field(default=False)


class _Mark:
    pass


_MARK = _Mark()


def _refuse(where: str, why: str) -> FormatError:
    return FormatError(f"{where}: refused to read an object array ({why}); only plain strings are accepted")


def _index(arg: Any, where: str) -> int:
    if isinstance(arg, int | str) and not isinstance(arg, bool):
        try:
            return int(arg)
        except ValueError:
            pass
    raise _refuse(where, f"bad memo index {arg!r}")


def _pop_mark(stack: list[Any], where: str) -> list[Any]:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise _refuse(where, "unbalanced MARK")


def _reduce(func: Any, args: Any, where: str) -> Any:
    if not isinstance(func, _Global) or not isinstance(args, tuple):
        raise _refuse(where, "REDUCE of something that is not an allowed numpy constructor")
    if func.kind == "encode":
        # Protocol 2 writes bytes as _codecs.encode(text, "latin1"); do that without calling anything.
        if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return args[0].encode("latin-1")
        raise _refuse(where, "unexpected _codecs.encode arguments")
    if func.kind in ("reconstruct", "dtype"):
        return _Made(func.kind, args)
    raise _refuse(where, f"calling {func.kind} is not allowed")


def _opcodes(payload: Any, where: str) -> Iterator[tuple[str, Any]]:
    # genops parses lazily from the stream: at most _MAX_OPS opcodes are ever read or kept.
    operations = pickletools.genops(payload)
    for count in range(_MAX_OPS + 1):
        try:
            opcode, arg, _pos = next(operations)
        except StopIteration:
            return
        except Exception as exc:  # the parser raises ValueError and friends on damaged input
            raise _refuse(where, f"damaged pickle stream: {exc}") from None
        if count == _MAX_OPS:
            break
        yield opcode.name, arg
    raise _refuse(where, f"pickle stream longer than {_MAX_OPS} opcodes")


def _interpret(payload: Any, where: str) -> Any:
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for name, arg in _opcodes(payload, where):
        if name in ("PROTO", "FRAME"):
            continue
        if name in _PUSH_ARG:
            stack.append(arg)
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(stack) < count:
                raise _refuse(where, "stack underflow")
            items = stack[-count:]
            del stack[-count:]
            stack.append(tuple(items))
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack, where)))
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "APPEND":
            item = stack.pop()
            if not isinstance(stack[-1], list):
                raise _refuse(where, "APPEND to a non-list")
            stack[-1].append(item)
        elif name == "APPENDS":
            items = _pop_mark(stack, where)
            if not stack or not isinstance(stack[-1], list):
                raise _refuse(where, "APPENDS to a non-list")
            stack[-1].extend(items)
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[_index(arg, where)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            if _index(arg, where) not in memo:
                raise _refuse(where, "memo reference to nothing")
            stack.append(memo[_index(arg, where)])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
            else:
                attr, module = stack.pop(), stack.pop()
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise _refuse(where, "STACK_GLOBAL of non-text names")
            kind = _ALLOWED_GLOBALS.get((module, attr))
            if kind is None:
                raise _refuse(where, f"it names {module}.{attr}")
            stack.append(_Global(kind))
        elif name == "REDUCE":
            args = stack.pop()
            func = stack.pop()
            stack.append(_reduce(func, args, where))
        elif name == "BUILD":
            state = stack.pop()
            target = stack[-1]
            if not isinstance(target, _Made) or target.built:
                raise _refuse(where, "BUILD of something other than a numpy array or dtype")
            target.state, target.built = state, True
        elif name == "STOP":
            if len(stack) != 1:
                raise _refuse(where, "stack not empty at STOP")
            return stack[0]
        else:
            raise _refuse(where, f"opcode {name} is not part of a plain numpy string array")
    raise _refuse(where, "no STOP opcode")


def read_object_string(payload: Any, where: str) -> str | bytes:
    """The single str or bytes inside the pickled 0-d object ndarray ``payload`` (a .npy body, as
    bytes or a binary stream read no further than the pickle's STOP).

    Raises :class:`~sciz.errors.FormatError` naming ``where`` for anything else.
    """
    try:
        result = _interpret(payload, where)
    except IndexError:
        raise _refuse(where, "stack underflow") from None
    if not (isinstance(result, _Made) and result.kind == "reconstruct" and result.built):
        raise _refuse(where, "it is not a numpy array")
    if len(result.args) != 3 or not isinstance(result.args[0], _Global) or result.args[0].kind != "ndarray":
        raise _refuse(where, "unexpected array constructor arguments")
    state = result.state
    if not (isinstance(state, tuple) and len(state) == 5):
        raise _refuse(where, "unexpected array state")
    _version, shape, dtype, _fortran, items = state
    if not (isinstance(dtype, _Made) and dtype.kind == "dtype" and dtype.args[:1] in (("O8",), ("O4",))):
        raise _refuse(where, "the array is not of object dtype")
    if shape != ():
        raise _refuse(where, f"shape {shape} (only 0-d arrays hold one string)")
    if not (isinstance(items, list) and len(items) == 1 and isinstance(items[0], str | bytes)):
        kinds = [type(i).__name__ for i in items] if isinstance(items, list) else type(items).__name__
        raise _refuse(where, f"it holds {kinds}")
    return items[0]
