"""The compiled params check must agree with jsonschema on every method's schema."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from rpc.validation import ParamsValidator
from tests.test_fuzz import JSON_VALUES, ODD_STRINGS, examples, one_mutation, params_near

KNOWN: dict[str, list[Any]] = {
    "send_at": ["2026-11-27T18:20:44Z", "2026-11-27T18:20:44.123+01:00", "2026-13-01T00:00:00Z",
                "2026-11-27 18:20:44Z", "2026-11-27T18:20:44", "2026-02-30T10:00:00Z",
                "2026-11-27t18:20:44z", ""],
    "username": ["alice", "al", "a" * 32, "a" * 33, "bob\n", "bad name", "ÄÖÜ_x"],
    "to": ["bob", "bob\n", "b", "x" * 40],
    "limit": [0, 1, 100, 101, 2.0, 2.5, True, "5"],
    "attachments": [[], ["f_1", "f_1"], ["f_1", "f_2"], [1], ["x"] * 11, [{"a": 1}, {"a": 1}]],
    "members": [[], ["bob", "bob"], ["bob", "BOB"], ["x"] * 101],
}


def example_values() -> dict[str, list[Any]]:
    """Every param value the documented examples use, by param name (valid by construction)."""
    values: dict[str, list[Any]] = {}
    for ms in schemas.method_schemas().values():
        for example in ms.examples:
            for key, value in example["params"].items():
                values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize("method", sorted(schemas.method_schemas()))
def test_fast_check_agrees_with_jsonschema(method: str) -> None:
    checker = ParamsValidator(schemas.method_schemas()[method].params)
    assert checker.fast is not None, "the params schema left the compiled subset"
    schema: dict[str, Any] = checker.validator.schema  # type: ignore[assignment]

    verdicts: list[bool] = []

    @settings(max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(one_mutation(schema, example_values(), KNOWN), params_near(schema, KNOWN),
                     JSON_VALUES, ODD_STRINGS))
    def agree(value: Any) -> None:
        assert checker.fast is not None
        verdict = checker.validator.is_valid(value)
        assert checker.fast(value) == verdict, value
        verdicts.append(verdict)

    agree()
    assert True in verdicts and False in verdicts  # both answers were exercised
