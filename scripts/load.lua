-- wrk script for scripts/load.sh: POST /charges of the payments example, in one of three modes
-- given as the script's first argument, with a name for this run's keys as the second
-- (`wrk ... -s scripts/load.lua -- MODE RUN`):
--   plain   no Idempotency-Key: the handler simply runs, nothing is stored;
--   first   a key never sent before on every request: claim, run, store;
--   replay  the same key on every request: the stored answer is replayed.

wrk.method = "POST"
wrk.path = "/charges"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"amount":1999,"currency":"eur"}'

local mode = "plain"
local prefix = ""
local counter = 0

function init(args)
   mode = args[1] or "plain"
   -- Keys of separate runs must never meet: each run names its own.
   prefix = "load-" .. (args[2] or tostring(os.time())) .. "-"
   if mode == "replay" then
      wrk.headers["Idempotency-Key"] = prefix .. "replayed"
   end
end

function request()
   if mode == "first" then
      counter = counter + 1
      wrk.headers["Idempotency-Key"] = prefix .. counter
   end
   return wrk.format()
end
