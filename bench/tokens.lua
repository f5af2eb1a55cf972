-- wrk script for `make bench`: round-robins `Authorization: Bearer <token>` over the tokens in the file
-- named by $BENCH_TOKENS (one token per line). Requests are pre-formatted once per wrk thread.
local path = os.getenv("BENCH_TOKENS")
if path == nil or path == "" then
  error("BENCH_TOKENS is not set")
end

local requests = {}
local n = 0

function init(args)
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. line })
    end
  end
  f:close()
  if n == 0 then
    error("no tokens in " .. path)
  end
end

local i = 0

function request()
  i = i + 1
  if i > n then
    i = 1
  end
  return requests[i]
end
