-- wrk script: every request is the next pre-signed Messenger webhook delivery.
--
--   wrk -t1 -c64 -d10s -s bench/wrk_webhook.lua http://127.0.0.1:PORT/api/v1/bots/___/mod/channel-messenger/webhook -- BODIES
--
-- BODIES holds one delivery per line: "<X-Hub-Signature-256 value>\t<JSON body>", or
-- "<X-Hub-Signature-256>\t<X-Hub-Signature (SHA-1)>\t<JSON body>" to send both headers, each
-- with unique mids (bench/common.py writes it). Reading the next line costs a few microseconds, so
-- the signature work stays out of the load generator. When the file runs out it starts
-- again (later deliveries are then duplicates); `wrapped` in the summary says if that happened.
-- Use one thread (-t1): each thread would read the same file.

local file
wrapped = 0

function init(args)
   file = assert(io.open(args[1], "rb"), "cannot open the bodies file " .. tostring(args[1]))
end

function request()
   local line = file:read("*l")
   if line == nil then
      file:seek("set", 0)
      wrapped = wrapped + 1
      line = file:read("*l")
   end
   local tab = line:find("\t", 1, true)
   local headers = {
      ["Content-Type"] = "application/json",
      ["X-Hub-Signature-256"] = line:sub(1, tab - 1),
   }
   local body = tab + 1
   if line:sub(body, body) ~= "{" then
      -- a second field before the body: the SHA-1 X-Hub-Signature (Bottender checks only that one)
      local second = line:find("\t", body, true)
      headers["X-Hub-Signature"] = line:sub(body, second - 1)
      body = second + 1
   end
   return wrk.format("POST", nil, headers, line:sub(body))
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   local wraps = 0
   for _, thread in ipairs(threads) do
      wraps = wraps + (thread:get("wrapped") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"wrapped":%d}\n',
      summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, wraps))
end
