-- wrk script for the `dpop` workload of `make bench`: the file named by $BENCH_PROOFS holds one DPoP-bound
-- access token on its first line, then one single-use DPoP proof per line (minted by the bench right before
-- this run). Each request is `Authorization: DPoP <token>` + `DPoP: <proof>`, every proof sent at most once
-- (the filter refuses a replayed jti). Once they are used up, requests go without a `DPoP` header (401 at
-- the filter, so non-2xx), never with a used proof; done() prints how many (the bench fails the run on it).
-- Run with -t1 (one thread: one list). Requests are pre-formatted in init().
local path = os.getenv("BENCH_PROOFS")
if path == nil or path == "" then
  error("BENCH_PROOFS is not set")
end

local requests = {}
local n = 0
local without_proof = nil

-- Globals, read back by done() through thread:get().
used = 0
short = 0

function init(args)
  local f = assert(io.open(path, "r"))
  local token = f:read("*l")
  if token == nil or #token == 0 then
    error("no token on the first line of " .. path)
  end
  for line in f:lines() do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("GET", nil, { ["Authorization"] = "DPoP " .. token, ["DPoP"] = line })
    end
  end
  f:close()
  if n == 0 then
    error("no proofs in " .. path)
  end
  without_proof = wrk.format("GET", nil, { ["Authorization"] = "DPoP " .. token })
end

function request()
  if used < n then
    used = used + 1
    local r = requests[used]
    requests[used] = nil
    return r
  end
  short = short + 1
  return without_proof
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, reqs)
  local u, s = 0, 0
  for _, t in ipairs(threads) do
    u = u + (t:get("used") or 0)
    s = s + (t:get("short") or 0)
  end
  io.write(string.format("dpop proofs: used %d, requests without a proof %d\n", u, s))
end
