import inspect

import pytest

from kiln import errors
from kiln.errors import KilnError, SpecProblem, WorkflowInvalid


def _error_classes():
    return [obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, KilnError)]


def test_every_error_class_is_exported_and_drawn_in_the_tree():
    for cls in _error_classes():
        assert cls.__name__ in errors.__all__
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} missing from the tree in the docstring"


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_has_a_message_and_codes_from_the_contract(cls):
    assert cls.__doc__ and cls.__doc__.strip()
    assert cls.exit_code in {1, 2, 3}
    assert 400 <= cls.http_status < 600
    if cls is not WorkflowInvalid:
        assert str(cls()) == cls.__doc__.strip()


def test_workflow_invalid_prints_one_located_line_per_problem():
    exc = WorkflowInvalid(
        [
            SpecProblem("kiln.yml", 3, 5, ("jobs", "a"), "first"),
            SpecProblem("kiln.yml", 9, 1, ("jobs", "b"), "second"),
        ]
    )
    assert str(exc) == "kiln.yml:3:5: first\nkiln.yml:9:1: second"
    assert exc.exit_code == 2
