-- wrk script for scripts/load.sh: POST a charge to benches/load_server.rs, in one of eleven modes
-- given as the script's first argument, with a name for this run's keys as the second
-- (`wrk ... -s scripts/load.lua -- MODE RUN`):
--   plain   /plain/charges, the handler without the attribute, no key;
--   busy    /busy/charges, the plain handler spinning a fixed time on the CPU, no key;
--   store   /store/charges, the plain handler plus a claim and a completion on the full store;
--   moka    /moka/charges, the plain handler plus moka's own insertion at the bound;
--   moka_roomy  /moka_roomy/charges, the same far from the bound;
--   first   /full/charges, a key never sent before on every request: claim, run, store;
--   forget  /full/charges, the same under keys whose completion the store forgets: a first
--           execution without moka's insertion;
--   vacant  /full/charges, the same under keys the store hands to an empty store and forgets: a
--           first execution without moka's insertion and without the look into its full table;
--   roomy   /roomy/charges, the same on a store far from its bound;
--   replay  /full/charges, the same key on every request: the stored answer is replayed;
--   floor   /floor/charges, the key `floor-replayed` on every request: the least a replay can do.

wrk.method = "POST"
wrk.path = "/plain/charges"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"amount":1999,"currency":"eur"}'

local mode = "plain"
local prefix = ""
local counter = 0

function init(args)
   mode = args[1] or "plain"
   if mode == "first" or mode == "forget" or mode == "vacant" or mode == "replay" then
      wrk.path = "/full/charges"
   elseif mode == "roomy" then
      wrk.path = "/roomy/charges"
   elseif mode == "busy" or mode == "store" or mode == "moka" or mode == "moka_roomy"
      or mode == "floor" then
      wrk.path = "/" .. mode .. "/charges"
   end
   -- Keys of separate runs must never meet: each run names its own.
   -- `forget-` makes the store forget a completion, `vacant-` sends the key to an empty store
   -- that forgets it too; `charge-` is as long.
   local kinds = { forget = "forget-", vacant = "vacant-" }
   local kind = kinds[mode] or "charge-"
   prefix = kind .. (args[2] or tostring(os.time())) .. "-"
   if mode == "replay" then
      wrk.headers["Idempotency-Key"] = prefix .. "replayed"
   elseif mode == "floor" then
      wrk.headers["Idempotency-Key"] = "floor-replayed"
   end
end

function request()
   if mode == "first" or mode == "forget" or mode == "vacant" or mode == "roomy" then
      counter = counter + 1
      wrk.headers["Idempotency-Key"] = prefix .. counter
   end
   return wrk.format()
end
