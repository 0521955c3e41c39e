"""Base models the payloads share: request bodies, and answers read from database rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avatar_chat.core.database import Record

# Text kept without its outer whitespace (names, titles) is declared as
#     Annotated[str, StringConstraints(max_length=N, pattern=NOT_BLANK), AfterValidator(stripped)]
# so the schema says exactly what is accepted: at most N characters as sent, no NUL, one of them not
# whitespace (a client generator or a fuzzer knows "   " is refused; it does not only learn it
# from a 422). Whitespace is ECMA-262's (what `\s` means in a JSON Schema pattern), spelled
# out: Python's `\s` and str.strip() also take \x1c-\x1f and \x85, Rust's (pydantic's
# patterns) \x85 but not \ufeff, so no engine is left to its own idea of it.
WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# Postgres text holds no NUL character: text a request sends says so (else the 422 would only
# come from the database, `invalid_value`).
TEXT = r"^[^\u0000]*$"
NOT_BLANK = (
    r"^[^\u0000]*"
    r"[^\u0000\t\n\u000b\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
    r"[^\u0000]*$"
)


def stripped(value: str) -> str:
    """`value` without its outer whitespace (WHITESPACE); refused when nothing is left."""
    value = value.strip(WHITESPACE)
    if not value:
        raise ValueError("must contain a character other than whitespace")
    return value


# A cursor-paginated answer's way on.
NextCursor = Annotated[
    str | None, Field(description="Pass as `cursor` for the next (older) page; null at the end.")
]


def _examples(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The model's `examples` in its schema: what a client's docs show, and what a contract
    test sends first (schemathesis' examples phase)."""
    examples: tuple[dict[str, Any], ...] = getattr(model, "examples", ())
    if examples:
        schema["examples"] = list(examples)


class StrictModel(BaseModel):
    """A request body: unknown fields are a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_examples)

    examples: ClassVar[tuple[dict[str, Any], ...]] = ()


def _omittable_not_null(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """A field outside `nullable` may be left out but is never null: its schema says so (the
    `None` default only marks it unsent), so a generated client never sends null for it; and
    an empty body changes nothing, so at least one field is required."""
    _examples(schema, model)
    nullable: frozenset[str] = getattr(model, "nullable", frozenset())
    schema["minProperties"] = 1
    for name, prop in schema.get("properties", {}).items():
        if name in nullable:
            continue
        variants = prop.pop("anyOf", None)
        if variants is not None:
            kept = [v for v in variants if v != {"type": "null"}]
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept
        if prop.get("default", ...) is None:
            del prop["default"]


class PartialUpdate(StrictModel):
    """A PATCH body: only the fields sent change; at least one must be sent, and only the
    fields named in `nullable` may be sent as null (to clear them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_omittable_not_null)

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _something_to_change(self) -> PartialUpdate:
        if not self.model_fields_set:
            raise ValueError("send at least one of: " + ", ".join(type(self).model_fields))
        nulls = sorted(name for name in self.model_fields_set - self.nullable if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"may not be null: {', '.join(nulls)}")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class RowModel(BaseModel):
    """An answer read from a database row: each field is the column of the same name
    (further columns are left out)."""

    _columns: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._columns = tuple(cls.model_fields)

    @classmethod
    def row_values(cls, row: Record | Mapping[str, Any]) -> dict[str, Any]:
        """The values of the fields in `row` (a model reading a column otherwise overrides this)."""
        return {name: row[name] for name in cls._columns}

    @classmethod
    def from_row(cls, row: Record | Mapping[str, Any]) -> Self:
        # What model_validate does, less its Python frame: every chat turn and persona
        # switch reads rows into models.
        model: Self = cls.__pydantic_validator__.validate_python(cls.row_values(row))
        return model
