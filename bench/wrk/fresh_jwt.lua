-- GET /auth/whoami with a different JWT on every request. Tokens come from KF_TOKENS_FILE (one per
-- line); thread i of n takes lines i, i+n, i+2n, … so no two threads share a token. A thread that
-- runs out starts over and counts each repeat in `reused` (a repeat hits the verified-token cache,
-- so the summary reports it and bench/run.sh warns).
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

local tokens = {}
local next_token = 1
local wrapped = false
local prefix, suffix

function init(args)
   local n = tonumber(os.getenv("KF_THREADS") or "1")
   local line_no = 0
   local path = os.getenv("KF_TOKENS_FILE")
   assert(path, "KF_TOKENS_FILE is not set")
   for line in io.lines(path) do
      line_no = line_no + 1
      if (line_no - thread_no) % n == 0 and #line > 0 then
         tokens[#tokens + 1] = line
      end
   end
   assert(#tokens > 0, "no tokens for thread " .. thread_no)
   -- Format the request once around a placeholder, then splice each token in.
   local marker = "KFBENCH-TOKEN-PLACEHOLDER"
   local template = wrk.format("GET", "/auth/whoami", { ["Authorization"] = "Bearer " .. marker })
   local at = assert(template:find(marker, 1, true))
   prefix = template:sub(1, at - 1)
   suffix = template:sub(at + #marker)
end

function request()
   if next_token > #tokens then
      next_token = 1
      wrapped = true
   end
   if wrapped then
      reused = reused + 1
   end
   local token = tokens[next_token]
   next_token = next_token + 1
   return prefix .. token .. suffix
end
