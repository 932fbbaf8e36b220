"""The shared helpers of search_space/_util.py: atomic writes and integer argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from search_space import EXPECTED, atomic_path, atomic_write, check_int, is_int, is_number


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("old", encoding="utf-8")
    atomic_write(p, "néw\n")
    assert p.read_text(encoding="utf-8") == "néw\n"
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_atomic_path_writes_next_to_the_target_and_keeps_the_old_file_on_error(tmp_path):
    p = tmp_path / "plot.png"
    with atomic_path(p, suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".plot.png.tmp") and tmp.suffix == ".png"
        tmp.write_bytes(b"new")
        assert not p.exists()  # replaced only when the block ends
    assert p.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert p.read_bytes() == b"new"
    assert [q.name for q in tmp_path.iterdir()] == ["plot.png"]  # the temporary file is gone too


@pytest.mark.parametrize("value, plain, with_numpy, number", [
    (3, True, True, True), (True, False, False, False), (np.int64(3), False, True, False), (3.0, False, False, True),
    (np.float64(0.5), False, False, True), ("3", False, False, False), (None, False, False, False),
])
def test_is_int_and_is_number_never_take_a_bool(value, plain, with_numpy, number):
    assert is_int(value) is plain
    assert is_int(value, numpy=True) is with_numpy
    assert is_number(value) is number


@pytest.mark.parametrize("kwargs, what", [
    ({}, "an integer"), ({"lo": 1}, "a positive integer"), ({"lo": 0}, "a non-negative integer"),
    ({"lo": 2}, "an integer >= 2"), ({"hi": 9}, "an integer <= 9"), ({"lo": 8, "hi": 1024}, "an integer in [8, 1024]"),
    ({"lo": 1, "optional": True}, "a positive integer or None"), ({"lo": 1, "what": "a whole number >= 1"},
                                                                 "a whole number >= 1"),
])
def test_check_int_names_the_argument_and_the_accepted_values(kwargs, what):
    with pytest.raises(ValueError) as e:
        check_int("--runs", True, **kwargs)
    assert str(e.value) == f"--runs must be {what}, got True"


def test_check_int_bounds_types_and_message_forms():
    assert check_int("n", 0, lo=0, hi=0) == 0
    assert check_int("n", None, optional=True) is None
    v = check_int("threads", np.int64(2), lo=1, numpy=True)
    assert v == 2 and type(v) is int
    for bad in (-1, 11, 2.0, None, np.int64(2)):
        with pytest.raises(ValueError, match="^n must be an integer in"):
            check_int("n", bad, lo=0, hi=10)

    class FieldError(Exception):
        pass

    with pytest.raises(FieldError, match=r"^num_classes: expected a non-negative integer, got -1$"):
        check_int("num_classes", -1, lo=0, error=FieldError, message=EXPECTED)
