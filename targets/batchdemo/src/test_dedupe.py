"""batchdemo's own tests (stdlib unittest): the job's public behaviour, which any correct
implementation keeps. target.md's ## Correctness runs them on both arms of an A/B run."""

import contextlib
import io
import unittest

import dedupe


class DedupeTest(unittest.TestCase):
    def test_a_small_run_gives_the_known_result(self):
        processed, result = dedupe.run(2000, 7)
        self.assertEqual(processed, 2000)
        self.assertEqual(len(result), 1955)
        self.assertEqual(dedupe.checksum(result), "b8ef27d292d5016d")

    def test_every_event_is_counted_once(self):
        _, result = dedupe.run(5000, 11)
        self.assertEqual(sum(row["count"] for row in result.values()), 5000)
        self.assertTrue(all(row["total"] > 0 for row in result.values()))

    def test_main_prints_its_metrics(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(dedupe.main(["--records", "300", "--seed", "3"]), 0)
        lines = dict(line.split("=", 1) for line in out.getvalue().splitlines())
        self.assertEqual(lines["records"], "300")
        self.assertEqual(len(lines["checksum"]), 16)


if __name__ == "__main__":
    unittest.main()
