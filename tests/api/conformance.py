"""Conformance of the running system to third-party tools (run by tests/api/conformance.sh).

1. A recorded set of HTTP exchanges covering every operation of the served /openapi.json and every
   status the gateway can be made to answer on one stack; each response is validated with
   openapi-core against that document (and each request meant to be valid, too). Exchanges the
   document does not describe (an unknown path, a method a path lacks) are checked to be
   problem+json with the documented status and Allow.
2. Two commands written straight to the commands topic that the processor dead-letters, then every
   message on the commands, events and dead-letter topics, read from the beginning with
   confluent-kafka, parsed with the CloudEvents SDK's Kafka binding (binary mode).
The /metrics of the three services are checked by promtool in the shell script.

Usage: conformance.py GATEWAY_URL JWT_SECRET_FILE|off BOOTSTRAP TOPIC_PREFIX
(off: the gateway runs with auth.mode=off; every request is tenant default, and the exchanges
about tokens are left out, since that document has no 401 or 403.)
Exit status 0 when nothing was found, 1 otherwise (every finding is printed).
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import sys
import time
import urllib.parse
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
import re

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.v1 import kafka as ce_kafka_v1

URL, SECRET_FILE, BOOTSTRAP, PREFIX = sys.argv[1:5]
HOST, PORT = urllib.parse.urlsplit(URL).hostname, urllib.parse.urlsplit(URL).port
AUTH_OFF = SECRET_FILE == "off"
SECRET = b"" if AUTH_OFF else open(SECRET_FILE, "rb").read()
findings = []
covered = set()  # (method, path template or "-", status)


def log(msg):
    print("conformance.py: " + msg, file=sys.stderr, flush=True)


def token(tenant, scope="commands:write commands:read aggregates:read"):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "conformance", "tenant": tenant, "exp": int(time.time()) + 3600,
                           "scope": scope}).encode())
    sig = b64(hmac.new(SECRET, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


RUN = uuid.uuid4().hex[:8]
TENANT = "default" if AUTH_OFF else "conf-" + RUN
AUTH = {} if AUTH_OFF else {"Authorization": "Bearer " + token(TENANT)}


class Req:
    def __init__(self, method, target, headers, body):
        split = urllib.parse.urlsplit(target)
        self.verb, self.target = method, target  # as sent, for the findings
        self.method = method.lower()
        self.host_url = URL
        self.path = split.path
        self.full_url_pattern = URL + split.path
        self.body = body
        self.content_type = headers.get("Content-Type", "application/json" if body else "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(urllib.parse.parse_qsl(split.query, keep_blank_values=True)),
            header=Headers(list(headers.items())), cookie=ImmutableMultiDict())


class Resp:
    def __init__(self, status, headers, data):
        self.status_code = status
        self.headers = Headers(headers)
        self.content_type = self.headers.get("Content-Type", "")
        self.data = data


spec_doc = None
openapi = None


def send(method, target, body=None, headers=None, auth=True):
    h = dict(AUTH) if auth else {}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    conn.request(method, target, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    resp = Resp(r.status, r.getheaders(), data)
    conn.close()
    return Req(method, target, h, body), resp


def problem_type(resp):
    try:
        return json.loads(resp.data).get("type")
    except Exception:
        return None


def exchange(name, method, target, body=None, headers=None, auth=True, expect=None, valid_request=True,
             ptype=None, documented=True):
    """Sends one request, checks the status (expect) and problem type, and validates with openapi-core."""
    req, resp = send(method, target, body, headers, auth)
    return check(name, req, resp, expect, valid_request, ptype, documented)


def check(name, req, resp, expect=None, valid_request=True, ptype=None, documented=True):
    """Checks one exchange: the status (expect), the problem type, and openapi-core's validation."""
    method, target = req.verb, req.target
    what = f"{name}: {method} {target} -> {resp.status_code}"
    if expect is not None and resp.status_code != expect:
        findings.append(f"{what}: expected {expect}; body {resp.data[:300]!r}")
    if ptype is not None and problem_type(resp) != ptype:
        findings.append(f"{what}: expected problem type {ptype}, got {problem_type(resp)}")
    if documented:
        if valid_request:
            try:
                openapi.validate_request(req)
            except Exception as e:
                findings.append(f"{what}: openapi-core refuses the request: {explain(e)}")
        try:
            result = openapi.unmarshal_response(req, resp)
            if result.errors:
                findings.append(f"{what}: openapi-core: " + "; ".join(explain(e) for e in result.errors))
            else:
                covered.add((method, template_of(req), resp.status_code))
        except Exception as e:
            findings.append(f"{what}: openapi-core: {explain(e)}")
    else:
        # Outside the document: a problem+json answer with the status in its body.
        ct = resp.headers.get("Content-Type", "")
        if method != "HEAD" and (not ct.startswith("application/problem+json") or
                                 json.loads(resp.data).get("status") != resp.status_code):
            findings.append(f"{what}: not a problem+json answer with its status ({ct})")
        if resp.status_code == 405 and not resp.headers.get("Allow"):
            findings.append(f"{what}: 405 without Allow")
        covered.add((method, "(undocumented) " + urllib.parse.urlsplit(target).path, resp.status_code))
    return resp


def explain(e):
    parts = [f"{type(e).__name__}: {e}"]
    for sub in getattr(e, "schema_errors", None) or []:
        parts.append(f"  {'/'.join(map(str, sub.absolute_path))}: {sub.message[:300]}")
    cause = e.__cause__
    while cause is not None:
        parts.append(f"  caused by {type(cause).__name__}: {str(cause)[:400]}")
        for sub in getattr(cause, "schema_errors", None) or []:
            parts.append(f"    {'/'.join(map(str, sub.absolute_path))}: {sub.message[:300]}")
        cause = cause.__cause__
    return "\n".join(parts)


def template_of(req):
    segs = req.path.split("/")
    if req.path.startswith("/v1/commands/"):
        return "/v1/commands/{id}"
    if req.path.startswith("/v1/aggregates/"):
        return "/v1/aggregates/{type}/{id}" if len(segs) > 4 else "/v1/aggregates/{type}"
    return req.path


def body_of(resp):
    return json.loads(resp.data)


def http_checks():
    global spec_doc, openapi
    conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    conn.request("GET", "/openapi.json")
    spec_doc = json.loads(conn.getresponse().read())
    conn.close()
    # openapi-core deserializes application/json and a few +json types only; problem+json (RFC 9457)
    # is JSON too. It has no checker for the uri-reference format (Location): RFC 3986's characters,
    # each % followed by two hex digits.
    uri_ref = re.compile(r"^([A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$")
    openapi = OpenAPI.from_dict(spec_doc, config=Config(
        extra_media_type_deserializers={"application/problem+json": json.loads},
        extra_format_validators={"uri-reference": lambda v: bool(uri_ref.match(v))}))

    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        exchange("operations", "GET", path, auth=False, expect=200)
        exchange("operations", "HEAD", path, auth=False, expect=200)

    acc = "acc-" + RUN
    cmd = lambda t, p=None, agg=acc, **kw: dict({"type": t, "aggregate_id": agg, "payload": p or {}}, **kw)
    r = exchange("create", "POST", "/v1/commands", cmd("account.open", {"owner": "ada"}), expect=201)
    exchange("create again", "POST", "/v1/commands", cmd("account.open", {"owner": "ada"}), expect=409,
             ptype="/problems/already-exists")
    k = "dep-" + RUN
    exchange("keyed", "POST", "/v1/commands", cmd("account.deposit", {"amount": 100}),
             {"Idempotency-Key": k}, expect=200)
    r = exchange("keyed replay", "POST", "/v1/commands", cmd("account.deposit", {"amount": 100}),
                 {"Idempotency-Key": k}, expect=200)
    if r.headers.get("Idempotent-Replayed") != "true":
        findings.append("keyed replay: no Idempotent-Replayed: true")
    exchange("key reused", "POST", "/v1/commands", cmd("account.deposit", {"amount": 7}),
             {"Idempotency-Key": k}, expect=422, ptype="/problems/idempotency-key-reused")
    exchange("quoted key", "POST", "/v1/commands", cmd("account.deposit", {"amount": 1}),
             {"Idempotency-Key": '"q \\"' + RUN + '\\""'}, expect=200)
    r = exchange("async", "POST", "/v1/commands", cmd("account.withdraw", {"amount": 30}),
                 {"Prefer": "respond-async"}, expect=202)
    cid = body_of(r)["command_id"]
    exchange("wait", "POST", "/v1/commands", cmd("account.deposit", {"amount": 5}),
             {"Prefer": "wait=5", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
              "tracestate": "congo=t61rcWkgMzE"}, expect=200)
    exchange("if-match", "POST", "/v1/commands", cmd("account.deposit", {"amount": 1}),
             {"If-Match": '"1"'}, expect=412, ptype="/problems/version-mismatch")
    exchange("expected_version", "POST", "/v1/commands",
             cmd("account.deposit", {"amount": 1}, expected_version=1), expect=412,
             ptype="/problems/version-mismatch")
    exchange("if-match none can match", "POST", "/v1/commands", cmd("account.deposit", {"amount": 1}),
             {"If-Match": 'W/"1"'}, expect=412)
    exchange("if-match star absent", "POST", "/v1/commands",
             cmd("account.deposit", {"amount": 1}, agg="absent-" + RUN), {"If-Match": "*"}, expect=412)
    exchange("if-match bad", "POST", "/v1/commands", cmd("account.deposit", {"amount": 1}),
             {"If-Match": "1"}, expect=400, valid_request=False)
    exchange("if-match vs expected_version", "POST", "/v1/commands",
             cmd("account.deposit", {"amount": 1}, expected_version=3), {"If-Match": '"4"'}, expect=400)
    exchange("invariant", "POST", "/v1/commands", cmd("account.withdraw", {"amount": 10 ** 9}),
             expect=422, ptype="/problems/invariant-violated")
    exchange("precondition", "POST", "/v1/commands", cmd("account.close"), expect=422,
             ptype="/problems/precondition-failed")
    exchange("not found", "POST", "/v1/commands", cmd("account.deposit", {"amount": 1}, agg="none-" + RUN),
             expect=422, ptype="/problems/aggregate-not-found")
    exchange("malformed", "POST", "/v1/commands", "{nope", expect=400, ptype="/problems/malformed-json",
             valid_request=False)
    exchange("out of range", "POST", "/v1/commands",
             '{"type":"account.deposit","aggregate_id":"x","payload":{"amount":1e400}}', expect=400,
             ptype="/problems/number-out-of-range", valid_request=False)
    exchange("not a command", "POST", "/v1/commands", [1], expect=400, ptype="/problems/invalid-request",
             valid_request=False)
    exchange("bad id", "POST", "/v1/commands", cmd("account.open", {"owner": "a"}, agg=".."), expect=400,
             ptype="/problems/invalid-request", valid_request=False)
    exchange("unknown type", "POST", "/v1/commands", cmd("nope.nope"), expect=400,
             ptype="/problems/unknown-command", valid_request=False)
    exchange("bad payload", "POST", "/v1/commands", cmd("account.deposit", {"amount": -5}), expect=400,
             ptype="/problems/invalid-payload", valid_request=False)
    exchange("too large", "POST", "/v1/commands",
             cmd("account.open", {"owner": "x" * 6000}, agg="big-" + RUN), expect=413,
             ptype="/problems/too-large", valid_request=False)
    exchange("far too large", "POST", "/v1/commands",
             cmd("account.open", {"owner": "x" * 80000}, agg="big-" + RUN), expect=413, valid_request=False)
    odd = "a/b %?#é-" + RUN
    r = exchange("odd id", "POST", "/v1/commands", cmd("account.open", {"owner": "o"}, agg=odd), expect=201)
    exchange("odd id read", "GET", r.headers.get("Location", "/none") + "?min_version=1", expect=200)
    exchange("document", "POST", "/v1/commands",
             {"type": "document.create", "aggregate_id": "doc-" + RUN,
              "payload": {"title": "t", "body": "b"}}, valid_request=True)
    if not AUTH_OFF:
        token_exchanges(acc, cmd)

    # Reads.
    read_exchanges(acc, cid)


def token_exchanges(acc, cmd):
    exchange("no token", "POST", "/v1/commands", cmd("account.deposit", {"amount": 1}), auth=False,
             expect=401, ptype="/problems/unauthorized", valid_request=False)
    exchange("bad token", "GET", f"/v1/aggregates/account/{acc}", auth=False,
             headers={"Authorization": "Bearer x.y.z"}, expect=401, valid_request=False)
    exchange("scope", "GET", f"/v1/aggregates/account/{acc}", auth=False,
             headers={"Authorization": "Bearer " + token(TENANT, "commands:write")}, expect=403,
             ptype="/problems/forbidden")


def read_exchanges(acc, cid):
    # An accepted command's record is written in batches: wait (bounded) until it is there.
    deadline = time.time() + 10
    while send("GET", f"/v1/commands/{cid}")[1].status_code != 200 and time.time() < deadline:
        time.sleep(0.05)
    exchange("command", "GET", f"/v1/commands/{cid}", expect=200)
    exchange("command", "HEAD", f"/v1/commands/{cid}", expect=200)
    exchange("command unknown", "GET", f"/v1/commands/{uuid.uuid4()}", expect=404)
    exchange("command unknown", "HEAD", f"/v1/commands/{uuid.uuid4()}", expect=404)
    exchange("command bad id", "GET", "/v1/commands/not-a-uuid", expect=404, valid_request=False)
    r = exchange("aggregate", "GET", f"/v1/aggregates/account/{acc}?min_version=5", expect=200)
    etag = r.headers.get("ETag", '"0"')
    exchange("aggregate", "HEAD", f"/v1/aggregates/account/{acc}", expect=200)
    exchange("304", "GET", f"/v1/aggregates/account/{acc}", headers={"If-None-Match": etag}, expect=304)
    exchange("304 weak list", "HEAD", f"/v1/aggregates/account/{acc}",
             headers={"If-None-Match": '"x", W/' + etag}, expect=304)
    exchange("stale", "GET", f"/v1/aggregates/account/{acc}?min_version=999", expect=200)
    exchange("min_version bad", "GET", f"/v1/aggregates/account/{acc}?min_version=0", expect=400,
             ptype="/problems/invalid-query", valid_request=False)
    exchange("aggregate unknown", "GET", f"/v1/aggregates/account/none-{RUN}", expect=404)
    exchange("type unknown", "GET", f"/v1/aggregates/nope/{acc}", expect=404, valid_request=False)
    exchange("list", "GET", "/v1/aggregates/account", expect=200)
    r = exchange("list page", "GET", "/v1/aggregates/account?limit=1&sort=-balance&balance_gte=0", expect=200)
    cur = body_of(r).get("next_cursor")
    if cur:
        exchange("list next", "GET", "/v1/aggregates/account?limit=1&sort=-balance&balance_gte=0&cursor=" +
                 urllib.parse.quote(cur), expect=200)
    exchange("list", "HEAD", "/v1/aggregates/account?owner=ada", expect=200)
    exchange("list bad", "GET", "/v1/aggregates/account?nickname=x", expect=400,
             ptype="/problems/invalid-query", valid_request=False)
    exchange("list bad cursor", "GET", "/v1/aggregates/account?cursor=zz", expect=400, valid_request=False)
    exchange("list unknown type", "GET", "/v1/aggregates/nope", expect=404, valid_request=False)

    # Outside the document.
    exchange("unknown path", "GET", "/v2/nothing", expect=404, documented=False)
    exchange("method", "DELETE", "/v1/commands", expect=405, documented=False)
    exchange("method", "POST", "/healthz", body={}, expect=405, documented=False)



def stopped(pid):
    """True when every thread of the process is stopped (state T in /proc)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return all(open(f"/proc/{pid}/task/{t}/stat").read().rsplit(") ", 1)[1][0] == "T" for t in tasks)


def paused(pid_var):
    """A context in which the service named by the environment variable is stopped (SIGSTOP)."""
    class Paused:
        def __enter__(self):
            self.pid = int(os.environ.get(pid_var) or 0)
            if self.pid <= 0:
                findings.append(f"{pid_var} not set: cannot pause the service")
                return None
            os.kill(self.pid, signal.SIGSTOP)
            # kill() returns before every thread has stopped: wait (bounded) until all have.
            deadline = time.time() + 5
            while not stopped(self.pid) and time.time() < deadline:
                time.sleep(0.01)
            if not stopped(self.pid):
                findings.append(f"{pid_var}: the service did not stop within 5 s")
            return self.pid

        def __exit__(self, *exc):
            if self.pid > 0:
                os.kill(self.pid, signal.SIGCONT)
    return Paused()


def inflight_exchange():
    """409 in-flight: a keyed command the processor (paused) has not decided yet, sent again."""
    with paused("CONF_PROCESSOR_PID") as pid:
        if pid:
            body = {"type": "account.open", "aggregate_id": "inflight-" + RUN, "payload": {"owner": "o"}}
            key = {"Idempotency-Key": "inflight-" + RUN, "Prefer": "respond-async"}
            exchange("in-flight first", "POST", "/v1/commands", body, key, expect=202)
            r = exchange("in-flight again", "POST", "/v1/commands", body, key, expect=409,
                         ptype="/problems/in-flight")
            if r.headers.get("Retry-After") != "1":
                findings.append("in-flight: no Retry-After: 1")


def kafka_down_exchanges():
    """503: the mock cluster paused; a command Kafka cannot take in time, and /readyz."""
    with paused("CONF_KAFKA_PID") as pid:
        if pid:
            t0 = time.time()
            r = exchange("kafka down", "POST", "/v1/commands",
                         {"type": "account.open", "aggregate_id": "down-" + RUN, "payload": {"owner": "o"}},
                         expect=503, ptype="/problems/unavailable")
            if r.status_code != 503:
                findings.append(f"kafka down: answered after {time.time() - t0:.3f} s; the mock cluster "
                                + ("stopped" if stopped(pid) else "running"))
            if not r.headers.get("Retry-After"):
                findings.append("kafka down: 503 without Retry-After")
            deadline = time.time() + 15
            while time.time() < deadline:
                req, resp = send("GET", "/readyz", auth=False)
                if resp.status_code == 503:
                    break
                time.sleep(0.5)
            exchange("readyz kafka down", "GET", "/readyz", auth=False, expect=503)
            exchange("readyz kafka down", "HEAD", "/readyz", auth=False, expect=503)


def rate_limit_exchange():
    """429, last: another tenant (the same one with authentication off) spends its burst."""
    flood = {} if AUTH_OFF else {"Authorization": "Bearer " + token("flood-" + RUN)}
    # Bounded by time, not by count: on a loaded machine the requests come slower, and the bucket
    # (burst 300, 20 a second) empties later.
    # The 429 checked is the one the flood got: a request sent after it could find a token the
    # bucket gained meanwhile (one each 50 ms).
    deadline = time.time() + 60
    while True:
        req, resp = send("GET", f"/v1/commands/{uuid.uuid4()}", headers=flood, auth=False)
        if resp.status_code == 429 or time.time() >= deadline:
            break
    check("rate limited", req, resp, expect=429, ptype="/problems/rate-limited")


def kafka_checks():
    topic = PREFIX + "commands"
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    # CloudEvents the processor dead-letters: a payload that fails its schema, an unknown type.
    for typ, payload in (("account.deposit", {"amount": -5}), ("nope.nope", {})):
        cid = str(uuid.uuid4())
        p.produce(topic, key=b"dlq-" + RUN.encode(), value=json.dumps(payload).encode(), headers=[
            ("ce_specversion", b"1.0"), ("ce_id", cid.encode()), ("ce_source", b"/conformance"),
            ("ce_type", typ.encode()), ("ce_subject", ("dlq-" + RUN).encode()),
            ("ce_time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()),
            ("content-type", b"application/json"), ("ce_tenant", TENANT.encode()),
            ("ce_idempotencykey", cid.encode())])
    if p.flush(10) != 0:
        findings.append("kafka: could not write the dead-letter commands")

    counts = {}
    for t in ("commands", "events", "commands.dlq"):
        name = PREFIX + t
        msgs = []
        deadline = time.time() + 30
        while True:
            msgs = read_all(name)
            if t != "commands.dlq" or sum(1 for m in msgs if headers_of(m).get("ce_tenant") == TENANT.encode()) >= 2:
                break
            if time.time() > deadline:
                findings.append(f"kafka: {name}: the two dead letters did not come within 30 s")
                break
            time.sleep(0.5)
        counts[t] = len(msgs)
        for m in msgs:
            where = f"{name} {m.partition()}/{m.offset()}"
            raw = m.headers() or []
            names = [k for k, _ in raw]
            dup = {k for k in names if names.count(k) > 1}
            if dup:
                findings.append(f"kafka: {where}: header(s) {sorted(dup)} repeated")
            hdrs = {k: v for k, v in raw}
            # The SDK takes any ce_ header as an attribute and does not insist on the required
            # ones: the CloudEvents spec's rules on names (lower-case letters and digits) and on
            # the required attributes are checked here.
            bad = [k for k in hdrs if k.startswith("ce_") and not re.fullmatch(r"[a-z0-9]+", k[3:])]
            if bad:
                findings.append(f"kafka: {where}: attribute names the spec does not allow: {bad}")
            missing = [a for a in ("id", "source", "specversion", "type") if not hdrs.get("ce_" + a)]
            if missing or hdrs.get("ce_specversion") != b"1.0":
                findings.append(f"kafka: {where}: required attributes missing {missing} or not 1.0")
            try:
                ev = ce_kafka.from_binary_event(ce_kafka.KafkaMessage(headers=hdrs, key=m.key(), value=m.value() or b""))
                if not ev.get_id() or not ev.get_source() or not ev.get_type():
                    findings.append(f"kafka: {where}: event without id, source or type")
            except Exception as e:
                findings.append(f"kafka: {where}: cloudevents (core binding) cannot parse it: "
                                f"{type(e).__name__}: {e}; headers {hdrs}")
            try:
                ce_kafka_v1.from_binary(ce_kafka_v1.KafkaMessage(headers=hdrs, key=m.key(), value=m.value()))
            except Exception as e:
                findings.append(f"kafka: {where}: cloudevents (v1 binding) cannot parse it: "
                                f"{type(e).__name__}: {e}; headers {hdrs}")
    log("CloudEvents parsed: " + ", ".join(f"{PREFIX}{t} {n}" for t, n in counts.items()))
    for t in ("commands", "events", "commands.dlq"):
        if counts.get(t, 0) == 0:
            findings.append(f"kafka: {PREFIX}{t} is empty")


def headers_of(m):
    return {k: v for k, v in (m.headers() or [])}


def read_all(name):
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "conformance-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = c.list_topics(name, timeout=10)
    parts = list(md.topics[name].partitions)
    ends = {}
    for pt in parts:
        lo, hi = c.get_watermark_offsets(TopicPartition(name, pt), timeout=10)
        if hi > lo:
            ends[pt] = hi
    msgs = []
    if ends:
        c.assign([TopicPartition(name, pt, 0) for pt in ends])
        deadline = time.time() + 30
        done = set()
        while len(done) < len(ends) and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                findings.append(f"kafka: {name}: {m.error()}")
                continue
            msgs.append(m)
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
        if len(done) < len(ends):
            findings.append(f"kafka: {name}: could not read to the end within 30 s")
    c.close()
    return msgs


def main():
    http_checks()
    inflight_exchange()
    kafka_checks()
    kafka_down_exchanges()
    rate_limit_exchange()
    log(f"{len(covered)} (method, path, status) triples validated by openapi-core:")
    for m, p, st in sorted(covered, key=lambda x: (x[1], x[0], x[2])):
        log(f"  {m} {p} {st}")
    for f in findings:
        print("FINDING: " + f, file=sys.stderr)
    log(f"{len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
