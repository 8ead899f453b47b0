-- Session settings for profiling one query by hand (clickhouse-client or HTTP):
-- every allocation that grows the query's memory by another 1 MiB is traced
-- (trace_type 'Memory'); CPU and wall-clock stacks every 10 ms ('CPU', 'Real').
SET memory_profiler_step = 1048576;
SET query_profiler_cpu_time_period_ns = 10000000;
SET query_profiler_real_time_period_ns = 10000000;
SET log_queries = 1;
-- Sampled allocations instead (trace_type 'MemorySample'), e.g. 1 in 100:
-- SET memory_profiler_sample_probability = 0.01;
