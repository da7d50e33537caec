"""Wildcard patterns: the linear matcher and the subscription trie against the regex reading."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rembus_proto.sublist import SubList
from rembus_proto.topics import compile_pattern
from rembus_proto.wildcard import Wildcard

# Small alphabets make collisions (and so matches) frequent; the regex stays
# cheap at these sizes, which is what makes it usable as the reference.
patterns = st.text(alphabet="ab/*", max_size=8)
topics = st.text(alphabet="ab/", max_size=10)


def reference(pattern: str, topic: str) -> bool:
    return compile_pattern(pattern).fullmatch(topic) is not None


SEMANTICS = [
    ("house/*/temp", "house/kitchen/temp", True),
    ("house/*/temp", "house/a/b/temp", False),
    ("house/*/temp", "house//temp", False),
    ("garden/**", "garden/x/y", True),
    ("garden/**", "garden/", True),
    ("garden/**", "garden", False),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a//b", True),
    ("a/**/b", "a/b", False),
    ("**", "", True),
    ("**", "secret", True),
    ("*", "secret", True),
    ("*", "a/b", False),
    ("*", "", False),
    ("se*", "secret", True),
    ("se*", "se", False),
    ("se*", "se/x", False),
    ("a**b", "ab", True),
    ("a**b", "a/x/b", True),
    ("**.json", "x/y.json", True),
    ("***", "a/", False),
    ("***", "a/b", True),
    ("*/*", "a/b", True),
    ("a.b*", "axbc", False),  # other regex characters are literal
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), SEMANTICS)
def test_semantics(pattern: str, topic: str, expected: bool) -> None:
    assert Wildcard(pattern).fullmatch(topic) is expected
    assert reference(pattern, topic) is expected
    sublist: SubList[str] = SubList()
    sublist.insert(pattern, "v")
    assert sublist.match(topic) == (("v",) if expected else ())


@given(patterns, topics)
@settings(max_examples=1500, deadline=None)
def test_wildcard_is_the_regex(pattern: str, topic: str) -> None:
    assert Wildcard(pattern).fullmatch(topic) is reference(pattern, topic)


operations = st.lists(
    st.tuples(st.sampled_from(["insert", "remove", "match"]), patterns, st.integers(0, 4), topics),
    max_size=40)


@given(operations, st.sampled_from([0, 1, 3, 1024]))
@settings(max_examples=300, deadline=None)
def test_sublist_is_the_reference(ops: list[tuple[str, str, int, str]], cache_size: int) -> None:
    sublist: SubList[int] = SubList(cache_size)
    entries: list[tuple[str, int]] = []  # insertion order, as the trie reports it
    for op, pattern, value, topic in ops:
        if op == "insert":
            assert sublist.insert(pattern, value) is ((pattern, value) not in entries)
            if (pattern, value) not in entries:
                entries.append((pattern, value))
        elif op == "remove":
            assert sublist.remove(pattern, value) is ((pattern, value) in entries)
            if (pattern, value) in entries:
                entries.remove((pattern, value))
        expected = list(dict.fromkeys(v for p, v in entries if reference(p, topic)))
        assert list(sublist.match(topic)) == expected
        assert len(sublist) == len(entries)


infix_patterns = st.builds("{}*{}*{}".format, st.sampled_from(["", "a/", "*/", "**/"]),
                           st.text(alphabet="ab/", min_size=1, max_size=5),
                           st.sampled_from(["", "*", "/b", "/**"]))


@given(st.lists(infix_patterns, min_size=60, max_size=120, unique=True), st.lists(topics))
@settings(max_examples=50, deadline=None)
def test_many_tails_without_prefix_or_suffix_are_found_by_substring(
        many: list[str], probes: list[str]) -> None:
    # More tails than (topic length x key lengths): the substring index is used.
    sublist: SubList[str] = SubList()
    for pattern in many:
        sublist.insert(pattern, pattern)
    for topic in probes:
        assert list(sublist.match(topic)) == [p for p in many if reference(p, topic)]


@given(st.lists(st.tuples(patterns, st.integers(0, 4)), max_size=20))
@settings(deadline=None)
def test_removing_everything_leaves_an_empty_trie(entries: list[tuple[str, int]]) -> None:
    sublist: SubList[int] = SubList()
    for pattern, value in entries:
        sublist.insert(pattern, value)
    for pattern, value in entries:
        sublist.remove(pattern, value)
    assert len(sublist) == 0
    assert sublist._root.empty()  # no node is left behind by churn


def test_insert_and_remove_invalidate_the_cache() -> None:
    sublist: SubList[str] = SubList()
    sublist.insert("a/*", "x")
    assert sublist.match("a/b") == ("x",)
    sublist.insert("a/**", "y")
    assert sublist.match("a/b") == ("x", "y")
    sublist.remove("a/*", "x")
    assert sublist.match("a/b") == ("y",)


def test_the_cache_is_bounded() -> None:
    sublist: SubList[str] = SubList(cache_size=4)
    sublist.insert("**", "x")
    for i in range(100):
        assert sublist.match(f"t{i}") == ("x",)
    assert len(sublist._cache) == 4
    assert list(sublist._cache) == ["t96", "t97", "t98", "t99"]


def test_a_value_under_several_patterns_comes_once_in_first_insertion_order() -> None:
    sublist: SubList[str] = SubList()
    sublist.insert("a/**", "late")
    sublist.insert("a/*", "early")
    sublist.insert("*/b", "late")
    sublist.insert("a/b", "exact")
    assert sublist.match("a/b") == ("late", "early", "exact")


def test_tails_by_prefix_by_suffix_and_without_either() -> None:
    sublist: SubList[str] = SubList()
    tails = ["se*", "sec*t", "**.json", "*_temp", "*x*", "a/**/b*c", "a/*.json", "a/*x*"]
    for pattern in tails:
        sublist.insert(pattern, pattern)
    assert sublist.match("secret") == ("se*", "sec*t")
    assert sublist.match("d/e.json") == ("**.json",)
    assert sublist.match("oven_temp") == ("*_temp",)
    assert sublist.match("axe") == ("*x*",)
    assert sublist.match("a/ax.json") == ("**.json", "a/*.json", "a/*x*")
    assert sublist.match("a/x.json") == ("**.json", "a/*.json")
    assert sublist.match("a/q/r/bxc") == ("a/**/b*c",)
    assert sublist.match("a/q/r/bxc.json") == ("**.json",)
    for pattern in tails:
        assert sublist.remove(pattern, pattern)
        assert not sublist.remove(pattern, pattern)
    assert sublist._root.empty()


def test_negative_cache_size_is_refused() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        SubList(-1)


ATTACK = "**a**a**a**a**a**a**a**a**b"


@pytest.mark.parametrize("length", [48, 56, 10_000])
def test_the_backtracking_attack_pattern_is_answered(length: int) -> None:
    sublist: SubList[str] = SubList()
    sublist.insert(ATTACK, "attacker")
    assert sublist.match("a" * length) == ()
    assert sublist.match("a" * length + "b") == ("attacker",)
    assert Wildcard(ATTACK).fullmatch("a/" * length + "b")


@pytest.mark.parametrize(("pattern", "deep"), [("*a*a*a*a*a*a*a*a*b", False),
                                               ("**/**/**/**/**/**/**/**/b", True),
                                               ("*/*/*/*/*/*/*/*/b", False)])
def test_other_pathological_patterns_are_answered(pattern: str, deep: bool) -> None:
    sublist: SubList[str] = SubList()
    sublist.insert(pattern, "x")
    assert sublist.match("a" * 5000) == ()
    assert sublist.match("a/" * 2000) == ()
    assert sublist.match("a/" * 2000 + "b") == (("x",) if deep else ())
    assert Wildcard(pattern).fullmatch("a/" * 2000 + "b") is deep
