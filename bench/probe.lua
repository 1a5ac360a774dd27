-- What a bench script reads of its own process: resident memory, and
-- CPU time (all threads) beside wall time.

local core = require "moonbeat.core"

local M = {}

function M.rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

function M.sample()
  return { cpu = os.clock(), wall = core.now() }
end

return M
