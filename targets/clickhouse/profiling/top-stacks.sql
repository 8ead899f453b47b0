-- What query_trace_log runs, by hand: the heaviest allocation stacks of the last hour.
-- (The tool binds every value as a parameter and adds totals, per-query memory from
-- system.query_log and the unresolved-frame share.)
SELECT
    sum(size) AS bytes,
    round(100 * bytes / (SELECT sum(size) FROM system.trace_log
                         WHERE trace_type = 'Memory' AND size > 0 AND event_time > now() - 3600), 2) AS pct,
    count() AS samples,
    arrayStringConcat(arrayMap(x -> demangle(addressToSymbol(x)), trace), '\n    ') AS stack
FROM system.trace_log
WHERE trace_type = 'Memory' AND size > 0 AND event_time > now() - 3600
GROUP BY trace
ORDER BY bytes DESC
LIMIT 10
SETTINGS allow_introspection_functions = 1
FORMAT Vertical;
