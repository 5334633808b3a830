-- GET /auth?KF_QUERY with the logged-in user's cookies (KF_COOKIE) for an application the user
-- has already allowed: every answer should be 302 to the redirect URI with a fresh code. Each
-- thread appends the codes to KF_CODES_OUT.<thread_no>, one per line. Answers other than 302 with
-- a code are counted in `non2xx`.
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

wrk.method = "GET"
wrk.path = "/auth?" .. assert(os.getenv("KF_QUERY"), "KF_QUERY is not set")
wrk.headers["Cookie"] = assert(os.getenv("KF_COOKIE"), "KF_COOKIE is not set")

local out = nil

function init(args)
   out = assert(io.open(assert(os.getenv("KF_CODES_OUT")) .. "." .. thread_no, "w"))
   out:setvbuf("full", 65536)
end

function response(status, headers, body)
   local location = headers["location"] or headers["Location"] or ""
   local code = location:match("[?&]code=([^&]+)")
   if status ~= 302 or not code then
      non2xx = non2xx + 1
      return
   end
   out:write(code, "\n")
end
