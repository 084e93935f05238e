-- Appended to every scenario script: collects each thread's counters and
-- prints one line "WRK_JSON {...}" that perf/load.py parses.
local threads = {}
local next_thread_id = 1

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local misses, counted = 0, 0
  for _, thread in ipairs(threads) do
    misses = misses + (thread:get("misses") or 0)
    counted = counted + (thread:get("counted") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %.1f, "p90": %.1f, "p99": %.1f, "mean": %.1f, "max": %.1f}, ' ..
    '"misses": %d, "counted": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, misses, counted))
end
