-- Sends every prepared request exactly once, one per line of the file named after "--":
--   METHOD<TAB>PATH<TAB>TOKEN<TAB>BODY      (TOKEN and BODY may be empty)
-- Each thread takes its own slice of the lines; a connection with nothing left to send
-- waits out the run. The throughput is the requests over the time from the first send
-- to the last answer (wrk's own duration is the -d it was given, however soon this ends);
-- a run that -d cuts short counts what was answered by then.
-- Usage: wrk -t2 -c32 -d15s --latency -s once.lua URL -- requests.tsv 2
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + math.floor(tonumber(timespec.tv_nsec) / 1000)
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

local requests
-- Globals, read by done() through thread:get().
scheduled, sent, received, expected, first_us, last_us = 0, 0, 0, 0, 0, 0

function init(args)
  local all = {}
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    if method then all[#all + 1] = common.format(method, path, token, body) end
  end
  local nthreads = tonumber(args[2] or 1)
  requests = {}
  for i = math.floor(#all * tid / nthreads) + 1, math.floor(#all * (tid + 1) / nthreads) do
    requests[#requests + 1] = all[i]
  end
  assert(#requests > 0, "no requests for thread " .. tid .. " in " .. args[1])
  expected = #requests
end

-- wrk asks delay() before each request() of a connection: the first `expected` asks
-- get to send at once, every later one idles until the run ends.
function delay()
  if scheduled < expected then
    scheduled = scheduled + 1
    return 0
  end
  return 3600 * 1000
end

function request()
  -- wrk calls request() once on the first thread to check the script, before any delay()
  -- and without sending it: that call must not use up a request.
  if scheduled == 0 then return requests[1] end
  if first_us == 0 then first_us = now_us() end
  sent = sent + 1
  return requests[sent]
end

function response(status, headers, body)
  received = received + 1
  last_us = now_us()
  if received == expected then wrk.thread:stop() end
end

function done(summary, latency, _)
  local first, last, got, wanted = nil, 0, 0, 0
  for _, thread in ipairs(threads) do
    local started, ended = thread:get("first_us"), thread:get("last_us")
    got = got + thread:get("received")
    wanted = wanted + thread:get("expected")
    if started > 0 and (first == nil or started < first) then first = started end
    if ended > last then last = ended end
  end
  local span = first and (last - first) or 0
  common.done(summary, latency, nil, string.format(
    '"span_us": %d, "received": %d, "expected": %d', span, got, wanted))
end
