"""The errors the SQL raises for clients are the errors db_errors.py and docs/api.md document.

The SQL in supabase/schemas/ (the live definition of every function and trigger) raises
an error a client can act on as `raise exception '...' using errcode = 'AC<status>', hint =
'<code>'`. The table in `avatar_chat.core.db_errors`'s docstring lists every such
(SQLSTATE, code) pair, and docs/api.md names every code; a pair raised but not listed, or
listed but no longer raised, fails with the difference.
"""

from __future__ import annotations

import re
from pathlib import Path

from avatar_chat.core import db_errors

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "supabase" / "schemas"

# One `using` clause of a raise: its options up to the `;` that ends the statement
# (quoted strings may hold anything but an unescaped quote).
_USING = re.compile(r"\busing\b((?:[^;']|'(?:[^']|'')*')*);", re.IGNORECASE)
_OPTION = re.compile(r"\b(errcode|hint)\s*=\s*('(?:[^']|'')*'|\S+)", re.IGNORECASE)
_DOC_ROW = re.compile(r"^\|\s*(AC\d{3})\s*\|\s*([a-z_]+)\s*\|", re.MULTILINE)

Pair = tuple[str, str]


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def raised_in_sql() -> tuple[set[Pair], list[str]]:
    """Every (SQLSTATE, code) the schema files raise, and raise sites not in that form."""
    pairs: set[Pair] = set()
    malformed: list[str] = []
    for path in sorted(SCHEMAS.glob("*.sql")):
        for clause in _USING.finditer(_without_comments(path.read_text())):
            options = {name.lower(): value for name, value in _OPTION.findall(clause[1])}
            errcode = options.get("errcode", "")
            if not re.fullmatch(r"'AC\d{3}'", errcode, re.IGNORECASE):
                continue
            hint = options.get("hint", "")
            if re.fullmatch(r"'[a-z_]+'", hint):
                pairs.add((errcode.strip("'").upper(), hint.strip("'")))
            else:
                malformed.append(f"{path.name}: using{clause[1]} (no literal hint = '<code>')")
    return pairs, malformed


def documented_in_db_errors() -> set[Pair]:
    return {(state, code) for state, code in _DOC_ROW.findall(db_errors.__doc__ or "")}


def test_the_schema_files_raise_errors_in_the_protocol() -> None:
    pairs, malformed = raised_in_sql()
    assert malformed == []
    # The parser found the raise sites (a change of style would otherwise pass silently).
    assert ("AC401", "user_not_found") in pairs
    assert len(pairs) >= 10


def test_db_errors_documents_exactly_the_codes_the_sql_raises() -> None:
    raised, _ = raised_in_sql()
    documented = documented_in_db_errors()
    assert {
        "raised in supabase/schemas but not in db_errors.py's table": sorted(raised - documented),
        "in db_errors.py's table but raised nowhere": sorted(documented - raised),
    } == {
        "raised in supabase/schemas but not in db_errors.py's table": [],
        "in db_errors.py's table but raised nowhere": [],
    }


def test_docs_api_names_every_code_the_sql_raises() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    raised, _ = raised_in_sql()
    assert sorted(code for _, code in raised if f"`{code}`" not in api) == []
