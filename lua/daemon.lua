-- A scheduler process: open the store, load the job directory, restore
-- state, then serve until a signal or shutdown. `moonbeat run` is open +
-- serve; the live-operation pieces (file watching, the control socket,
-- the REPL) attach to the daemon object between the two.

local core = require "moonbeat.core"

local M = {}

-- Name the command-line flag a configure error is about, not the
-- setting it became.
local FLAGS = {
  timeout = "--timeout", max_instances = "--max-instances",
  overlap = "--overlap", misfire_grace_time = "--misfire-grace-time",
  ["retry.attempts"] = "--retries", keep_runs = "--keep-runs",
  keep_for = "--keep-for",
}

local function flag_error(err)
  local field, rest = tostring(err):match("job_defaults%.([%w_.]+): (.*)$")
  if not field then
    field, rest = tostring(err):match("configure: ([%w_]+): (.*)$")
  end
  return field and FLAGS[field] and (FLAGS[field] .. ": " .. rest)
    or tostring(err)
end

-- Open a scheduler on the real clock for the jobs in dir.
-- opts: zone, db (default moonbeat.db), job_defaults, keep_runs,
-- keep_for (as typed), watch (default true: reload files as they
-- change). Returns the daemon {sched, api, dir, db, started_at, summary,
-- restored, reload, last_reload, file_errors}, or nil, message, exit
-- code. SIGHUP and d:reload() rescan the directory (lua/reload.lua).
function M.open(dir, opts)
  -- A directory that cannot be read is reported before a store is made.
  local listed, lerr = core.listdir(dir)
  if not listed then return nil, "cannot read the job directory " .. lerr, 2 end
  local db = opts.db or "moonbeat.db"
  local sched, dberr = core.new { clock = "real", timezone = opts.zone, db = db }
  if not sched then return nil, dberr, 1 end
  local api = require("mb.scheduler").new(sched)
  local settings = { job_defaults = opts.job_defaults or {} }
  if opts.keep_runs then
    settings.keep_runs = math.tointeger(tonumber(opts.keep_runs)) or opts.keep_runs
  end
  settings.keep_for = opts.keep_for
  local ok, cerr = pcall(api.configure, settings)
  if not ok then
    sched:close()
    return nil, flag_error(cerr), 2
  end
  local reloader = require("mb.reload").new(sched, dir)
  -- Watching before the first load: a change made during it is seen.
  if opts.watch ~= false then
    local watching, werr = reloader:watch()
    if not watching then
      core.log("warn", "job directory not watched; SIGHUP reloads it",
        { dir = dir, error = werr })
    end
  end
  local summary, err = reloader:reload(nil, "start")
  if not summary then
    sched:close()
    return nil, "cannot read the job directory " .. err, 2
  end
  local restored
  ok, restored = pcall(api.restore, { keep_missing = summary.failed > 0 })
  if not ok then
    sched:close()
    return nil, restored, 1
  end
  local d = {
    sched = sched, api = api, dir = dir, db = db, started_at = core.now(),
    summary = summary, restored = restored,
  }
  require("mb.reload").attach(d, reloader)
  return d
end

-- Listen on the control socket, run the loop until a signal or
-- shutdown, then close the scheduler. opts: shutdown_timeout (seconds),
-- socket (path; default: lua/control.lua's), on_sigint() (true: SIGINT
-- was taken, do not shut down), on_stopped() (the loop has stopped, or
-- never ran; the scheduler is still open). Returns true, or nil, a
-- message and an exit code when the socket cannot be had (the scheduler
-- is then closed, having run nothing).
function M.serve(d, opts)
  opts = opts or {}
  local control = require "mb.control"
  require "mb.repl_control" -- eval and complete, for `moonbeat attach`
  local listening, lerr = control.listen(d, opts.socket)
  if not listening then
    if opts.on_stopped then opts.on_stopped() end
    d.sched:close()
    return nil, lerr, 1
  end
  -- Said once the socket is ours: a scheduler refused for a busy
  -- socket never started.
  local summary, restored = d.summary, d.restored
  core.log("info", "scheduler started", {
    dir = d.dir, files = summary.files, failed = summary.failed,
    jobs = summary.jobs, db = d.db, restored = restored.restored,
    interrupted = restored.interrupted,
  })
  d.sched:run { shutdown_timeout = opts.shutdown_timeout,
    on_sigint = opts.on_sigint }
  if opts.on_stopped then opts.on_stopped() end
  control.close(d)
  d.sched:close()
  core.log("info", "scheduler stopped")
  return true
end

return M
