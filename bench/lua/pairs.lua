-- Adds then removes favorites, each line of the file named after "--" being one pair:
--   TOKEN<TAB>LISTENER_ID
-- Each thread takes its own slice of the pairs and sends, in turn, an add for the next
-- pair and a remove for the pair added LAG adds earlier: LAG is far more than the
-- requests a thread has in flight, so a remove always follows its own add.
-- Usage: wrk -t2 -c64 -d15s --latency -s pairs.lua URL -- pairs.tsv 2
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")
local LAG = 256
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local adds, removes, step

function init(args)
  local all = {}
  for line in io.lines(args[1]) do
    local token, listener = line:match("^([^\t]*)\t(%d+)$")
    if token then all[#all + 1] = {token, listener} end
  end
  local nthreads = tonumber(args[2] or 1)
  local first = math.floor(#all * tid / nthreads) + 1
  local last = math.floor(#all * (tid + 1) / nthreads)
  assert(last - first + 1 > LAG, "too few pairs per thread in " .. args[1])
  adds, removes = {}, {}
  for i = first, last do
    local body = '{"listener_id": ' .. all[i][2] .. '}'
    adds[#adds + 1] = common.format("POST", "/favorites/add", all[i][1], body)
    removes[#removes + 1] = common.format("DELETE", "/favorites/remove", all[i][1], body)
  end
  step = 0
end

function request()
  local n = #adds
  local k = math.floor(step / 2)
  step = step + 1
  if step % 2 == 1 then
    return adds[k % n + 1]
  end
  return removes[(k - LAG) % n + 1]
end

done = common.done
