"""Brace expansion of shard lists, as bash (and webdataset, img2dataset) write them.

``shards/{000..009}.tar`` names ten shards; ``{a,b}`` is a list, ``{1..10..3}`` a range with a
step, ``{a..e}`` a letter range, and braces nest: ``{train/{0..1},val/0}.tar``. Expressions are
found as bash finds them: a ``{`` opens one only if a ``}`` closes it after a top-level ``,`` or
``..`` (``{a}``, ``{}`` and an unmatched brace are ordinary characters), a ``..`` body that is
no sequence stays literal, and ``${`` is never expanded. There is no escape character: a name
with a brace expression in it is reached through its folder. Letter ranges are meant within
one case (``{a..f}``).
"""

from __future__ import annotations

import re

from synthguard._errors import InvalidInputError

__all__ = ["MAX_EXPANSION", "expand_braces", "has_braces"]

#: The most names one pattern may expand to (``{0..999999999}`` is refused, not built).
MAX_EXPANSION = 100_000

#: What bash counts as blank around a brace (the empty string: the start or end of the word).
_BLANK = ("", " ", "\t", "\n")
_INT_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?")
_CHAR_RANGE = re.compile(r"([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?")


def has_braces(pattern: str) -> bool:
    """Whether ``pattern`` holds a brace expression that expands (not just a ``{``)."""
    return _first_group(pattern) is not None


def expand_braces(pattern: str) -> list[str]:
    """Every name ``pattern`` stands for, in bash's order (left to right, first brace outermost).

    Example:
        >>> expand_braces("shards/{000..002}.tar")
        ['shards/000.tar', 'shards/001.tar', 'shards/002.tar']
        >>> expand_braces("{train,val}-{0..1}.tgz")
        ['train-0.tgz', 'train-1.tgz', 'val-0.tgz', 'val-1.tgz']

    Raises:
        InvalidInputError: the pattern would expand to more than :data:`MAX_EXPANSION` names.
    """
    if not isinstance(pattern, str):
        raise InvalidInputError(f"pattern must be a str; got {type(pattern).__name__}")
    out = _expand(pattern)
    if len(out) > MAX_EXPANSION:  # pragma: no cover - _expand raises first
        raise _too_many(pattern)
    return out


def _expand(pattern: str) -> list[str]:
    group = _first_group(pattern)
    if group is None:
        return [pattern]
    start, end = group
    head, body, tails = pattern[:start], pattern[start + 1 : end], _expand(pattern[end + 1 :])
    if "," in body:  # a list (bash: a comma anywhere in the body, split at the top level)
        alternatives = [name for part in _split(body) for name in _expand(part)]
    else:
        sequence = _sequence(body)
        if sequence is None:  # "{x..y}" that is no sequence: literal, braces and all
            return [f"{head}{{{body}}}{tail}" for tail in tails]
        alternatives = sequence
    if len(alternatives) * len(tails) > MAX_EXPANSION:
        raise _too_many(pattern)
    return [head + a + t for a in alternatives for t in tails]


def _too_many(pattern: str) -> InvalidInputError:
    return InvalidInputError(
        f"brace pattern {pattern!r} expands to more than {MAX_EXPANSION:,} names; split it"
    )


def _first_group(pattern: str) -> tuple[int, int] | None:
    """``(start, end)`` of the first brace expression, as bash finds it, else ``None``.

    From each ``{`` (not ``${``), the expression closes at the first ``}`` at its own level
    *after* a top-level ``,`` or ``..``; a ``}`` before that is an ordinary character (so
    ``{a}b,c}`` is ``a}b`` and ``c``, and ``{}`` is literal). A ``{`` without such a close
    opens nothing, and the search goes on from the next character.
    """
    for start, char in enumerate(pattern):
        if char != "{" or (start > 0 and pattern[start - 1] == "$"):
            continue
        before, after = pattern[start - 1 : start] if start else "", pattern[start + 1 : start + 2]
        if before in _BLANK and after in (*_BLANK, "}"):  # bash: "{}" or "{ " after a blank
            continue
        level = separators = 0
        for index in range(start + 1, len(pattern)):
            char = pattern[index]
            if char == "}" and level == 0 and separators:
                return start, index
            if char == "{":
                level += 1
            elif char == "}" and level:
                level -= 1
            elif level == 0 and (char == "," or _dots(pattern, index)):
                separators += 1
    return None


def _dots(pattern: str, index: int) -> bool:
    """A ``..`` at ``index`` not right before a ``}`` (bash's sign of a sequence)."""
    return pattern.startswith("..", index) and pattern[index + 2 : index + 3] != "}"


def _split(body: str) -> list[str]:
    """``body`` split at its top-level commas."""
    parts, level, last = [], 0, 0
    for index, char in enumerate(body):
        if char == "{":
            level += 1
        elif char == "}" and level:
            level -= 1
        elif char == "," and level == 0:
            parts.append(body[last:index])
            last = index + 1
    parts.append(body[last:])
    return parts


def _sequence(body: str) -> list[str] | None:
    """``a..b[..step]`` as bash expands it (integers zero-padded when an end has a leading
    zero), or ``None`` when ``body`` is not a sequence."""
    match = _INT_RANGE.fullmatch(body)
    if match:
        lo, hi = match[1], match[2]
        first, last = int(lo), int(hi)
        step = abs(int(match[3])) if match[3] else 1
        step = step or 1
        if abs(last - first) // step + 1 > MAX_EXPANSION:
            raise _too_many("{" + body + "}")
        width = max(len(lo), len(hi)) if _padded(lo) or _padded(hi) else 0
        values = range(first, last + 1, step) if first <= last else range(first, last - 1, -step)
        return [f"{v:0{width}d}" if width else str(v) for v in values]
    match = _CHAR_RANGE.fullmatch(body)
    if match:
        first, last = ord(match[1]), ord(match[2])
        step = abs(int(match[3])) if match[3] else 1
        step = step or 1
        codes = range(first, last + 1, step) if first <= last else range(first, last - 1, -step)
        return [chr(c) for c in codes]
    return None


def _padded(end: str) -> bool:
    digits = end.removeprefix("-")
    return len(digits) > 1 and digits[0] == "0"
