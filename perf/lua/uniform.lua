-- URLs PARAMS.path .. "?e=" .. i, i drawn uniformly from 1 to PARAMS.count.
function init(args)
  math.randomseed(PARAMS.seed + thread_id)
end

function request()
  return wrk.format(nil, PARAMS.path .. "?e=" .. math.random(PARAMS.count))
end
