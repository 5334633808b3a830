-- POST KF_BODY (JSON) to KF_PATH with `Authorization: Bearer $KF_BEARER`: record creation.
dofile(os.getenv("KF_WRK_DIR") .. "/common.lua")

wrk.method = "POST"
wrk.path = assert(os.getenv("KF_PATH"), "KF_PATH is not set")
wrk.body = assert(os.getenv("KF_BODY"), "KF_BODY is not set")
wrk.headers["Content-Type"] = "application/json"
local bearer = os.getenv("KF_BEARER")
assert(bearer, "KF_BEARER is not set")
wrk.headers["Authorization"] = "Bearer " .. bearer
