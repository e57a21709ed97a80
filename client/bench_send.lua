-- wrk script for messenger-bench's `send` scenario (used with --wrk):
--   wrk -t2 -c32 -d10s --latency -s client/bench_send.lua http://127.0.0.1:8000 -- TOKENS_FILE
-- TOKENS_FILE: the chat id on the first line, then one bearer token per line.
-- Requests rotate through the tokens, so every sender is a distinct user.
local tokens = {}
local chat_id = ""
local counter = 0
local failed = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  chat_id = f:read("*l")
  for line in f:lines() do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  f:close()
  counter = math.random(1, 1000000)
end

function request()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  local body = string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"messages.send","params":{"chat_id":"%s","text":"wrk %d"}}',
    counter, chat_id, counter)
  return wrk.format("POST", "/rpc", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"result"', 1, true) then
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("failed") or 0)
  end
  io.write(string.format("rpc_errors %d\n", total))
end
