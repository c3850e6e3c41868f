"""User ids, GitHub user ids and repositories: one accepted form each."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.identifiers import (
    MAX_USER_ID_LENGTH,
    canonical_github_user_id,
    is_user_id,
    parse_repository,
)


@pytest.mark.parametrize(
    "value",
    ["alice", "u-1", "auth0|5f2a", "ünïcode user", "x" * MAX_USER_ID_LENGTH, "a b"],
)
def test_printable_bounded_user_ids_are_accepted(value: str) -> None:
    assert is_user_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * (MAX_USER_ID_LENGTH + 1),
        "a\x00b",
        "line\nbreak",
        "tab\there",
        "\x1b[31m",
        42,
        None,
    ],
    ids=["empty", "too-long", "nul", "newline", "tab", "escape", "int", "none"],
)
def test_other_user_ids_are_refused(value: object) -> None:
    assert not is_user_id(value)


@pytest.mark.parametrize(
    ("value", "canonical"),
    [("1001", "1001"), ("01001", "1001"), ("0000583231", "583231"), (583231, "583231")],
)
def test_github_user_ids_lose_their_leading_zeros(value: object, canonical: str) -> None:
    """Make sure "01001" and "1001" are one GitHub account to ghvault, as they are to GitHub."""
    assert canonical_github_user_id(value) == canonical


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "000",
        "-1",
        "1e3",
        " 1",
        "1 ",
        "١٢٣",
        "12a",
        "9" * 21,
        0,
        -5,
        2**63,
        True,
        1.0,
        None,
    ],
)
def test_anything_but_a_positive_64_bit_integer_is_refused(value: object) -> None:
    assert canonical_github_user_id(value) is None


@given(st.integers(min_value=1, max_value=2**63 - 1), st.integers(min_value=0, max_value=5))
def test_every_spelling_of_an_id_has_one_canonical_form(number: int, zeros: int) -> None:
    spelled = "0" * zeros + str(number)
    if len(spelled) <= 20:
        assert canonical_github_user_id(spelled) == canonical_github_user_id(number) == str(number)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("octocat/Hello-World", "octocat/hello-world"),
        ("my-org/repo.name_2", "my-org/repo.name_2"),
        ("a/.github", "a/.github"),
        ("o/" + "n" * 100, "o/" + "n" * 100),
    ],
)
def test_repositories_are_kept_lower_cased(text: str, canonical: str) -> None:
    """GitHub compares owner and name without regard to case, and so does ghvault."""
    assert parse_repository(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "octocat",
        "/repo",
        "owner/",
        "owner/..",
        "owner/.",
        "owner/a/b",
        "-owner/repo",
        "o" * 40 + "/repo",
        "owner/" + "n" * 101,
        "owner/re po",
        "owner/re%2Fpo",
        "ow\\ner/repo",
        "owner/répo",
    ],
)
def test_anything_else_is_not_a_repository(text: str) -> None:
    assert parse_repository(text) is None
