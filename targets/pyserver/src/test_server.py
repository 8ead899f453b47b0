"""pyserver's own tests (stdlib unittest): what any correct server answers. target.md's
## Correctness runs them on both arms of an A/B run, once per build."""

import unittest

import server


def item(i, tags=("a",)):
    return {"id": f"item-{i}", "value": float(i), "tags": list(tags), "payload": "x" * i}


class ServerTest(unittest.TestCase):
    def setUp(self):
        server.reset_state()

    def test_ingest_adds_only_new_items(self):
        self.assertEqual(server.ingest_items([item(1), item(2)]), (2, 2))
        self.assertEqual(server.ingest_items([item(2), item(3)]), (1, 3))
        self.assertEqual(server.ingest_items([item(1, tags=("b",))]), (1, 4))  # not equal

    def test_process_summarises_every_record(self):
        server.ingest_items([item(i) for i in range(1, 11)])
        first = server.process_store()
        self.assertEqual(first, {"run": 1, "count": 10, "total_value": 55.0,
                                 "weighted_value": 55.0, "tagged": 10})
        server.ingest_items([item(11)])
        self.assertEqual(server.process_store()["count"], 11)

    def test_stats(self):
        server.ingest_items([item(i, tags=("a", "b") if i % 2 else ("a",)) for i in range(1, 9)])
        stats = server.stats_snapshot()
        self.assertEqual(stats["count"], 8)
        self.assertAlmostEqual(stats["mean"], 4.5)
        self.assertEqual((stats["min"], stats["max"], stats["p50"]), (1.0, 8.0, 5.0))
        self.assertEqual(stats["positive"], 8)
        self.assertEqual(stats["payload_bytes"], 36)
        self.assertEqual(stats["top_tags"], [("a", 8), ("b", 4)])
        self.assertEqual(stats["stats_calls"], 1)


if __name__ == "__main__":
    unittest.main()
