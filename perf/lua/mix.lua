-- The realistic mix: URLs PARAMS.path .. "?v=" .. rank, the rank drawn from a
-- Zipf distribution with exponent PARAMS.exponent over PARAMS.urls ranks, and
-- PARAMS.miss_share of requests sent to a URL never asked before. Responses
-- are counted by their X-Cache header, so the report holds the real share of
-- misses (a peer without X-Cache counts every response as a miss).
local cumulative = {}
local counter = 0
misses, counted = 0, 0

function init(args)
  math.randomseed(PARAMS.seed + thread_id)
  local total = 0
  for rank = 1, PARAMS.urls do
    total = total + 1 / rank ^ PARAMS.exponent
    cumulative[rank] = total
  end
  for rank = 1, PARAMS.urls do cumulative[rank] = cumulative[rank] / total end
end

local function zipf_rank()
  local u = math.random()
  local low, high = 1, PARAMS.urls
  while low < high do
    local middle = math.floor((low + high) / 2)
    if cumulative[middle] < u then low = middle + 1 else high = middle end
  end
  return low
end

function request()
  if math.random() < PARAMS.miss_share then
    counter = counter + 1
    return wrk.format(nil, PARAMS.path .. "?miss=" .. PARAMS.tag .. "-" .. thread_id .. "-" .. counter)
  end
  return wrk.format(nil, PARAMS.path .. "?v=" .. zipf_rank())
end

function response(status, headers, body)
  counted = counted + 1
  local outcome = headers["X-Cache"] or headers["x-cache"]
  if outcome ~= "HIT" and outcome ~= "STALE" then misses = misses + 1 end
end
