-- wrk: POST the body in $BENCH_BODY with the headers in $BENCH_HEADERS
-- ("Name: value" separated by "|").
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for h in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
	local name, value = h:match("^%s*([^:]+):%s*(.*)$")
	if name then wrk.headers[name] = value end
end
