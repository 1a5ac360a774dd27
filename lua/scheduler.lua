-- The `scheduler` API that job files, the REPL and the tests use, built
-- on a moonbeat.core scheduler. Names follow APScheduler's.
--
-- Misuse (a bad spec, an unknown job id) raises an error that points at
-- the caller's line; a job file's copy also stamps its jobs with the
-- file that declared them.

local core = require "moonbeat.core"
local state_codec = require "mb.state"
local validate = require "mb.validate"

local M = {}

-- Per scheduler: job_defaults and listeners, shared by the main API and
-- every job file's copy.
local state_of = setmetatable({}, { __mode = "k" })

local function state(sched)
  local st = state_of[sched]
  if not st then
    st = { defaults = nil, listeners = {}, next_listener = 1 }
    state_of[sched] = st
  end
  return st
end

-- The data of a spec added at run time with a run reference, as text
-- the store keeps; nil and why when part of it is not plain data.
local function persistent_spec(spec)
  local keep = {}
  for k, v in pairs(spec) do
    if k ~= "replace_existing" then keep[k] = v end
  end
  local text, err = state_codec.serialize(keep)
  if not text then
    return nil, (err:gsub("^ctx%.state%.", "", 1)) .. " (a job whose run "
      .. "is a reference is kept across restarts, so its fields must be "
      .. "plain data)"
  end
  return text
end

local function dispatch(st, ev)
  -- A copy: a listener may add or remove listeners, itself included.
  for _, l in ipairs(table.move(st.listeners, 1, #st.listeners, 1, {})) do
    if l.kinds[ev.kind] then
      local ok, err = pcall(l.fn, ev)
      if not ok then
        core.log("error", "listener failed", {
          listener = l.id, event = ev.kind, job = ev.job_id,
          error = tostring(err),
        })
      end
    end
  end
end

local function job_ref(job_or_id)
  if type(job_or_id) == "string" or type(job_or_id) == "userdata" then
    return job_or_id
  end
  error(("job: expected a job id or a job object, got %s")
    :format(type(job_or_id)), 3)
end

-- Call a core method that answers (true) or (nil, message); raise the
-- message at the API caller's line. Callers must not tail-call this, or
-- the level would skip their caller.
local function checked(ok, err)
  if ok == nil then error(err, 3) end
  return ok
end

local job_methods = {
  pause = function(job) return job.scheduler.pause_job(job) end,
  resume = function(job) return job.scheduler.resume_job(job) end,
  remove = function(job) return job.scheduler.remove_job(job) end,
  modify = function(job, changes)
    return job.scheduler.modify_job(job, changes)
  end,
  reschedule = function(job, trigger)
    return job.scheduler.reschedule_job(job, trigger)
  end,
  run = function(job) return job.scheduler.run_job(job) end,
}
core.set_job_methods(job_methods)

-- The API over sched. opts.file: the job file this copy belongs to (its
-- jobs need ids and remember the file); opts.on_add(job): told of each
-- job added through this copy; opts.stage(norm, spec): when given,
-- add_job validates and hands the result to it instead of adding.
function M.new(sched, opts)
  opts = opts or {}
  local api = {}

  local st = state(sched)

  -- A plain spec added at run time skips the validator (host/job_spec.c).
  local plain = not opts.stage and not opts.file

  function api.add_job(spec)
    if plain and not st.defaults then
      local job, why = sched:add_plain(spec)
      if job then
        if opts.on_add then opts.on_add(job) end
        return job
      end
      if job == nil then error(why, 2) end
    end
    local norm, err = validate.job(sched, spec,
      { file = opts.file, defaults = st.defaults })
    if not norm then error(err, 2) end
    if opts.stage then return opts.stage(norm, spec) end
    -- A replaced job keeps its ctx.state.
    local old = norm.replace_existing and sched:get_job(norm.id)
    if old then norm.state = sched:job_spec(old).state end
    local job
    job, err = sched:add_job(norm)
    if not job then error(err, 2) end
    if not opts.file then
      -- Outside job files, a job lives across restarts only when its run
      -- is a reference the store can keep; a function stays in memory.
      local kept
      if norm.run_ref then
        kept, err = persistent_spec(spec)
        if not kept then
          sched:remove_job(job)
          error(err, 2)
        end
      end
      sched:set_job_spec(job, kept, not norm.run_ref)
      if not norm.run_ref then
        core.log("info", "job kept in memory only", { job = job.id,
          reason = "its run is a function; pass a \"module.function\" "
            .. "reference to keep it across restarts" })
      end
    end
    if opts.on_add then opts.on_add(job) end
    return job
  end

  function api.get_job(id)
    if type(id) ~= "string" then
      error(("get_job: expected a job id, got %s"):format(type(id)), 2)
    end
    return sched:get_job(id)
  end

  function api.get_jobs()
    return sched:get_jobs()
  end

  -- opts.note: why it is paused, kept with the job across restarts.
  function api.pause_job(job, how)
    local note
    if how ~= nil then
      if type(how) ~= "table" or (how.note ~= nil and type(how.note) ~= "string") then
        error("pause_job: expected { note = \"text\" } as the second argument", 2)
      end
      note = how.note
    end
    local ok = checked(sched:pause_job(job_ref(job), note))
    return ok
  end

  -- Run history, newest first: { job_id =, status =, since =, limit = }.
  function api.get_runs(filter)
    filter = filter or {}
    if type(filter) ~= "table" then
      error(("get_runs: expected a table, got %s"):format(type(filter)), 2)
    end
    for k, v in pairs(filter) do
      local want = ({ job_id = "string", status = "string", since = "number",
        limit = "number" })[k]
      if not want then
        error(("get_runs: %s: unknown filter (expected job_id, status, "
          .. "since or limit)"):format(tostring(k)), 2)
      end
      if type(v) ~= want and not (k == "since" and type(v) == "string") then
        error(("get_runs: %s: expected a %s, got %s"):format(k, want, type(v)), 2)
      end
    end
    local f = {}
    for k, v in pairs(filter) do f[k] = v end
    if type(f.since) == "string" then
      local t, err = core.parse_time(f.since, sched:timezone())
      if not t then error("get_runs: since: " .. err, 2) end
      f.since = t
    end
    local runs, err = sched:get_runs(f)
    if not runs then error(err, 2) end
    return runs
  end

  -- A stored spec whose id no file declares, checked as add_job checks
  -- it, for sched:restore to add: the normalised spec, the text to keep,
  -- whether jobs whose specs differ only in their id may reuse this
  -- check (not when the trigger depends on the moment it is made), and
  -- whether the spec names the job. Nothing when it cannot come back.
  local function revive(id, text)
    local spec = state_codec.deserialize(text)
    local norm, err = validate.job(sched, spec, { defaults = st.defaults })
    local kept
    if norm then kept, err = persistent_spec(spec) end
    if not kept then
      core.log("error", "stored job could not be added back",
        { job = id, error = tostring(err) })
      return nil
    end
    local trigger = spec.trigger
    local kind = type(trigger) == "table" and trigger[1]
    local reusable = type(trigger) == "string" or kind == "cron"
      or (kind == "date" and trigger.delay == nil)
      or (kind == "interval" and trigger.start_date ~= nil)
    return norm, kept, reusable, spec.name ~= nil
  end

  -- After the job files are loaded: take back what the store kept, in
  -- one pass over it. Jobs added at run time with a run reference come
  -- back through revive; every job gets its saved ctx.state.
  function api.restore(how)
    local args = { revive = revive, load_state = state_codec.deserialize }
    for k, v in pairs(how or {}) do args[k] = v end
    local summary, err = sched:restore(args)
    if not summary then error(err, 2) end
    return summary
  end

  function api.resume_job(job)
    local ok = checked(sched:resume_job(job_ref(job)))
    return ok
  end

  function api.remove_job(job)
    local ok = checked(sched:remove_job(job_ref(job)))
    return ok
  end

  function api.remove_all_jobs()
    sched:remove_all_jobs()
  end

  function api.run_job(job)
    local ok = checked(sched:run_job(job_ref(job)))
    return ok
  end

  function api.reschedule_job(job, trigger)
    job = job_ref(job)
    local spec = checked(sched:job_spec(job))
    local built, err = validate.trigger(sched, trigger)
    if not built then error(err, 2) end
    checked(sched:reschedule_job(job, built))
    spec.trigger = nil
    sched:modified(job)
    return api.get_job(type(job) == "string" and job or job.id)
  end

  function api.modify_job(job, changes)
    job = job_ref(job)
    local spec = checked(sched:job_spec(job))
    local ok, err = validate.changes(sched, changes, spec)
    if not ok then error("modify_job: " .. err, 2) end
    if ok.policy then
      spec.policy = ok.policy
      if ok.retry ~= nil then spec.retry = ok.retry or nil end
      sched:set_policy(job, ok.policy)
    end
    if ok.name then
      sched:rename_job(job, ok.name)
      spec.name = ok.name
    end
    if ok.run then spec.run = ok.run end
    if ok.run_ref then spec.run_ref = ok.run_ref end
    if ok.args then spec.args = ok.args end
    if ok.kwargs then spec.kwargs = ok.kwargs end
    if ok.trigger then checked(sched:reschedule_job(job, ok.trigger)) end
    if ok.next_run_time == false then
      checked(sched:pause_job(job))
    elseif ok.next_run_time then
      checked(sched:set_next_run_time(job, ok.next_run_time))
    end
    sched:modified(job)
    return api.get_job(type(job) == "string" and job or job.id)
  end

  -- Scheduler-wide settings. job_defaults apply to jobs added after.
  function api.configure(settings)
    if type(settings) ~= "table" then
      error(("configure: expected a table, got %s"):format(type(settings)), 2)
    end
    for k in pairs(settings) do
      if k ~= "job_defaults" and k ~= "keep_runs" and k ~= "keep_for" then
        error(("configure: %s: unknown setting (expected job_defaults, "
          .. "keep_runs or keep_for)"):format(tostring(k)), 2)
      end
    end
    local retention = {}
    if settings.keep_runs ~= nil then
      local n = settings.keep_runs
      if math.type(n) ~= "integer" or n < 0 then
        error(("configure: keep_runs: expected an integer >= 0 (0: keep all), "
          .. "got %s"):format(tostring(n)), 2)
      end
      retention.runs = n
    end
    if settings.keep_for ~= nil then
      local d, err = require("mb.duration").parse(settings.keep_for)
      if not d then error("configure: keep_for: " .. err, 2) end
      retention.age = d
    end
    if next(retention) then sched:set_retention(retention) end
    if settings.job_defaults ~= nil then
      local defaults, err = validate.job_defaults(settings.job_defaults)
      if not defaults then error("configure: " .. err, 2) end
      st.defaults = defaults
    end
  end

  -- Call fn(event) for events of the given kinds (all when nil).
  -- Returns a handle for remove_listener.
  function api.add_listener(fn, kinds)
    if type(fn) ~= "function" then
      error(("add_listener: expected a function, got %s"):format(type(fn)), 2)
    end
    local set, err = validate.event_kinds(kinds)
    if not set then error(err, 2) end
    local id = st.next_listener
    st.next_listener = id + 1
    st.listeners[#st.listeners + 1] = { id = id, fn = fn, kinds = set }
    if #st.listeners == 1 then
      sched:set_event_handler(function(ev) dispatch(st, ev) end)
    end
    return id
  end

  function api.remove_listener(id)
    for i, l in ipairs(st.listeners) do
      if l.id == id then
        table.remove(st.listeners, i)
        if #st.listeners == 0 then sched:set_event_handler(nil) end
        return true
      end
    end
    return false
  end

  -- Stop firing; wait (default) lets runs in flight finish within the
  -- shutdown timeout, then cancels what is left.
  function api.shutdown(how)
    if how ~= nil and type(how) ~= "table" then
      error(("shutdown: expected a table such as { wait = false }, got %s")
        :format(type(how)), 2)
    end
    sched:shutdown(how)
  end

  -- Now, on the scheduler's clock (seconds since the epoch).
  function api.now()
    return sched:now()
  end

  -- Upcoming fire times of a trigger table as a new job would see them.
  function api.preview(trigger, n, after)
    local built, err = validate.trigger(sched, trigger)
    if not built then error(err, 2) end
    return built:next_fires(n or 5, after or sched:now())
  end

  if not opts.file then
    sched:set_api(api)
    sched:set_state_codec(state_codec.serialize)
  end
  return api
end


return M
