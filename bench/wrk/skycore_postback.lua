-- wrk script: POST Skycore delivery postbacks to the URL given on the command line.
--
-- Environment (set by bench/ingest.py; defaults in brackets):
--   BENCH_MESSAGES    TRACKINGIDs are drawn uniformly from SMS_1..SMS_<n>   [100000]
--   BENCH_SENT_PCT    percent of postbacks that report "sent", the rest "delivered"   [30]
--   BENCH_PAYLOAD     "postback" (flat <POSTBACK>, CODE N201/N202) or
--                     "notification" (legacy <NOTIFICATION>, N201 with/without
--                     <STATUS PROTOCOL="4" STATUS="0"/>)   [postback]
--   BENCH_BODY_BYTES  every body is padded with trailing spaces to this size   [500]
--   BENCH_OUT         when set, done() also writes its JSON line to this file
--
-- TIMESTAMP carries random seconds within one day, so a message gets its receipts in any
-- order (delivered before sent, several of each); the tracker's verdicts show what it made of
-- them (applied / ignored / duplicate).
-- done() prints one line "BENCH_JSON {...}" with the counters bench/ingest.py reads.

local messages = tonumber(os.getenv("BENCH_MESSAGES") or "100000")
local sent_pct = tonumber(os.getenv("BENCH_SENT_PCT") or "30")
local payload = os.getenv("BENCH_PAYLOAD") or "postback"
local body_bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "500")
local out_path = os.getenv("BENCH_OUT")

local POSTBACK = [[<?xml version='1.0'?>
<POSTBACK xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
xsi:noNamespaceSchemaLocation ="http://www.skycore.com/schema/postback.xsd">
  <ORIGIN>SMS_MT</ORIGIN>
  <CODE>%s</CODE>
  <STATUS>%s</STATUS>
  <TO>15551230000</TO>
  <TRACKINGID>SMS_%d</TRACKINGID>
  <SPID>0001470</SPID>
  <TIMESTAMP>2025-06-01T%02d:%02d:%02d-05:00</TIMESTAMP>
  <AGGREGATORID>11529-64807-97508-73852-97658</AGGREGATORID>
</POSTBACK>
]]

local NOTIFICATION = [[<NOTIFICATION ID="%d" CREATED="2025-06-01 %02d:%02d:%02d.146582-05">
	<ORIGIN>SMS_MT</ORIGIN>
	<CODE>N201</CODE>
	<BODY>
	<HISTORYID>236990</HISTORYID>
	<TO>15551230000</TO>
	<TRACKINGID>SMS_%d</TRACKINGID>
%s	<TIMESTAMP>2025-06-01 %02d:%02d:%02d.262743-05</TIMESTAMP>
	</BODY>
</NOTIFICATION>
]]

local headers = {["Content-Type"] = "text/xml; charset=utf-8"}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
end

local function pad(body)
  local short = body_bytes - #body
  if short > 0 then
    body = body .. string.rep(" ", short)
  end
  return body
end

function request()
  local n = math.random(1, messages)
  local sent = math.random(0, 99) < sent_pct
  local h, m, s = math.random(0, 23), math.random(0, 59), math.random(0, 59)
  local body
  if payload == "notification" then
    local dlr = sent and "" or '\t<STATUS PROTOCOL="4" STATUS="0"/>\n'
    body = string.format(NOTIFICATION, math.random(1, 999999), h, m, s, n, dlr, h, m, s)
  elseif sent then
    body = string.format(POSTBACK, "N201", "Message Sent", n, h, m, s)
  else
    body = string.format(POSTBACK, "N202", "Message Sent/Delivered", n, h, m, s)
  end
  return wrk.format("POST", nil, headers, pad(body))
end

function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "lat_mean_us": %.1f, "lat_max_us": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d}',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9))
  io.write("BENCH_JSON " .. line .. "\n")
  if out_path then
    local f = io.open(out_path, "w")
    f:write(line .. "\n")
    f:close()
  end
end
