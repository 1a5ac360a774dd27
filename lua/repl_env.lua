-- The REPL's environment inside a scheduler process: a job file's
-- (lua/sandbox.lua), with `scheduler` (the scheduler API) and helpers
-- for experimenting, which print:
--
--   jobs()                       a table of the jobs
--   next_runs(what, n)           upcoming fires of a job (id or object),
--                                a trigger table or a crontab string
--   run_now(id)                  run a job now; its result prints when
--                                the run ends, and the prompt stays usable

local core = require "moonbeat.core"
local next_preview = require "mb.next"
local repl_eval = require "mb.repl_eval"

local M = {}

local ENDINGS = { executed = true, error = true, timeout = true,
  cancelled = true }
local RUN_EVENTS = { "started", "executed", "error", "timeout", "cancelled",
  "skipped", "missed", "buffered" }

-- A run's length as the log writes it: 250us, 1.2ms, 3.042s.
local function run_duration(seconds)
  if seconds < 0.001 then
    return ("%dus"):format(math.floor(seconds * 1e6 + 0.5))
  end
  if seconds < 1 then return ("%.1fms"):format(seconds * 1e3) end
  return ("%.3fs"):format(seconds)
end
M.run_duration = run_duration

-- Rows as columns padded to their widest cell.
local function columns(rows)
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do
      widths[i] = math.max(widths[i] or 0, utf8.len(cell) or #cell)
    end
  end
  local lines = {}
  for _, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do
      cells[i] = i < #row
        and cell .. (" "):rep(widths[i] - (utf8.len(cell) or #cell)) or cell
    end
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  return table.concat(lines, "\n") .. "\n"
end

local function job_state(job)
  if job.paused then return "paused" end
  if job.running > 0 then return ("running (%d)"):format(job.running) end
  if job.next_run_time then return "scheduled" end
  return "done"
end

local function run_counts(counts)
  local parts = {}
  for _, k in ipairs { "ok", "failed", "timed_out", "missed", "skipped",
    "cancelled" } do
    if counts[k] > 0 then parts[#parts + 1] = ("%d %s"):format(counts[k], k) end
  end
  return #parts > 0 and table.concat(parts, ", ") or "-"
end

-- The text jobs() prints.
function M.jobs_text(d)
  local zone = d.sched:timezone()
  local list = d.api.get_jobs()
  if #list == 0 then return "(no jobs)\n" end
  local rows = { { "ID", "TRIGGER", "NEXT RUN", "STATE", "LAST RUN", "RUNS" } }
  for _, job in ipairs(list) do
    local last = job.last_run
    rows[#rows + 1] = {
      job.id, job.trigger,
      job.next_run_time and core.format_time(job.next_run_time, zone) or "-",
      job_state(job),
      last and (last.status .. (last.duration
        and " " .. run_duration(last.duration) or "")) or "-",
      run_counts(job.counts),
    }
  end
  return columns(rows)
end

-- The text next_runs(what, n) prints; raises on a bad argument.
function M.next_runs_text(d, what, n)
  n = n == nil and 5 or n
  if math.type(n) ~= "integer" or n < 1 or n > 1000 then
    error(("next_runs: n: expected a count from 1 to 1000, got %s")
      :format(tostring(n)), 3)
  end
  local zone = d.sched:timezone()
  local now = d.api.now()
  local job
  if type(what) == "userdata" then
    job = what
  elseif type(what) == "string" then
    job = d.api.get_job(what)
  end
  local header, fires
  if job then
    if job.removed then
      error(("next_runs: job '%s' was removed"):format(job.id), 3)
    end
    header = ("job '%s'  %s  (%s)"):format(job.id, job.trigger, zone)
    if job.paused then return header .. "\n  (paused)\n" end
    fires = d.sched:next_fires(job, n)
  elseif type(what) == "string" or type(what) == "table" then
    local ok, result = pcall(d.api.preview, what, n)
    if not ok then error("next_runs: " .. tostring(result), 3) end
    fires = result
    if type(what) == "table" and type(what.timezone) == "string" then
      zone = what.timezone
    end
    header = ("%s  (%s)"):format(type(what) == "string" and what
      or require("mb.pretty").format(what), zone)
  else
    error(("next_runs: expected a job id, a job, a trigger table or a "
      .. "crontab string, got %s"):format(type(what)), 3)
  end
  local lines = { header }
  for _, t in ipairs(fires) do
    lines[#lines + 1] = next_preview.fire_line(t, zone, now)
  end
  if #fires == 0 then lines[#lines + 1] = "  (no fire left)" end
  return table.concat(lines, "\n") .. "\n"
end

-- How a run_now ends, in one line.
local function outcome(ev)
  local took = ev.duration and run_duration(ev.duration) or "?"
  if ev.kind == "executed" then return "success in " .. took end
  if ev.kind == "error" then
    return ("error in %s: %s"):format(took, ev.error)
  end
  if ev.kind == "timeout" then return "timed out after " .. took end
  return "cancelled" .. (ev.reason and (": " .. ev.reason) or "")
end

-- The environment over daemon d (sched, api). write(text) takes what
-- prints between evaluations. Returns env, a function that takes its
-- listener back off the scheduler, and one that counts the run_now
-- results still to come.
function M.new(d, write)
  -- What job files get (lua/sandbox.lua): jobs defined at the prompt
  -- must not block the loop either, and require finds DIR/lib modules.
  local dir = d.dir and d.dir:gsub("(.)/+$", "%1") or "."
  local env = repl_eval.new_env { write = write,
    env = require("mb.sandbox").env(dir) }
  local function say(text) repl_eval.output(env, text) end
  env.scheduler = d.api

  function env.jobs()
    say(M.jobs_text(d))
  end

  function env.next_runs(what, n)
    say(M.next_runs_text(d, what, n))
  end

  -- run_now requests waiting for their run to start or end, in order.
  local waiting, listener = {}, nil
  local function on_event(ev)
    for i, w in ipairs(waiting) do
      if w.job == ev.job_id then
        if ev.kind == "started" and not w.run then
          w.run = ev.run_id
          return
        elseif ENDINGS[ev.kind] and w.run == ev.run_id then
          table.remove(waiting, i)
          say(("run_now: job '%s' run %d: %s\n"):format(w.job, w.run,
            outcome(ev)))
          return
        elseif (ev.kind == "skipped" or ev.kind == "missed")
          and not w.run then
          table.remove(waiting, i)
          say(("run_now: job '%s': fire %s%s\n"):format(w.job, ev.kind,
            ev.reason and (" (" .. ev.reason .. ")") or ""))
          return
        end
      end
    end
  end

  function env.run_now(job)
    if type(job) ~= "string" and type(job) ~= "userdata" then
      error(("run_now: expected a job id or a job, got %s"):format(type(job)),
        2)
    end
    local ok, err = pcall(d.api.run_job, job)
    if not ok then
      error("run_now: " .. tostring(err):gsub("^.-:%d+: ", ""), 2)
    end
    if not listener then listener = d.api.add_listener(on_event, RUN_EVENTS) end
    local id = type(job) == "string" and job or job.id
    waiting[#waiting + 1] = { job = id }
    say(("run_now: job '%s' starts on the next loop turn\n"):format(id))
  end

  local function close()
    if listener then d.api.remove_listener(listener) end
    listener = nil
  end
  return env, close, function() return #waiting end
end

return M
