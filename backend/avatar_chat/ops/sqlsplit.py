"""Split a migration file into statements exactly as the Supabase CLI does.

`supabase db push` does not send a migration file as it is: it splits it into statements
(`parser.SplitAndTrim`), runs them one by one in one transaction, and records that list
in `supabase_migrations.schema_migrations.statements`, which `supabase migration fetch`
joins back into files (`";\\n"` between statements) and `squash` reads. Recording the same
list here is what lets the CLI read back what `avatar-chat migrate` applied.

This is a line-by-line port of the CLI's splitter, `apps/cli-go/pkg/parser/state.go` and
`token.go` in github.com/supabase/cli at 1d1e7191268e068fe9cb6aba524d1c619a9c727b (MIT
licence). It is the CLI's state machine, not a SQL lexer: where it differs from Postgres
(a `/*/` closes a block comment, `E'\\''` strings, the `END` of a `BEGIN ATOMIC` body found
inside a longer word), this differs the same way, because the point is to agree with the
CLI. Like the Go code it works on the UTF-8 bytes and advances one byte at a time (the
Go loop's `width` is shadowed), so a multi-byte character is seen as itself followed by
U+FFFD for each continuation byte; only ASCII characters are ever special, so this
changes nothing but is kept for fidelity. The CLI's scanner buffer limit does not apply:
for migration files it raises the limit to the file's size.
"""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod

_RUNE_ERROR = 0xFFFD
_BEGIN = b"BEGIN"
_BEGIN_ATOMIC = b"ATOMIC"  # BEGIN is matched separately: any whitespace may separate them
_END_ATOMIC = b"END"

# Go's unicode.IsSpace, which strings.TrimSpace and bytes.TrimRightFunc use.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)


def split(sql: str) -> list[str]:
    """`parser.Split` without transforms: every statement as it is in the file, with the
    comments and whitespace before it and its `;`, so `"".join(split(sql)) == sql`."""
    data = sql.encode("utf-8")
    tokens: list[str] = []
    state: _State = _Ready()
    start = 0
    pos = 0
    while pos < len(data):
        rune, width = _decode_rune(data, pos, len(data))
        end = pos + width
        following = state.next(rune, data, start, end)
        if following is None:  # a separator: emit the statement up to and with it
            tokens.append(data[start:end].decode("utf-8"))
            start = pos = end
            state = _Ready()
            continue
        state = following
        pos += 1
    if start < len(data):  # a final statement without `;`
        tokens.append(data[start:].decode("utf-8"))
    return tokens


def split_and_trim(sql: str) -> list[str]:
    """`parser.SplitAndTrim`: what `supabase db push` runs and records for a migration.

    Each statement without its trailing `;` and surrounding whitespace; statements left
    empty are dropped. Comments before a statement stay part of it, and a file ending in a
    comment gets that comment as its last statement, as in the CLI.
    """
    statements = []
    for token in split(sql):
        trimmed = token.rstrip(";").strip(_GO_SPACE)
        if trimmed:
            statements.append(trimmed)
    return statements


class _State(ABC):
    """One state of the CLI's splitter; each kind of token is a subclass."""

    @abstractmethod
    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        """The state after `rune`, which ends at `data[end]`; the statement began at
        `data[start]`. None emits the statement (a separator)."""


class _Ready(_State):
    """Ready to parse the next token."""

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        if rune == 0x24:  # $
            return _Tag(end - 1)
        if rune in (0x27, 0x22):  # ' "
            return _Quote(rune)
        if rune == 0x2D:  # -
            return _Comment()
        if rune == 0x2F:  # /
            return _Block()
        if rune == 0x5C:  # backslash
            return _Escape()
        if rune == 0x3B:  # ;
            return None
        if rune == 0x28:  # (
            return _Atomic(self, b")")
        if rune in (0x63, 0x43) and _is_begin_atomic(data, start, end):  # c C
            return _Atomic(self, _END_ATOMIC)
        return self


class _Comment(_State):
    """Seen one `-`: a line comment if another follows."""

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        if rune == 0x2D:
            # No characters are escaped in comments, which is the same as dollar.
            return _Dollar(b"\n")
        return _Ready().next(rune, data, start, end)


class _Block(_State):
    """Seen a `/`: a block comment (nested ones counted) if `*` follows."""

    def __init__(self) -> None:
        self.depth = 0

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        window = data[end - 2 : end]
        if window == b"/*":
            self.depth += 1
            return self
        if self.depth == 0:
            return _Ready().next(rune, data, start, end)
        if window == b"*/":
            self.depth -= 1
            if self.depth == 0:
                return _Ready()
        return self


class _Quote(_State):
    """Inside '...' or "..."; a doubled delimiter is part of it."""

    def __init__(self, delimiter: int) -> None:
        self.delimiter = delimiter
        self.escape = False

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        if self.escape:
            if rune == self.delimiter:  # a doubled quote
                self.escape = False
                return self
            return _Ready().next(rune, data, start, end)
        if rune == self.delimiter:
            self.escape = True
        return self


class _Dollar(_State):
    """Inside a dollar quote (or a line comment, delimited by a newline): nothing is
    escaped until the delimiter."""

    def __init__(self, delimiter: bytes) -> None:
        self.delimiter = delimiter

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        if data[end - len(self.delimiter) : end] == self.delimiter:
            return _Ready()
        return self


class _Tag(_State):
    """Seen a `$`: a dollar-quote tag such as `$body$` if letters, digits or `_` and a
    closing `$` follow."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        if rune == 0x24:
            return _Dollar(data[self.offset : end])
        if _is_letter(rune) or _is_digit(rune) or rune == 0x5F:
            return self
        return _Ready().next(rune, data, start, end)


class _Escape(_State):
    """Seen a backslash: the next character is skipped."""

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        return _Ready()


class _Atomic(_State):
    """Inside parentheses or a BEGIN ATOMIC body: separators do not count until the
    delimiter (`)` or `END`, any case) is seen outside quotes and comments."""

    def __init__(self, prev: _State, delimiter: bytes) -> None:
        self.prev = prev
        self.delimiter = delimiter

    def next(self, rune: int, data: bytes, start: int, end: int) -> _State | None:
        # In a quoted state the delimiter does not count.
        current = self.prev.next(rune, data, start, end)
        if current is not None:
            self.prev = current
        if isinstance(self.prev, _Ready):
            window = data[end - len(self.delimiter) : end]
            if window.lower() == self.delimiter.lower():  # strings.EqualFold of ASCII
                return _Ready()
        return self


def _is_begin_atomic(data: bytes, start: int, end: int) -> bool:
    """Whether the statement so far, `data[start:end]`, ends with BEGIN ATOMIC (any case,
    any whitespace between, neither word part of a longer identifier)."""
    offset = end - len(_BEGIN_ATOMIC)
    if offset < start or data[offset:end].upper() != _BEGIN_ATOMIC:
        return False
    if offset > start and _is_identifier_rune(_decode_last_rune(data, start, offset)[0]):
        return False
    prefix_end = offset
    while prefix_end > start:  # bytes.TrimRightFunc(data[:offset], unicode.IsSpace)
        rune, width = _decode_last_rune(data, start, prefix_end)
        if chr(rune) not in _GO_SPACE:
            break
        prefix_end -= width
    offset = prefix_end - len(_BEGIN)
    if offset < start or data[offset:prefix_end].upper() != _BEGIN:
        return False
    if offset == start:
        return True
    return not _is_identifier_rune(_decode_last_rune(data, start, offset)[0])


def _is_identifier_rune(rune: int) -> bool:
    return _is_letter(rune) or _is_digit(rune) or rune in (0x5F, 0x24)  # _ $


def _is_letter(rune: int) -> bool:  # Go's unicode.IsLetter: categories L*
    if rune < 0x80:
        return chr(rune).isalpha()
    return unicodedata.category(chr(rune))[0] == "L"


def _is_digit(rune: int) -> bool:  # Go's unicode.IsDigit: category Nd
    if rune < 0x80:
        return 0x30 <= rune <= 0x39
    return unicodedata.category(chr(rune)) == "Nd"


def _decode_rune(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Go's utf8.DecodeRune(data[pos:end]): the rune and its width, (U+FFFD, 1) where the
    bytes there are not valid UTF-8."""
    lead = data[pos]
    if lead < 0x80:
        return lead, 1
    if 0xC2 <= lead <= 0xDF:
        width = 2
    elif 0xE0 <= lead <= 0xEF:
        width = 3
    elif 0xF0 <= lead <= 0xF4:
        width = 4
    else:
        return _RUNE_ERROR, 1
    if pos + width > end:
        return _RUNE_ERROR, 1
    try:  # Python's decoder refuses what Go's does: overlong forms, surrogates, > U+10FFFF
        char = data[pos : pos + width].decode("utf-8")
    except UnicodeDecodeError:
        return _RUNE_ERROR, 1
    return ord(char), width


def _decode_last_rune(data: bytes, start: int, end: int) -> tuple[int, int]:
    """Go's utf8.DecodeLastRune(data[start:end]) for a non-empty range."""
    last = data[end - 1]
    if last < 0x80:
        return last, 1
    lead = end - 1
    limit = max(end - 4, start)
    lead -= 1
    while lead >= limit:
        if data[lead] & 0xC0 != 0x80:  # utf8.RuneStart
            break
        lead -= 1
    lead = max(lead, start)
    rune, width = _decode_rune(data, lead, end)
    if lead + width != end:
        return _RUNE_ERROR, 1
    return rune, width
