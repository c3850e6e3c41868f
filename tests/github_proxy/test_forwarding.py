"""Headers across the proxy: hop-by-hop and credentials stay, GitHub's links come back to it."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from server.github_proxy.forwarding import BackToProxy, JsonUrlFields, to_github, to_worker

BACK = BackToProxy(upstream="https://api.github.com", proxy="https://vault.example/github/api")


def test_the_capability_cookies_and_hop_by_hop_headers_never_reach_github() -> None:
    incoming = CIMultiDict(
        [
            ("Authorization", "Bearer ghvcap_x"),
            ("Cookie", "session=1"),
            ("Host", "vault.example"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("X-Forwarded-For", "10.0.0.7"),
            ("Expect", "100-continue"),
            ("Accept", "application/vnd.github+json"),
            ("X-GitHub-Api-Version", "2022-11-28"),
            ("Git-Protocol", "version=2"),
            ("Content-Length", "12"),
        ]
    )
    assert list(to_github(incoming).items()) == [
        ("Accept", "application/vnd.github+json"),
        ("X-GitHub-Api-Version", "2022-11-28"),
        ("Git-Protocol", "version=2"),
        ("Content-Length", "12"),
    ]


def test_githubs_cookies_stay_and_its_rate_limit_headers_cross() -> None:
    answer = CIMultiDict(
        [
            ("Set-Cookie", "_gh_sess=1"),
            ("set-cookie", "logged_in=no"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("X-RateLimit-Remaining", "4999"),
            ("Content-Encoding", "gzip"),
            ("ETag", 'W/"abc"'),
        ]
    )
    assert list(to_worker(answer, BACK).items()) == [
        ("X-RateLimit-Remaining", "4999"),
        ("Content-Encoding", "gzip"),
        ("ETag", 'W/"abc"'),
    ]


def test_pagination_links_and_redirects_below_the_base_come_back_through_the_proxy() -> None:
    answer = CIMultiDict(
        [
            (
                "Link",
                '<https://api.github.com/user/repos?page=2>; rel="next", '
                '<https://api.github.com/user/repos?page=9>; rel="last"',
            ),
            ("Location", "https://api.github.com/repos/octocat/renamed"),
        ]
    )
    assert dict(to_worker(answer, BACK)) == {
        "Link": '<https://vault.example/github/api/user/repos?page=2>; rel="next", '
        '<https://vault.example/github/api/user/repos?page=9>; rel="last"',
        "Location": "https://vault.example/github/api/repos/octocat/renamed",
    }


def test_other_hosts_are_left_alone() -> None:
    """A download redirect to another host carries no token; a look-alike host is not GitHub."""
    for url in (
        "https://codeload.github.com/octocat/hello/tar.gz/main",
        "https://api.github.com.evil.example/x",
        "https://api.github.comx/x",
    ):
        assert BACK.url(url) == url


def test_a_repositorys_links_by_id_name_it_again() -> None:
    """GitHub paginates /repos/{owner}/{name}/issues with /repositories/{id}/issues links."""
    back = BackToProxy(
        upstream="https://api.github.com",
        proxy="https://vault.example/github/api",
        repository="octocat/hello",
    )
    assert back.links(
        '<https://api.github.com/repositories/1296269/issues?page=2>; rel="next"'
    ) == ('<https://vault.example/github/api/repos/octocat/hello/issues?page=2>; rel="next"')
    assert back.url("https://api.github.com/repositories/1296269") == (
        "https://vault.example/github/api/repositories/1296269"
    )


DOCUMENT = {
    "url": "https://api.github.com/repos/octocat/hello",
    "comments_url": "https://api.github.com/repos/octocat/hello/issues/1/comments",
    "labels_url": "https://api.github.com/repos/octocat/hello/labels{/name}",
    "html_url": "https://github.com/octocat/hello",
    "avatar_url": "https://avatars.githubusercontent.com/u/583231",
    "look_alike_url": "https://api.github.com.evil.example/x",
    "body": 'Pasted: {"url": "https://api.github.com/kept"} and https://api.github.com/kept',
    "nested": [{"events_url": "https://api.github.com"}],
}
REWRITTEN = {
    **DOCUMENT,
    "url": "https://vault.example/github/api/repos/octocat/hello",
    "comments_url": "https://vault.example/github/api/repos/octocat/hello/issues/1/comments",
    "labels_url": "https://vault.example/github/api/repos/octocat/hello/labels{/name}",
    "nested": [{"events_url": "https://vault.example/github/api"}],
}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1), st.sampled_from([None, 2]))
def test_url_fields_of_a_json_body_are_rewritten_however_it_is_cut(
    cuts: list[int], indent: int | None
) -> None:
    """Make sure only the structure's URL fields change, never text in a string, whatever
    chunks the body arrives in."""
    raw = json.dumps(DOCUMENT, indent=indent).encode()
    fields = JsonUrlFields(BACK)
    out, offset = b"", 0
    for cut in cuts * (len(raw) // sum(cuts) + 1):
        out += fields.feed(raw[offset : offset + cut])
        offset += cut
    out += fields.end()

    assert json.loads(out) == REWRITTEN


def test_an_escaped_quote_before_a_key_is_not_a_key() -> None:
    fields = JsonUrlFields(BACK)
    raw = b'{"a": "x\\\\", "url": "https://api.github.com/1", "b": "\\"url\\": \\"https://api.github.com/2"}'
    out = fields.feed(raw) + fields.end()
    assert json.loads(out) == {
        "a": "x\\",
        "url": "https://vault.example/github/api/1",
        "b": '"url": "https://api.github.com/2',
    }
