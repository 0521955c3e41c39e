"""The statement splitter agrees with the Supabase CLI's.

The first part is the CLI's own test suite, `apps/cli-go/pkg/parser/state_test.go` and
`token_test.go` (github.com/supabase/cli at 1d1e719), case by case: each case is a list of
statements that, joined, must split back into exactly that list (the Go tests compare as
multisets; these compare in order, which is stricter). Its fixtures are copied unchanged in
testdata/supabase_cli_parser/. Then what this project relies on: every migration splits
losslessly, and the split is what `supabase migration fetch` writes back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar_chat.ops.migrate import Migration, default_migrations_dir, discover
from avatar_chat.ops.sqlsplit import split, split_and_trim

CLI_TESTDATA = Path(__file__).parent / "testdata" / "supabase_cli_parser"


def check_split(sql: list[str]) -> None:
    assert split("".join(sql)) == sql


# state_test.go, one entry per t.Run.
CLI_CASES: dict[str, list[str]] = {
    # TestLineComment
    "line comment after separator": ["END;", "-- comment"],
    "line comment before separator": ["SELECT --; 1"],
    "line comment not started": ["- ;", "END"],
    "line comment between lines": ["-- /* \n;", " */ END"],
    # TestBlockComment
    "block comment contains separator": ["SELECT /* ; */ 1;"],
    "block comment nested block": ["SELECT /*; /*;*/ ;*/ 1"],
    "block comment not started": ["/ * ;", " */ END"],
    # TestSeparator
    "separator no spaces": [";", "END;", ";"],
    "separator between spaces": ["BEGIN   ;", "  END"],
    "separator backslash escaped": ["\\;;", "\\;"],
    # TestDollarQuote
    "dollar quote named tag": ["$tag$ any ; string$tag$"],
    "dollar quote anonymous tag": ['$$"Dane\'s horse"$$'],
    "dollar quote not started": ['SELECT "$";', " $$"],
    # TestSingleQuote
    "single quote escapes separator": ["SELECT ';' 1"],
    "single quote preserves single quote": ["SELECT ';'';' 1"],
    "single quote literal backslash": ["SELECT '\\';", " 1'"],
    # TestDoubleQuote
    "double quote escapes separator": ['CREATE POLICY "cats;dogs" on cats_dogs;', " END"],
    "double quote preserves single quote": ["CREATE POLICY \"cat's and dog's\" on cats_dogs;", " END"],
    "double quote preserves double quote": ['CREATE POLICY "pet""name" on pets;', " END"],
    # TestParentheses
    "parentheses preserved": [
        'CREATE RULE notify_me AS ON UPDATE TO mytable DO (NOTIFY mytable; SELECT "1");',
        "SELECT 1",
    ],
    "parentheses ignore literals": [
        "CREATE RULE notify_me AS ON UPDATE TO mytable DO (-- )\nSELECT ')';\n-- )\n)\n",
    ],
    # TestBeginAtomic
    "begin atomic inline body": [
        "CREATE FUNCTION add(a integer, b integer) RETURNS integer\nLANGUAGE SQL\n"
        "IMMUTABLE STRICT PARALLEL SAFE\nRETURNS NULL ON NULL INPUT\nBEGIN ATOMIC\n"
        "\tSELECT 'add';\n\tSELECT a + b;\nEND;"
    ],
    "begin atomic case insensitive": ["begin atomic; select 'end'; end"],
    "begin atomic ignores literals": ["CREATE FUNCTION test() BEGIN\nATOMIC-- END;\n-- END;\nEND\n;"],
    "begin atomic not in schema-qualified function names": [
        "CREATE OR REPLACE FUNCTION public.atomic_example()\nRETURNS INTEGER\nLANGUAGE plpgsql\n"
        "AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$;",
        "\nGRANT EXECUTE ON FUNCTION public.atomic_example() TO authenticated;",
    ],
}


@pytest.mark.parametrize("sql", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_cases(sql: list[str]) -> None:
    check_split(sql)


@pytest.mark.parametrize("name", ["fn_atomic", "atomic_fn", "my_atomic_thing", "xatomicx", "fn_ATomiC"])
def test_cli_ignores_atomic_in_identifiers(name: str) -> None:
    check_split(
        [
            f"CREATE OR REPLACE FUNCTION {name}()\nRETURNS void LANGUAGE plpgsql AS $$\n"
            "BEGIN\n  NULL;\nEND;\n$$;",
            "\nSELECT 1;",
        ]
    )


def test_cli_split_fixture() -> None:
    """token_test.go TestSplit: all.sql splits into the eighteen split_*.sql and a "\\n"."""
    fixture = [path.read_text("utf-8") for path in sorted(CLI_TESTDATA.glob("split_*.sql"))]
    assert len(fixture) == 18
    statements = split((CLI_TESTDATA / "all.sql").read_text("utf-8"))
    assert statements == [*fixture, "\n"]


def test_cli_split_and_trim() -> None:
    """token_test.go TestSplitAndTrim and file_test.go "new from file sets max token": the
    CLI reads a migration file with a buffer as large as the file, so a statement longer
    than its default 256 KiB limit still splits (the limit only applies to other input)."""
    assert split_and_trim("\tBEGIN; " + "a" * 256 * 1024) == ["BEGIN", "a" * 256 * 1024]


def test_trim_is_go_trim() -> None:
    """strings.TrimRight(s, ";") then strings.TrimSpace: every trailing `;` goes, and only
    Go's white space (not, say, U+001C, which Python's str.strip() would remove too)."""
    assert split_and_trim(" select 1 ;;\n") == ["select 1"]  # ";;" is one statement and an empty one
    assert split_and_trim("select 1\x1c;") == ["select 1\x1c"]
    assert split_and_trim("\u3000select 'x'\xa0;\n-- done\n") == ["select 'x'", "-- done"]


def test_multibyte_characters_are_plain_text() -> None:
    sql = "comment on table t is 'Größe; ☃';\nselect $é$ ; $é$;\nselect 'ok'"
    # A dollar tag must be ASCII for the CLI (it reads é as a letter and then U+FFFD).
    assert split(sql) == ["comment on table t is 'Größe; ☃';", "\nselect $é$ ;", " $é$;", "\nselect 'ok'"]


@pytest.mark.parametrize("migration", discover(default_migrations_dir()), ids=lambda m: m.version)
def test_every_migration_splits_back_into_itself(migration: Migration) -> None:
    """Lossless: the pieces are the file. And what `supabase migration fetch` writes from
    the recorded statements (joined with ";\\n") splits into the same statements, so a
    fetched and pushed again migration records what this one did."""
    sql = migration.sql
    pieces = split(sql)
    assert "".join(pieces) == sql
    statements = split_and_trim(sql)
    assert statements
    assert statements == [piece.rstrip(";").strip() for piece in pieces if piece.rstrip(";").strip()]
    fetched = ";\n".join(statements) + ";\n"
    assert split_and_trim(fetched) == statements
