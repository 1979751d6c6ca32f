-- Sends pairs of requests of one user, the second LAG pairs after the first: an add then
-- a remove of a favorite, going busy then available again. Each line of the file named
-- after "--" is one pair:
--   TOKEN<TAB>METHOD<TAB>PATH<TAB>BODY<TAB>METHOD<TAB>PATH<TAB>BODY
-- Each thread takes its own slice of the pairs and sends, in turn, the first request of
-- the next pair and the second of the pair begun LAG pairs earlier: LAG is far more than
-- the requests a thread has in flight, so a second request always follows its own first.
-- Usage: wrk -t2 -c64 -d15s --latency -s pairs.lua URL -- pairs.tsv 2
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")
local MAX_LAG = 256
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local firsts, seconds, step, lag

function init(args)
  local all = {}
  for line in io.lines(args[1]) do
    local fields = {}
    for value in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = value end
    if #fields == 7 then all[#all + 1] = fields end
  end
  local nthreads = tonumber(args[2] or 1)
  local first = math.floor(#all * tid / nthreads) + 1
  local last = math.floor(#all * (tid + 1) / nthreads)
  firsts, seconds = {}, {}
  for i = first, last do
    local token, pair = all[i][1], all[i]
    firsts[#firsts + 1] = common.format(pair[2], pair[3], token, pair[4])
    seconds[#seconds + 1] = common.format(pair[5], pair[6], token, pair[7])
  end
  lag = math.min(MAX_LAG, math.floor(#firsts / 2))
  -- (the smoke run's few pairs: a thread there has at most 8 requests in flight)
  assert(lag >= 16, "too few pairs per thread in " .. args[1])
  step = 0
end

function request()
  local n = #firsts
  local k = math.floor(step / 2)
  step = step + 1
  if step % 2 == 1 then
    return firsts[k % n + 1]
  end
  return seconds[(k - lag) % n + 1]
end

done = common.done
