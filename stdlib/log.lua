-- moonbeat.log: log lines from anywhere in job code. Inside a run a line
-- is the run's, as with ctx.log: tagged with its job and run id and kept
-- in its log tail in the history; it also goes to the scheduler's log.
-- Outside a run (a job file being loaded) it is a scheduler line.
--
--   local log = require "moonbeat.log"
--   log.info("rows copied", { table = "orders", rows = 1200 })

local core = require "moonbeat.core.log"

local M = {}

for _, level in ipairs { "debug", "info", "warn", "error" } do
  local emit = core[level]
  M[level] = function(msg, fields)
    if type(msg) ~= "string" and type(msg) ~= "number" then
      error(("log.%s: the message must be a string, got %s")
        :format(level, type(msg)), 2)
    end
    if fields ~= nil and type(fields) ~= "table" then
      error(("log.%s: fields must be a table, got %s")
        :format(level, type(fields)), 2)
    end
    emit(msg, fields)
  end
end

return M
