-- POST /auth/token, one grant per line of KF_GRANTS_FILE, each sent exactly once. KF_GRANT is
-- `authorization_code` (lines are codes) or `refresh_token` (lines are refresh tokens); the client
-- authenticates with KF_CLIENT_ID and KF_CLIENT_SECRET in the body. Thread i of n takes lines i,
-- i+n, i+2n, … When KF_REFRESH_OUT is set, the refresh token of each 200 answer is appended to
-- KF_REFRESH_OUT.<thread_no>. With KF_EXPECT_ID_TOKEN=1, a 200 answer without an `id_token` is
-- counted in `non2xx` (the openid code exchange of scenario 14).
--
-- Codes and refresh tokens are single-use, and a second use ends the session, so nothing is ever
-- sent twice. A refresh_token thread that has used up its lines goes on with the new refresh
-- tokens its own answers carry (each also used once) and counts those requests in `reused`; an
-- authorization_code thread that runs out stops, and counts in `reused` the one request it had to
-- send (with an invalid code) before stopping.
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

local grant = assert(os.getenv("KF_GRANT"), "KF_GRANT is not set")
local field = (grant == "authorization_code") and "code" or "refresh_token"
local items = {}
local next_item = 1
local extra = {}
local out = nil
local written = 0
local prefix, suffix
local expect_id_token = os.getenv("KF_EXPECT_ID_TOKEN") == "1"

local function urlencode(s)
   return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function init(args)
   local n = tonumber(os.getenv("KF_THREADS") or "1")
   local line_no = 0
   local path = os.getenv("KF_GRANTS_FILE")
   assert(path, "KF_GRANTS_FILE is not set")
   for line in io.lines(path) do
      line_no = line_no + 1
      if (line_no - thread_no) % n == 0 and #line > 0 then
         items[#items + 1] = line
      end
   end
   assert(#items > 0, "nothing to send for thread " .. thread_no)
   path = os.getenv("KF_REFRESH_OUT")
   if path and path ~= "" then
      out = assert(io.open(path .. "." .. thread_no, "w"))
      out:setvbuf("full", 65536)
   end
   local body = "grant_type=" .. grant .. "&" .. field .. "=KFBENCH-PLACEHOLDER"
   if grant == "authorization_code" then
      body = body .. "&redirect_uri=" .. urlencode(assert(os.getenv("KF_REDIRECT_URI")))
   end
   body = body .. "&client_id=" .. urlencode(assert(os.getenv("KF_CLIENT_ID")))
      .. "&client_secret=" .. urlencode(assert(os.getenv("KF_CLIENT_SECRET")))
   -- Content-Length depends on the item's length: all codes (and all refresh tokens) have the
   -- same length, so format once with the first item and splice the others in.
   local sample = items[1]
   local template = wrk.format("POST", "/auth/token",
      { ["Content-Type"] = "application/x-www-form-urlencoded" },
      (body:gsub("KFBENCH%-PLACEHOLDER", sample)))
   local at = assert(template:find(sample, #template - #body, true))
   prefix = template:sub(1, at - 1)
   suffix = template:sub(at + #sample)
end

function request()
   local item
   if next_item <= #items then
      item = items[next_item]
      next_item = next_item + 1
   elseif #extra > 0 then
      item = table.remove(extra)
      reused = reused + 1
   else
      reused = reused + 1
      if grant == "authorization_code" then
         wrk.thread:stop()
      end
      item = string.rep("x", #items[1])
   end
   return prefix .. item .. suffix
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      return
   end
   if expect_id_token and not body:find('"id_token"%s*:%s*"') then
      non2xx = non2xx + 1
      return
   end
   local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
   if token then
      if grant == "refresh_token" then
         extra[#extra + 1] = token
      end
      if out then
         out:write(token, "\n")
         written = written + 1
         if written % 256 == 0 then out:flush() end
      end
   end
end

