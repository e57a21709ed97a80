"""Validators compiled once at start-up from schemas/."""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

import schemas
from methods import errors

_FORMATS = FormatChecker()


def compile_schema(schema: schemas.Schema) -> Validator:
    """A 2020-12 validator for one schema, with shared definitions inlined up front.

    Resolving `$ref` at validation time costs more than the rest of the check; our
    schemas are not recursive, so every reference is replaced by its target once here.
    """
    return Draft202012Validator(inline_refs(schema, schemas.defs()),
                                registry=schemas.registry(), format_checker=_FORMATS)


def inline_refs(node: Any, defs: schemas.Schema) -> Any:
    """`node` with every `defs.json#/$defs/X` (and defs-local `#/$defs/X`) replaced."""
    if isinstance(node, list):
        return [inline_refs(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return out
    name = ref.rsplit("/", 1)[-1]
    if not ref.startswith((schemas.DEFS_URI + "#/$defs/", "#/$defs/")) or name not in defs[
            "$defs"]:
        out["$ref"] = ref
        return out
    target = inline_refs(defs["$defs"][name], defs)
    # Keywords beside a $ref apply too; keep them next to the target, not over it.
    return {"allOf": [target], **out} if out else target


def _pointer(parts: Any) -> str:
    return "".join(f"/{p}" for p in parts)


def first_error(validator: Validator, instance: Any) -> ValidationError | None:
    """The most relevant error, or None when the instance is valid."""
    best: ValidationError | None = None
    for err in validator.iter_errors(instance):
        if best is None or len(err.absolute_path) > len(best.absolute_path):
            best = err
    return best


class ParamsValidator:
    """Checks one method's params; raises -32602 naming the failing path."""

    def __init__(self, schema: schemas.Schema) -> None:
        self._validator = compile_schema(schema)

    def check(self, params: Any) -> None:
        """Raise `invalid_params` if `params` does not match."""
        if self._validator.is_valid(params):
            return
        err = first_error(self._validator, params)
        assert err is not None
        raise errors.invalid_params(err.message[:300], _pointer(err.absolute_path),
                                    _pointer(err.absolute_schema_path))
