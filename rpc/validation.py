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
    """A 2020-12 validator for one schema, resolving shared definitions."""
    return Draft202012Validator(schema, registry=schemas.registry(), format_checker=_FORMATS)


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
