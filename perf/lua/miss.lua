-- Every request a URL never asked before: PARAMS.path plus a query parameter
-- made of the run's tag, the thread and a counter, so no two requests of any
-- run against one server share a cache key.
local counter = 0
local prefix

function init(args)
  local separator = string.find(PARAMS.path, "?", 1, true) and "&" or "?"
  prefix = PARAMS.path .. separator .. "miss=" .. PARAMS.tag .. "-" .. thread_id .. "-"
end

function request()
  counter = counter + 1
  return wrk.format(nil, prefix .. counter)
end
