from __future__ import annotations

from kiln.spec.references import reference_problems


def _jobs(**jobs: dict[str, object]) -> dict[str, object]:
    return {"jobs": jobs}


def test_needing_an_earlier_job_is_fine() -> None:
    assert reference_problems(_jobs(lint={}, test={"needs": ["lint"]})) == []


def test_needing_a_later_job_names_both() -> None:
    assert reference_problems(_jobs(lint={"needs": ["test"]}, test={})) == [
        (
            ("jobs", "lint", "needs", 0),
            "needs `test`, which runs after `lint` (jobs run in file order: move `test` above `lint`)",
        )
    ]


def test_an_unknown_job_gets_the_nearest_name() -> None:
    assert reference_problems(_jobs(test={}, deploy={"needs": ["tset"]})) == [
        (("jobs", "deploy", "needs", 0), "needs unknown job `tset`; did you mean `test`?")
    ]


def test_an_unknown_job_with_no_near_name_lists_the_jobs() -> None:
    (problem,) = reference_problems(_jobs(a={}, b={"needs": ["zzz"]}))
    assert problem[1] == "needs unknown job `zzz`; jobs: `a`, `b`"


def test_a_job_cannot_need_itself() -> None:
    assert reference_problems(_jobs(a={"needs": ["a"]}))[0][1] == "`a` cannot need itself"


def test_a_need_listed_twice_is_reported_once() -> None:
    assert reference_problems(_jobs(a={}, b={"needs": ["a", "a"]})) == [
        (("jobs", "b", "needs", 1), "`a` is listed twice")
    ]


def test_a_single_need_is_located_at_the_key() -> None:
    assert reference_problems(_jobs(a={"needs": "b"}, b={}))[0][0] == ("jobs", "a", "needs")


def test_an_unknown_image_gets_a_hint() -> None:
    assert reference_problems(_jobs(a={"image": "busybx"})) == [
        (("jobs", "a", "image"), "unknown image `busybx`; did you mean `busybox`?")
    ]


def test_builtin_images_are_known() -> None:
    assert reference_problems(_jobs(a={"image": "host"}, b={"image": "busybox"})) == []


def test_malformed_input_is_left_to_validation() -> None:
    for data in [
        None,
        [],
        {"jobs": []},
        _jobs(a=None),
        _jobs(a={"needs": 3, "image": 4}),
        _jobs(a={"needs": [1]}),
    ]:
        assert reference_problems(data) == []
