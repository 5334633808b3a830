"""Whether sign-up and "Forgot password?" tell, by their timing, whether an email has an account.

    python3 bench/enumeration_timing.py http://127.0.0.1:8080

Runs against a Keyfob started with high budgets, so that nothing is throttled:
KEYFOB_LOGIN_ATTEMPTS_PER_MINUTE=100000 KEYFOB_MAIL_PER_ADDRESS_PER_HOUR=100000
KEYFOB_MAIL_PER_EMAIL_PER_HOUR=100000. Makes three owners, then 40 times: a sign-up with a new
email and with a taken one, and "Forgot password?" for a known and an unknown email (in
alternating order, so that neither always runs first). Prints each median and the ratios; a ratio
near 1 within the run's noise is the goal. Standard library only.
"""

import http.cookiejar, urllib.request, urllib.parse, re, time, uuid, statistics, sys
base = sys.argv[1]
def browser():
    cj = http.cookiejar.CookieJar()
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k): return None
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj), NoRedirect)
def csrf(op, path):
    html = op.open(base + path).read().decode()
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)
def post(op, path, form):
    data = urllib.parse.urlencode(form).encode()
    t = time.perf_counter()
    try:
        r = op.open(base + path, data); status = r.status; r.read()
    except urllib.error.HTTPError as e:
        status = e.code
    return status, (time.perf_counter() - t) * 1000
pw = "correct horse battery staple 9"
existing = []
for _ in range(3):
    op = browser(); e = f"{uuid.uuid4().hex}@example.com"
    post(op, "/dashboard/signup", {"csrf": csrf(op, "/dashboard/signup"), "email": e, "password": pw, "confirm": pw}); existing.append(e)
res = {"signup new": [], "signup taken": [], "forgot known": [], "forgot unknown": []}
for i in range(40):
    op = browser()
    s, ms = post(op, "/dashboard/signup", {"csrf": csrf(op, "/dashboard/signup"), "email": f"{uuid.uuid4().hex}@example.com", "password": pw, "confirm": pw}); assert s == 200, s; res["signup new"].append(ms)
    s, ms = post(op, "/dashboard/signup", {"csrf": csrf(op, "/dashboard/signup"), "email": existing[i % 3], "password": pw, "confirm": pw}); assert s == 200, s; res["signup taken"].append(ms)
    if i % 2:
        s, ms = post(op, "/dashboard/forgot", {"csrf": csrf(op, "/dashboard/forgot"), "email": existing[i % 3]}); assert s == 200, s; res["forgot known"].append(ms)
        s, ms = post(op, "/dashboard/forgot", {"csrf": csrf(op, "/dashboard/forgot"), "email": f"{uuid.uuid4().hex}@example.com"}); assert s == 200, s; res["forgot unknown"].append(ms)
    else:
        s, ms = post(op, "/dashboard/forgot", {"csrf": csrf(op, "/dashboard/forgot"), "email": f"{uuid.uuid4().hex}@example.com"}); assert s == 200, s; res["forgot unknown"].append(ms)
        s, ms = post(op, "/dashboard/forgot", {"csrf": csrf(op, "/dashboard/forgot"), "email": existing[i % 3]}); assert s == 200, s; res["forgot known"].append(ms)
for k, v in res.items():
    print(f"{k:15s} median {statistics.median(v):7.2f} ms  p90 {sorted(v)[int(len(v)*0.9)]:7.2f} ms  n={len(v)}")
print("ratio signup taken/new:", round(statistics.median(res["signup taken"]) / statistics.median(res["signup new"]), 3))
print("ratio forgot unknown/known:", round(statistics.median(res["forgot unknown"]) / statistics.median(res["forgot known"]), 3))
