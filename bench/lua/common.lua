-- Shared by the bench's wrk scripts: request formatting and a machine-readable summary.
local common = {}

function common.format(method, path, token, body, etag)
  local headers = {Host = wrk.headers["Host"]}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  if etag and etag ~= "" then headers["If-None-Match"] = etag end
  if body ~= "" then headers["Content-Type"] = "application/json" end
  return wrk.format(method, path, headers, body)
end

-- One JSON line after wrk's own report: counts, errors and latency percentiles (us);
-- extra, if given, is more JSON members for it.
function common.done(summary, latency, requests, extra)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, extra and (", " .. extra) or ""))
end

return common
