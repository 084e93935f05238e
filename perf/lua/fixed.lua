-- One URL for every request (PARAMS.path), with PARAMS.headers.
function init(args)
  for name, value in pairs(PARAMS.headers) do wrk.headers[name] = value end
  fixed_request = wrk.format(nil, PARAMS.path)
end

function request()
  return fixed_request
end
