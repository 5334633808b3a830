-- POST /auth/token with grant_type=client_credentials and scope=deals.read: a confidential
-- application gets a token for itself, authenticating with HTTP Basic (client_secret_basic) from
-- KF_CLIENT_ID and KF_CLIENT_SECRET. Every request is the same; each answer is a new token.
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

local function urlencode(s)
   return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- A minimal base64 encoder (wrk's LuaJIT has none): RFC 6749 §2.3.1's form-encoded id and
-- secret, joined by a colon.
local function base64(s)
   local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
   return ((s:gsub(".", function(c)
      local bits, byte = "", c:byte()
      for i = 8, 1, -1 do
         bits = bits .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0")
      end
      return bits
   end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(bits)
      if #bits < 6 then return "" end
      local n = 0
      for i = 1, 6 do
         n = n + (bits:sub(i, i) == "1" and 2 ^ (6 - i) or 0)
      end
      return alphabet:sub(n + 1, n + 1)
   end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

local id = urlencode(assert(os.getenv("KF_CLIENT_ID"), "KF_CLIENT_ID is not set"))
local secret = urlencode(assert(os.getenv("KF_CLIENT_SECRET"), "KF_CLIENT_SECRET is not set"))

wrk.method = "POST"
wrk.path = "/auth/token"
wrk.body = "grant_type=client_credentials&scope=deals.read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. base64(id .. ":" .. secret)
