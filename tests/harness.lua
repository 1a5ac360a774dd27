-- The specs' way to get a scheduler: in-process, on the virtual clock,
-- with the log captured instead of printed.
--
--   local h = harness.new { clock = "virtual", start = "2026-01-01T00:00:00Z" }
--   local fires = h:record("tick", { "interval", seconds = 10 })
--   h:advance("35s")           -- fires every timer due on the way
--   assert.same({ 10, 20, 30 }, fires)   -- seconds after start
--   h:close()                  -- fails on leaked runs, timers or refs

local core = require "moonbeat.core"
local duration = require "mb.duration"
local loader = require "mb.loader"
local scheduler = require "mb.scheduler"

local harness = {}
local H = {}
H.__index = H

harness.DEFAULT_START = "2026-01-01T00:00:00Z"

function harness.time(text, zone)
  return assert(core.parse_time(text, zone or "UTC"))
end

function harness.new(opts)
  opts = opts or {}
  local start = opts.start or harness.DEFAULT_START
  if type(start) == "string" then start = harness.time(start) end
  local self = setmetatable({ start = start, logs = {} }, H)
  collectgarbage()
  self.refs_before = core.live_refs()
  local err
  self.core, err = core.new {
    clock = opts.clock or "virtual", start = start,
    timezone = opts.timezone or "UTC", seed = opts.seed or 1,
    db = opts.db == nil and ":memory:" or opts.db or nil,
  }
  assert(self.core, err)
  -- memory_headroom: limit job code to what is in use now plus this.
  if opts.memory_headroom then
    local used, limit = core.memory()
    self.memory_limit = limit
    core.set_memory_limit(used + opts.memory_headroom)
  end
  self.scheduler = scheduler.new(self.core)
  core.configure_log { stream = "none", level = "debug" }
  core.set_log_sink(function(level, msg, fields)
    self.logs[#self.logs + 1] = { level = level, msg = msg, fields = fields }
  end)
  return self
end

-- Move virtual time forward by a duration ("35s", "2d", or seconds).
function H:advance(d)
  self.core:advance(duration.check(d, "advance"))
end

-- Block the loop for a duration: time passes, nothing fires until the
-- next advance, when everything that fell due fires late.
function H:stall(d)
  self.core:stall(duration.check(d, "stall"))
end

-- Let real I/O (a child process, a socket, a file request) happen while
-- virtual time stands still, until done() is true or `limit` real
-- seconds pass (default 10). Returns done()'s last result. A safety net
-- for I/O, not a way to wait for a schedule.
function H:settle(done, limit)
  local deadline = os.time() + (limit or 10)
  local result = done()
  while not result and os.time() <= deadline do
    self.core:poll(0.05)
    result = done()
  end
  return result
end

-- Run fn as a job's run (due one virtual second from now), then let
-- real I/O happen until every run has ended. Returns what fn returned,
-- packed, or nil when the run failed. extra: more job fields.
function H:in_run(fn, extra)
  self.probes = (self.probes or 0) + 1
  local id = "probe-" .. self.probes
  local out
  local spec = {
    id = id, trigger = { "date", delay = 1 },
    run = function(ctx) out = table.pack(fn(ctx)) end,
  }
  for k, v in pairs(extra or {}) do spec[k] = v end
  self.scheduler.add_job(spec)
  self:advance(1)
  -- Done when fn returned, or when its run ended without (a date job
  -- goes once its run and any retry are over).
  assert(self:settle(function()
    return out ~= nil or not self.scheduler.get_job(id)
  end), "the run did not end")
  return out
end

-- As in_run, but returns fn's results as they are and raises what fn
-- raised.
function H:call(fn, extra)
  local out = self:in_run(function(ctx) return pcall(fn, ctx) end, extra)
  assert(out, "the run ended before its code returned")
  if not out[1] then error(out[2], 0) end
  return table.unpack(out, 2, out.n)
end

-- Step the wall clock by seconds (may be negative), as NTP would.
function H:jump(seconds)
  self.core:jump(seconds)
end

-- Seconds since the harness started.
function H:elapsed()
  return self.core:now() - self.start
end

-- Add a job that records when it was scheduled to fire (seconds after
-- start) and return the list it fills.
function H:record(id, trigger, extra)
  local fires = {}
  local spec = {
    id = id,
    trigger = trigger,
    run = function(ctx) fires[#fires + 1] = ctx.scheduled_time - self.start end,
  }
  for k, v in pairs(extra or {}) do spec[k] = v end
  self.scheduler.add_job(spec)
  return fires
end

-- Load a job file from source text as if it were the file at path.
function H:load(path, source)
  return loader.load(self.core, path, source)
end

-- Listen to every event; returns the list it fills.
function H:events(kinds)
  local seen = {}
  self.scheduler.add_listener(function(ev) seen[#seen + 1] = ev end, kinds)
  return seen
end

-- Log entries whose message is msg.
function H:logged(msg)
  local found = {}
  for _, entry in ipairs(self.logs) do
    if entry.msg == msg then found[#found + 1] = entry end
  end
  return found
end

function H:stats()
  return self.core:stats()
end

-- Close the scheduler and check that it left nothing behind.
function H:close()
  if self.memory_limit then core.set_memory_limit(self.memory_limit) end
  core.set_log_sink(nil)
  self.core:close()
  self.scheduler = nil
  collectgarbage()
  collectgarbage()
  local leaked = core.live_refs() - self.refs_before
  assert(leaked == 0, ("%d registry refs leaked"):format(leaked))
end

return harness
