-- wrk script for the session benchmark. Configured by environment:
--   BENCH_METHOD, BENCH_PATH   the request line
--   BENCH_SESSIONS             file of "cookie<TAB>csrf" lines; requests cycle through them (empty: no cookie)
--   BENCH_WRITE=1              send {"preferences":{"counter":N}} with N rising on every request,
--                              so every request really changes the session
--   BENCH_OUT                  where done() writes the summary as JSON
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local writing = os.getenv("BENCH_WRITE") == "1"
local sessions = {}
local prepared = {}
local idx = 0
local counter = 0

function init(args)
  local file = os.getenv("BENCH_SESSIONS")
  if file and file ~= "" then
    for line in io.lines(file) do
      local cookie, csrf = line:match("^([^\t]+)\t?(.*)$")
      if cookie then sessions[#sessions + 1] = { cookie = cookie, csrf = csrf } end
    end
  end
  if writing and #sessions == 0 then error("BENCH_WRITE needs sessions") end
  if #sessions == 0 then
    prepared[1] = wrk.format(method, path, {})
  else
    for i, s in ipairs(sessions) do prepared[i] = wrk.format(method, path, { Cookie = s.cookie }) end
  end
  -- Each thread starts at its own offset and counts in its own lane of numbers.
  idx = (tonumber(wrk.thread:get("index")) or 0) % math.max(1, #sessions)
  counter = (tonumber(wrk.thread:get("index")) or 0) * 1000000000
end

function setup(thread)
  thread_count = (thread_count or 0) + 1
  thread:set("index", thread_count - 1)
end

function request()
  if writing then
    idx = idx % #sessions + 1
    counter = counter + 1
    local s = sessions[idx]
    local body = '{"preferences":{"counter":' .. counter .. '}}'
    return wrk.format(method, path, { Cookie = s.cookie, ["X-CSRF-Token"] = s.csrf, ["Content-Type"] = "application/json" }, body)
  end
  idx = idx % #prepared + 1
  return prepared[idx]
end

function done(summary, latency, requests)
  local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  local e = summary.errors
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
  f:close()
end
