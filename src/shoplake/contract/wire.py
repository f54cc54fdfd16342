"""The event contract as msgspec types, derived from the pydantic models in ``events``.

The gateway decodes and validates each event with these in one C call (about three
times faster than orjson plus pydantic). They accept what the pydantic models accept and
nothing more (tests/unit/test_rules_parity.py); a rejection is then explained by the
pydantic models, whose errors carry the reason codes. Derived, not written twice: a field
added to a model is checked here too, and a constraint this module cannot express fails
at import instead of being skipped.
"""

from __future__ import annotations

import inspect
import itertools
import re
import string
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

import annotated_types
import msgspec
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo

from shoplake.contract.events import Event

_BOUNDS = {
    annotated_types.Gt: "gt",
    annotated_types.Ge: "ge",
    annotated_types.Lt: "lt",
    annotated_types.Le: "le",
    annotated_types.MinLen: "min_length",
    annotated_types.MaxLen: "max_length",
}


def _pattern(pattern: str) -> str:
    # msgspec matches with Python's re.search, where "$" also matches before a final
    # newline; pydantic's regex engine does not: "\Z" is the end of the text in Python.
    anchored = pattern.endswith("$") and not pattern.endswith("\\$")
    return pattern[:-1] + r"\Z" if anchored else pattern


# A code of 1-3 uppercase letters (country, currency), as ``_pattern`` leaves it.
_CODE = re.compile(r"\^\[A-Z\]\{([1-3])\}\\Z")


def _constrained(kind: Any, meta: dict[str, Any]) -> Any:
    """``kind`` with msgspec.Meta(**meta). A code pattern on a str becomes the Literal of
    every code it matches (17,576 at most): msgspec checks a Literal with one hash lookup
    in C, a pattern with a call into Python's re (~0.25 µs an event)."""
    code = _CODE.fullmatch(meta.get("pattern", ""))
    if kind is str and code is not None and meta.keys() == {"pattern"}:
        letters = itertools.product(string.ascii_uppercase, repeat=int(code[1]))
        return Literal[tuple("".join(chars) for chars in letters)]
    return Annotated[kind, msgspec.Meta(**meta)] if meta else kind


def _constraints(metadata: list[Any]) -> tuple[dict[str, Any], list[Callable[[Any], Any]]]:
    """msgspec.Meta arguments and after-validators of a field's pydantic metadata."""
    meta: dict[str, Any] = {}
    after: list[Callable[[Any], Any]] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            nested, more = _constraints(item.metadata)
            meta.update(nested)
            after += more
        elif type(item) in _BOUNDS:
            meta[_BOUNDS[type(item)]] = getattr(item, _BOUNDS[type(item)])
        elif isinstance(item, AfterValidator):
            if len(inspect.signature(item.func).parameters) != 1:
                raise TypeError(f"{item.func!r} takes pydantic's ValidationInfo: not supported")
            after.append(cast(Callable[[Any], Any], item.func))
        elif getattr(item, "strict", None) is True and not getattr(item, "pattern", None):
            continue  # strict: msgspec never coerces JSON types (no "1" for 1, no true for 1)
        elif isinstance(getattr(item, "pattern", None), str):
            meta["pattern"] = _pattern(item.pattern)
        else:
            raise TypeError(f"no msgspec equivalent for the contract's constraint {item!r}")
    return meta, after


def _type(annotation: Any) -> Any:
    """The msgspec type of a pydantic field annotation (no after-validators inside)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        meta, after = _constraints(metadata)
        if after:
            raise TypeError(f"an after-validator nested in {annotation!r}: not supported")
        return _constrained(_type(base), meta)
    if origin in (Union, types.UnionType):
        return Union[tuple(_type(arg) for arg in get_args(annotation))]  # noqa: UP007
    if origin is list:
        return list[_type(get_args(annotation)[0])]  # type: ignore[misc]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _struct(annotation)
    if origin is Literal or annotation in (str, int, float, type(None)):
        return annotation
    raise TypeError(f"no msgspec equivalent for the contract's type {annotation!r}")


def _struct(model: type[BaseModel], tag: str | None = None) -> type[msgspec.Struct]:
    """A Struct with ``model``'s fields (``event_type`` becomes the union's tag)."""
    fields: list[tuple[str, Any, Any]] = []
    after: list[tuple[str, Callable[[Any], Any]]] = []
    for name, info in model.model_fields.items():
        if tag is not None and name == "event_type":
            continue
        meta, validators = _constraints(info.metadata)
        kind = _constrained(_type(info.annotation), meta)
        after += [(name, check) for check in validators]
        default = msgspec.NODEFAULT if info.is_required() else info.default
        fields.append((name, kind, default))

    def __post_init__(self: msgspec.Struct) -> None:  # msgspec's hook
        for name, check in after:  # a ValueError here is a msgspec.ValidationError
            check(getattr(self, name))

    return msgspec.defstruct(
        "".join(part.title() for part in tag.split("_")) if tag else model.__name__,
        fields,
        kw_only=True,
        tag_field="event_type" if tag is not None else None,
        tag=tag,
        namespace={"__post_init__": __post_init__} if after else None,
    )


def _wire_types() -> dict[str, type[msgspec.Struct]]:
    """One Struct per event type (a model with two types, like the cart's, gives two)."""
    models = get_args(get_args(Event)[0])  # Annotated[Union[models], discriminator]
    return {
        tag: _struct(model, tag)
        for model in models
        for tag in get_args(model.model_fields["event_type"].annotation)
    }


EVENT_TYPES = _wire_types()
WIRE_EVENT: Any = Union[tuple(EVENT_TYPES.values())]  # noqa: UP007
DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(WIRE_EVENT)
