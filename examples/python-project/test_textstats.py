import io
import unittest
from contextlib import redirect_stdout
from unittest import mock

import textstats


class WordsTest(unittest.TestCase):
    def test_lower_cases_and_drops_punctuation(self):
        self.assertEqual(textstats.words("Hello, World!"), ["hello", "world"])

    def test_keeps_apostrophes_inside_words(self):
        self.assertEqual(textstats.words("don't stop"), ["don't", "stop"])

    def test_numbers_are_not_words(self):
        self.assertEqual(textstats.words("3 little pigs"), ["little", "pigs"])


class TopWordsTest(unittest.TestCase):
    def test_counts_the_most_frequent(self):
        self.assertEqual(textstats.top_words("b a b c b a", 2), [("b", 3), ("a", 2)])

    def test_empty_text_has_no_words(self):
        self.assertEqual(textstats.top_words("", 3), [])


class MainTest(unittest.TestCase):
    def test_prints_counts(self):
        out = io.StringIO()
        with mock.patch("sys.stdin", io.StringIO("x y x")), redirect_stdout(out):
            self.assertEqual(textstats.main(["--top", "1"]), 0)
        self.assertEqual(out.getvalue().split(), ["2", "x"])


if __name__ == "__main__":
    unittest.main()
