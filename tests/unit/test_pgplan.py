"""tools/pgplan.py on EXPLAIN (ANALYZE, FORMAT JSON) documents: the flags and the lines.
The seq-scan case is PostgreSQL's own output (tests/integration/test_postgres_sql.py drives
a real server); these cover the flags the target's queries do not provoke, on plans written
in PostgreSQL 15's JSON shape."""

from __future__ import annotations

from autoopt.tools import pgplan


def node(kind: str, total: float, rows: int, plan_rows: int, loops: int = 1,
         **extra: object) -> dict:
    return {"Node Type": kind, "Actual Total Time": total, "Actual Rows": rows,
            "Plan Rows": plan_rows, "Actual Loops": loops, **extra}


def test_misestimate_spill_and_loops_are_flagged_slowest_first() -> None:
    inner = node("Index Scan", 0.01, 1, 1, loops=5000, **{"Index Name": "t_pkey",
                                                          "Relation Name": "t"})
    sort = node("Sort", 80.0, 200_000, 1_000, **{
        "Sort Method": "external merge", "Sort Space Used": 9000, "Sort Space Type": "Disk",
        "Temp Written Blocks": 1100, "Plans": [node("Seq Scan", 20.0, 200_000, 1_000, **{
            "Relation Name": "big", "Parent Relationship": "Outer"})]})
    root = node("Nested Loop", 150.0, 5000, 5000, Plans=[sort, inner])
    plan = pgplan.parse([{"Plan": root, "Execution Time": 151.0, "Planning Time": 0.5}], "q")
    by_id = {n.id: n for n in plan.nodes}
    assert [n.label for n in plan.nodes] == [
        "Nested Loop", "Sort", "Seq Scan on big", "Index Scan using t_pkey on t"]
    assert by_id[2].self_ms == 60.0 and by_id[1].self_ms == 150.0 - 80.0 - 50.0
    assert any(f.startswith("spill: sort to disk") for f in by_id[2].flags)
    assert any(f.startswith("misestimate: 1,000 rows estimated, 200,000") for f in by_id[2].flags)
    assert any(f.startswith("seq scan: reads 200,000 rows of big") for f in by_id[3].flags)
    assert by_id[4].flags == ["loops: runs 5,000 times"]
    assert plan.flags[0].startswith("#2 Sort (60.0 ms)"), plan.flags
    lines = pgplan.lines(plan)
    assert lines[1].startswith("  #2 Sort: 60.0 ms, rows 200,000/1,000") and "FLAG" in lines[1]


def test_small_scans_and_close_estimates_are_not_flagged() -> None:
    scan = node("Seq Scan", 0.2, 40, 50, **{"Relation Name": "small",
                                          "Rows Removed by Filter": 900})
    plan = pgplan.parse([{"Plan": scan, "Execution Time": 0.3}], "q")
    assert plan.flags == []


def test_a_plan_is_a_profile_of_node_paths_in_ms() -> None:
    child = node("Seq Scan", 30.0, 10, 10, **{"Relation Name": "orders"})
    plan = pgplan.parse([{"Plan": node("Limit", 31.0, 10, 10, Plans=[child])}], "q")
    profile = pgplan.to_profile(plan, label="p", target="t", env="local")
    paths = {tuple(profile.frames[i].name for i in s.frames): s.value for s in profile.stacks}
    assert paths == {("Limit",): 1.0, ("Limit", "Seq Scan on orders"): 30.0}
    assert profile.unit == "ms" and profile.kind == "plan"


def test_query_files_match_pg_stat_statements_normalized_text() -> None:
    sql = "-- a comment\nSELECT a FROM t\nWHERE b = 'x''y' AND c = 42\nLIMIT 20;\n"
    assert pgplan.normalized(sql) == "SELECT a FROM t WHERE b = $1 AND c = $2 LIMIT $3"
