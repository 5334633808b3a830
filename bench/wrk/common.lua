-- Shared by every wrk script in bench/: counts responses outside 200-299 in each thread and
-- prints one machine-readable summary line that bench/run.sh parses:
--   KFBENCH requests=… seconds=… rps=… p50_us=… p99_us=… non2xx=… reused=… errors=…
-- Per-thread globals (`non2xx`, `reused`) live in each thread's own Lua state; done() runs in
-- the main state and collects them through the thread handles that setup() kept.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_no", #threads)
end

non2xx = 0
reused = 0

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
end

function done(summary, latency, requests)
   local bad, again = 0, 0
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non2xx") or 0)
      again = again + (t:get("reused") or 0)
   end
   local e = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "KFBENCH requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d non2xx=%d reused=%d errors=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99), bad, again,
      e.connect + e.read + e.write + e.timeout))
end
