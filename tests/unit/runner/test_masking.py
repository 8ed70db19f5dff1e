from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from kiln.runner.masking import MASK, SecretMasker, StreamMasker


def _stream(masker: SecretMasker, pieces: list[str]) -> str:
    stream = StreamMasker(masker)
    return "".join(stream.feed(p) for p in pieces) + stream.flush()


def test_mask_replaces_every_occurrence():
    assert SecretMasker(["hunter2"]).mask("a hunter2 b hunter2") == f"a {MASK} b {MASK}"


def test_longer_secret_containing_a_shorter_one_is_masked_whole():
    assert SecretMasker(["abc", "xxabcxx"]).mask("-xxabcxx-") == f"-{MASK}-"


def test_short_values_are_not_masked():
    assert SecretMasker(["1", "ab"]).mask("1 ab") == "1 ab"


def test_each_line_of_a_multiline_secret_is_masked():
    masker = SecretMasker(["line-one\nline-two"])
    assert masker.mask("x line-two y") == f"x {MASK} y"


def test_secret_split_across_pieces_never_leaks():
    masker = SecretMasker(["hunter2"])
    stream = StreamMasker(masker)
    released = stream.feed("xx hun")
    assert "hun" not in released
    released += stream.feed("ter2 yy")
    released += stream.flush()
    assert released == f"xx {MASK} yy"


def test_self_overlapping_secret_split_at_the_overlap():
    masker = SecretMasker(["abab"])
    assert _stream(masker, ["xab", "ab", "y"]) == f"x{MASK}y"


@given(
    secret=st.text(alphabet="ab\n", min_size=3, max_size=6),
    before=st.text(alphabet="abc\n", max_size=12),
    after=st.text(alphabet="abc\n", max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_no_chunking_ever_releases_a_secret(secret, before, after, cuts):
    text = before + secret + after
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    masker = SecretMasker([secret])
    out = _stream(masker, pieces)
    assert secret not in out
    for line in secret.splitlines():
        if len(line) >= 3:
            assert line not in out
    # Where the pieces are cut may change which of two overlapping secrets is masked (the masker
    # masks what it holds eagerly), never whether a secret shows: nothing in the output unmasks.
    assert masker.mask(out) == out
    assert MASK in out
