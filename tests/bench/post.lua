-- wrk script of the HTTP benchmark: each request is one optimistic deposit command
-- (Prefer: respond-async) to one of 1000 accounts, the same for every server. Answers other than
-- 202 are counted; done() prints one RESULT line for tests/bench/bench.sh.
local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

function init(args)
    n = id * 1000003
    not_202 = 0
end

local headers = {
    ["Content-Type"] = "application/json",
    ["Prefer"] = "respond-async",
}

function request()
    n = n + 1
    local body = string.format(
        '{"type":"account.deposit","aggregate_id":"bench-%d","payload":{"amount":1}}', n % 1000)
    return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
    if status ~= 202 then
        not_202 = not_202 + 1
    end
end

function done(summary, latency, requests)
    local bad = 0
    for _, t in ipairs(threads) do
        bad = bad + t:get("not_202")
    end
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d not_202=%d errors=%d p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration, bad, e.connect + e.read + e.write + e.timeout,
        latency:percentile(50), latency:percentile(99)))
end
