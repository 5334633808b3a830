-- POST /auth with the API key in KF_BEARER. When KF_TOKENS_OUT is set, each thread appends the
-- tokens it receives to KF_TOKENS_OUT.<thread_no>, one per line (flushed every 256 tokens and at
-- exit), so bench/run.sh can replay them as fresh JWTs.
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

wrk.method = "POST"
wrk.path = "/auth"
wrk.body = '{"permissions":["deals.read"]}'
wrk.headers["Content-Type"] = "application/json"
local bearer = os.getenv("KF_BEARER")
assert(bearer, "KF_BEARER is not set")
wrk.headers["Authorization"] = "Bearer " .. bearer

local out = nil
local written = 0

function init(args)
   local path = os.getenv("KF_TOKENS_OUT")
   if path and path ~= "" then
      out = assert(io.open(path .. "." .. thread_no, "w"))
      out:setvbuf("full", 65536)
   end
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      return
   end
   if out then
      local token = body:match('"token"%s*:%s*"([^"]+)"')
      if token then
         out:write(token, "\n")
         written = written + 1
         if written % 256 == 0 then
            out:flush()
         end
      end
   end
end
