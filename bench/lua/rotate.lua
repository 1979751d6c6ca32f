-- Rotates through prepared requests, one per line of the file named after "--":
--   METHOD<TAB>PATH<TAB>TOKEN<TAB>BODY      (TOKEN and BODY may be empty)
--   METHOD<TAB>PATH<TAB>TOKEN<TAB><TAB>ETAG (a conditional GET: If-None-Match)
-- Every thread starts at its own offset, so threads send different users' requests.
-- Usage: wrk -t2 -c64 -d15s --latency -s rotate.lua URL -- requests.tsv 2
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "common.lua")
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local requests, index

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local etag = ""
    if body and body:sub(1, 1) == "\t" then etag, body = body:sub(2), "" end
    if method then
      requests[#requests + 1] = common.format(method, path, token, body, etag)
    end
  end
  assert(#requests > 0, "no requests in " .. args[1])
  index = math.floor(#requests * tid / tonumber(args[2] or 1))
end

function request()
  index = index % #requests + 1
  return requests[index]
end

done = common.done
