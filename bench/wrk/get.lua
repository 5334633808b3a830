-- GET a path (KF_PATH, default /healthz), with `Authorization: Bearer $KF_BEARER` when set.
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

wrk.method = "GET"
wrk.path = os.getenv("KF_PATH") or "/healthz"
local bearer = os.getenv("KF_BEARER")
if bearer and bearer ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. bearer
end
