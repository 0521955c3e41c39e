"""Base models the payloads share: request bodies, and answers read from database rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avatar_chat.core.database import Record

# Text kept without its outer whitespace (names, titles) is declared as
#     Annotated[str, StringConstraints(max_length=N, pattern=NOT_BLANK), AfterValidator(stripped)]
# so the schema says exactly what is accepted: at most N characters as sent, one of them not
# whitespace (a client generator or a fuzzer knows "   " is refused; it does not only learn it
# from a 422). Python's and Rust's whitespace differ on a few control characters; `stripped`
# refuses what is left empty either way.
NOT_BLANK = r"\S"


def stripped(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must contain a character other than whitespace")
    return value


# A cursor-paginated answer's way on.
NextCursor = Annotated[
    str | None, Field(description="Pass as `cursor` for the next (older) page; null at the end.")
]


class StrictModel(BaseModel):
    """A request body: unknown fields are a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def _omittable_not_null(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """A field outside `nullable` may be left out but is never null: its schema says so (the
    `None` default only marks it unsent), so a generated client never sends null for it; and
    an empty body changes nothing, so at least one field is required."""
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
