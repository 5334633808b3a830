-- POST /auth/login with a wrong password and a different email on every request, with the form's
-- CSRF token (KF_CSRF) in both the field and the kf_user_form cookie. An answer of 400 ("the
-- email or password is incorrect") means a password check ran; 429 means the rate limit refused
-- the attempt first. Both are expected and counted apart (`checked`, `limited`); anything else is
-- counted in `non2xx`.
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

local csrf = assert(os.getenv("KF_CSRF"), "KF_CSRF is not set")
local n = 0
checked = 0
limited = 0

function request()
   n = n + 1
   local body = "csrf=" .. csrf .. "&request=&email=flood-" .. thread_no .. "-" .. n
      .. "%40example.com&password=wrong-password-" .. n
   return wrk.format("POST", "/auth/login", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Cookie"] = "kf_user_form=" .. csrf,
   }, body)
end

function response(status, headers, body)
   if status == 400 then
      checked = checked + 1
   elseif status == 429 then
      limited = limited + 1
   else
      non2xx = non2xx + 1
   end
end

local flood_threads = {}
local common_setup = setup
function setup(thread)
   common_setup(thread)
   table.insert(flood_threads, thread)
end

local common_done = done
function done(summary, latency, requests)
   local c, l = 0, 0
   for _, t in ipairs(flood_threads) do
      c = c + (t:get("checked") or 0)
      l = l + (t:get("limited") or 0)
   end
   io.write(string.format("KFFLOOD checked=%d limited=%d\n", c, l))
   common_done(summary, latency, requests)
end
