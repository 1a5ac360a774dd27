-- Job-spec validation and normalisation. Every check happens once, at
-- add_job, and a failure is one message that names the field:
--   trigger.hour: 25 is out of range 0-23
-- The caller adds the file and line.

local core = require "moonbeat.core"
local duration = require "mb.duration"

local M = {}

-- The policy fields: allowed on a job, in job_defaults and in
-- modify_job.
local POLICY_FIELDS = {
  "timeout", "retry", "max_instances", "overlap", "max_buffered",
  "misfire_grace_time", "coalesce", "keep_runs", "keep_for",
}

local JOB_FIELDS = {
  "id", "name", "trigger", "run", "args", "kwargs", "replace_existing",
  "paused", table.unpack(POLICY_FIELDS),
}

local RETRY_FIELDS = {
  "attempts", "backoff", "delay", "max_delay", "jitter", "retry_on",
}

local OVERLAPS = { "skip", "buffer_one", "buffer_all", "cancel_other",
  "allow_all" }
local BACKOFFS = { "fixed", "linear", "exponential" }

-- Seconds since the epoch that moonbeat accepts: years 1 to 9999.
local TIME_MIN, TIME_MAX = -62135596800, 253402300799

local TRIGGER_FIELDS = {
  date = { "run_date", "delay", "timezone" },
  interval = {
    "weeks", "days", "hours", "minutes", "seconds", "start_date",
    "end_date", "timezone", "jitter",
  },
  cron = {
    "year", "month", "day", "week", "day_of_week", "hour", "minute",
    "second", "start_date", "end_date", "timezone", "jitter", "dst_gap",
    "dst_repeat",
  },
}

local CRON_FIELDS = {
  "year", "month", "day", "week", "day_of_week", "hour", "minute", "second",
}

local INTERVAL_UNITS = {
  weeks = 604800, days = 86400, hours = 3600, minutes = 60, seconds = 1,
}

local function set_of(list)
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  return set
end

local JOB_FIELD_SET = set_of(JOB_FIELDS)
local TRIGGER_FIELD_SETS = {}
for kind, list in pairs(TRIGGER_FIELDS) do
  TRIGGER_FIELD_SETS[kind] = set_of(list)
end

-- Levenshtein distance, for "did you mean" on a misspelt field.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggestion(name, known)
  local best, best_d
  for _, k in ipairs(known) do
    local d = distance(name, k)
    if d <= 2 and (not best_d or d < best_d) then best, best_d = k, d end
  end
  return best and (" (did you mean '%s'?)"):format(best) or ""
end

-- The first key of t (sorted, for a stable message) not in allowed.
-- The loops that every add_job runs index their lists by number:
-- ipairs costs a C call per step, a good part of an add.
local DATE_FIELDS = { "start_date", "end_date" }
local FLAG_FIELDS = { "replace_existing", "paused" }

local function unknown_key(t, allowed, skip_array)
  local bad
  for k in next, t do
    if not allowed[k] and not (math.type(k) == "integer" and k >= 1
        and k <= skip_array) then
      -- Every add_job passes through here: no table unless one is bad.
      bad = bad or {}
      bad[#bad + 1] = tostring(k)
    end
  end
  if bad then
    table.sort(bad)
    return bad[1]
  end
end

local function describe(v)
  if type(v) == "string" then return ("'%s'"):format(v) end
  return tostring(v)
end

-- A time in a trigger table: epoch seconds or a string in zone.
local function time_value(v, zone)
  if type(v) == "number" then
    if v ~= v or v < TIME_MIN or v > TIME_MAX then
      return nil, ("%s is not a time between the years 1 and 9999"):format(v)
    end
    return v
  end
  if type(v) ~= "string" then
    return nil, ("expected a time (a string such as '2026-12-01 09:00' or "
      .. "seconds since the epoch), got %s"):format(type(v))
  end
  return core.parse_time(v, zone)
end

local function one_of(value, names)
  for i = 1, #names do
    local n = names[i]
    if value == n then return true end
  end
  return false
end

local function list_words(names)
  return table.concat(names, ", ", 1, #names - 1) .. " or " .. names[#names]
end

local function whole(v, min, max)
  return math.type(v) == "integer" and v >= min and v <= max
end

local function trigger_error(field, msg)
  if field and field:match("^%d+$") then
    return nil, ("trigger[%s]: %s"):format(field, msg)
  end
  if field then return nil, ("trigger.%s: %s"):format(field, msg) end
  return nil, "trigger: " .. msg
end

local function cron_value(v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "string" then return v end
  if type(v) == "number" then
    return nil, ("expected an integer or an expression string, got %s")
      :format(v)
  end
  return nil, ("expected an integer or an expression string, got %s")
    :format(type(v))
end

-- Normalise a trigger table (or crontab string) and build it.
-- Returns a trigger object, or nil and "trigger...: problem".
function M.trigger(sched, spec)
  if type(spec) == "string" then spec = { "cron", spec } end
  if type(spec) ~= "table" then
    return trigger_error(nil, ("expected a table such as { \"cron\", "
      .. "hour = 2 } or a crontab string, got %s"):format(type(spec)))
  end
  local kind = spec[1]
  if kind == nil then
    return trigger_error(nil, "the first element must name the kind: "
      .. "\"date\", \"interval\" or \"cron\"")
  end
  if not TRIGGER_FIELD_SETS[kind] then
    return trigger_error("1", ("unknown trigger kind %s (expected date, "
      .. "interval or cron)"):format(describe(kind)))
  end
  local crontab = kind == "cron" and spec[2]
  local bad = unknown_key(spec, TRIGGER_FIELD_SETS[kind], crontab and 2 or 1)
  if bad then
    return trigger_error(bad, ("unknown field for %s %s trigger%s")
      :format(kind == "interval" and "an" or "a", kind,
        suggestion(bad, TRIGGER_FIELDS[kind])))
  end

  local zone = spec.timezone
  if zone == nil then
    zone = sched:timezone()
  else
    if type(zone) ~= "string" then
      return trigger_error("timezone", ("expected a zone name such as "
        .. "'UTC', got %s"):format(type(zone)))
    end
    local ok, err = core.timezone_ok(zone)
    if not ok then return trigger_error("timezone", err) end
  end

  local norm = { kind = kind, timezone = spec.timezone }
  for i = 1, #DATE_FIELDS do
    local field = DATE_FIELDS[i]
    if spec[field] ~= nil then
      local t, err = time_value(spec[field], zone)
      if not t then return trigger_error(field, err) end
      norm[field] = t
    end
  end

  if kind == "date" then
    if spec.run_date ~= nil and spec.delay ~= nil then
      return trigger_error(nil, "date takes run_date or delay, not both")
    elseif spec.run_date ~= nil then
      local t, err = time_value(spec.run_date, zone)
      if not t then return trigger_error("run_date", err) end
      norm.run_date = t
    elseif spec.delay ~= nil then
      local d, err = duration.parse(spec.delay)
      if not d then return trigger_error("delay", err) end
      norm.run_date = sched:now() + d
    else
      return trigger_error(nil, "date needs run_date or delay")
    end
  elseif kind == "interval" then
    local total = 0
    for unit, size in pairs(INTERVAL_UNITS) do
      local v = spec[unit]
      if v ~= nil then
        if type(v) ~= "number" then
          return trigger_error(unit, ("expected a number, got %s")
            :format(type(v)))
        end
        if v < 0 then
          return trigger_error(unit, ("must be >= 0, got %s"):format(v))
        end
        if v ~= v or v * size > duration.MAX then
          return trigger_error(unit, ("%s is not a usable length"):format(v))
        end
        total = total + v * size
      end
    end
    if total <= 0 then
      return trigger_error(nil, "interval needs a positive length: give "
        .. "weeks, days, hours, minutes or seconds")
    end
    if total < 0.001 then
      return trigger_error(nil, ("interval of %ss is shorter than the "
        .. "shortest allowed, 1ms"):format(total))
    end
    norm.interval = total
  else
    if crontab then
      if type(crontab) ~= "string" then
        return trigger_error("2", ("expected a crontab string, got %s")
          :format(type(crontab)))
      end
      for _, f in ipairs(CRON_FIELDS) do
        if spec[f] ~= nil then
          return trigger_error(f, "cannot be combined with a crontab string")
        end
      end
      norm.crontab = crontab
    else
      norm.fields = {}
      for i = 1, #CRON_FIELDS do
        local f = CRON_FIELDS[i]
        if spec[f] ~= nil then
          local v, err = cron_value(spec[f])
          if not v then return trigger_error(f, err) end
          norm.fields[f] = v
        end
      end
      -- APScheduler would fire every second here; nobody means that.
      if next(norm.fields) == nil then
        return trigger_error(nil, "cron needs a crontab string or at least "
          .. "one field (year, month, day, week, day_of_week, hour, minute, "
          .. "second)")
      end
    end
  end

  if norm.start_date and norm.end_date and norm.end_date < norm.start_date then
    return trigger_error("end_date", ("%s is before start_date %s"):format(
      core.format_time(norm.end_date, zone),
      core.format_time(norm.start_date, zone)))
  end

  if kind == "cron" then
    if spec.dst_gap ~= nil and not one_of(spec.dst_gap, { "run", "skip" }) then
      return trigger_error("dst_gap", ("%s is not a choice (expected run or "
        .. "skip)"):format(describe(spec.dst_gap)))
    end
    if spec.dst_repeat ~= nil
      and not one_of(spec.dst_repeat, { "first", "last", "both" }) then
      return trigger_error("dst_repeat", ("%s is not a choice (expected "
        .. "first, last or both)"):format(describe(spec.dst_repeat)))
    end
    norm.dst_gap, norm.dst_repeat = spec.dst_gap, spec.dst_repeat
  end

  local jitter = 0
  if spec.jitter ~= nil then
    local d, err = duration.parse(spec.jitter)
    if not d then return trigger_error("jitter", err) end
    jitter = d
  end

  local trigger, field, err = sched:new_trigger(norm)
  if trigger then return trigger, jitter end
  if err == "can never fire" then
    local text = crontab and ("'%s'"):format(crontab) or {}
    if not crontab then
      for _, f in ipairs(CRON_FIELDS) do
        if norm.fields[f] then
          text[#text + 1] = ("%s='%s'"):format(f, norm.fields[f])
        end
      end
      text = "cron[" .. table.concat(text, ", ") .. "]"
    end
    return trigger_error(nil, text .. " can never fire")
  end
  if crontab then
    if field then err = field .. ": " .. err end
    return trigger_error(nil, ("'%s': %s"):format(crontab, err))
  end
  return trigger_error(field or nil, err)
end

local function check_args(spec, norm)
  if spec.args ~= nil then
    if type(spec.args) ~= "table" then
      return nil, ("args: expected a list, got %s"):format(type(spec.args))
    end
    local n = spec.args.n or #spec.args
    if not whole(n, 0, 250) then
      return nil, ("args.n: expected an integer from 0 to 250, got %s")
        :format(tostring(n))
    end
    norm.args = table.move(spec.args, 1, n, 1, { n = n })
  end
  if spec.kwargs ~= nil then
    if type(spec.kwargs) ~= "table" then
      return nil, ("kwargs: expected a table, got %s"):format(
        type(spec.kwargs))
    end
    norm.kwargs = spec.kwargs
  end
  return true
end

local function check_name(name)
  if type(name) ~= "string" or name == "" then
    return nil, ("name: expected a non-empty string, got %s"):format(
      type(name) == "string" and "''" or type(name))
  end
  return true
end

-- "module.function" to the function it names (module loaded with
-- require), or nil and why not.
function M.resolve_ref(ref)
  local module, name = ref:match("^([%w_.]+)%.([%a_][%w_]*)$")
  if not module then
    return nil, ("run: '%s' is not a reference such as \"module.function\"")
      :format(ref)
  end
  local ok, mod = pcall(require, module)
  if not ok then
    local why = tostring(mod):match("^[^\n]*"):gsub(":$", "")
    return nil, ("run: '%s': %s"):format(ref, why)
  end
  local fn = type(mod) == "table" and mod[name]
  if type(fn) ~= "function" then
    return nil, ("run: '%s': module '%s' has no function '%s'"):format(ref,
      module, name)
  end
  return fn
end

-- run is a function, or a "module.function" reference (resolved now);
-- returns the function and the reference (when one was given).
local function check_run(run)
  if run == nil then
    return nil, "run: required (the function the job runs)"
  end
  if type(run) == "string" then
    local fn, err = M.resolve_ref(run)
    if not fn then return nil, err end
    return fn, run
  end
  if type(run) ~= "function" then
    return nil, ("run: expected a function or a \"module.function\" "
      .. "reference, got %s"):format(type(run))
  end
  return run
end

local RETRY_SET = set_of(RETRY_FIELDS)

local function check_retry(retry, out)
  if retry == false then
    out.retry_attempts = 1
    return true
  end
  if type(retry) ~= "table" then
    return nil, ("retry: expected a table such as { attempts = 3 } or "
      .. "false, got %s"):format(type(retry))
  end
  local bad = unknown_key(retry, RETRY_SET, 0)
  if bad then
    return nil, ("retry.%s: unknown field%s"):format(bad,
      suggestion(bad, RETRY_FIELDS))
  end
  local attempts = retry.attempts or 3
  if not whole(attempts, 1, 1000) then
    return nil, ("retry.attempts: expected an integer from 1 to 1000, got %s")
      :format(describe(attempts))
  end
  -- A retry table replaces the whole retry policy.
  out.retry_delay, out.retry_max_delay, out.retry_jitter = nil, nil, nil
  out.retry_attempts = attempts
  local backoff = retry.backoff or "exponential"
  if not one_of(backoff, BACKOFFS) then
    return nil, ("retry.backoff: %s is not a backoff (expected %s)")
      :format(describe(backoff), list_words(BACKOFFS))
  end
  out.retry_backoff = backoff
  for _, f in ipairs { "delay", "max_delay" } do
    if retry[f] ~= nil then
      local d, err = duration.parse(retry[f])
      if not d then return nil, ("retry.%s: %s"):format(f, err) end
      out["retry_" .. f] = d
    end
  end
  out.retry_delay = out.retry_delay or 1
  if retry.jitter ~= nil then
    local j = retry.jitter
    if type(j) ~= "number" or not (j >= 0 and j <= 1) then
      return nil, ("retry.jitter: expected a fraction from 0 to 1, got %s")
        :format(describe(j))
    end
    out.retry_jitter = j
  end
  if retry.retry_on ~= nil and type(retry.retry_on) ~= "function" then
    return nil, ("retry.retry_on: expected a function(err), got %s")
      :format(type(retry.retry_on))
  end
  return true
end

local POLICY_CHECKS = {
  timeout = function(v, out)
    if v == false then out.timeout = 0 return true end
    local d, err = duration.parse(v)
    if not d then return nil, "timeout: " .. err end
    if d <= 0 then return nil, "timeout: must be more than 0 (or false)" end
    out.timeout = d
    return true
  end,
  retry = check_retry,
  max_instances = function(v, out)
    if not whole(v, 1, 1000000) then
      return nil, ("max_instances: expected an integer >= 1, got %s")
        :format(describe(v))
    end
    out.max_instances = v
    return true
  end,
  overlap = function(v, out)
    if not one_of(v, OVERLAPS) then
      return nil, ("overlap: %s is not a policy (expected %s)")
        :format(describe(v), list_words(OVERLAPS))
    end
    out.overlap = v
    return true
  end,
  max_buffered = function(v, out)
    if not whole(v, 1, 1000000) then
      return nil, ("max_buffered: expected an integer >= 1, got %s")
        :format(describe(v))
    end
    out.max_buffered = v
    return true
  end,
  misfire_grace_time = function(v, out)
    if v == false then out.misfire_grace_time = nil return true end
    local d, err = duration.parse(v)
    if not d then return nil, "misfire_grace_time: " .. err end
    out.misfire_grace_time = d
    return true
  end,
  keep_runs = function(v, out)
    if not whole(v, 1, 100000000) then
      return nil, ("keep_runs: expected an integer >= 1, got %s"):format(describe(v))
    end
    out.keep_runs = v
    return true
  end,
  keep_for = function(v, out)
    local d, err = duration.parse(v)
    if not d then return nil, "keep_for: " .. err end
    if d <= 0 then return nil, "keep_for: must be more than 0" end
    out.keep_for = d
    return true
  end,
  coalesce = function(v, out)
    if type(v) ~= "boolean" then
      return nil, ("coalesce: expected true or false, got %s"):format(type(v))
    end
    out.coalesce = v
    return true
  end,
}

-- Check the policy fields of t into out (a policy table for the core).
-- prefix names where t sits in messages ("" or "job_defaults.").
local function check_policy(t, out, prefix)
  for i = 1, #POLICY_FIELDS do
    local f = POLICY_FIELDS[i]
    if t[f] ~= nil then
      local ok, err = POLICY_CHECKS[f](t[f], out)
      if not ok then return nil, prefix .. err end
    end
  end
  return true
end

-- Validate scheduler.configure's job_defaults; returns the checked
-- table (the raw values, to be read again per job) or nil and message.
function M.job_defaults(defaults)
  if type(defaults) ~= "table" then
    return nil, ("job_defaults: expected a table, got %s"):format(
      type(defaults))
  end
  local bad = unknown_key(defaults, set_of(POLICY_FIELDS), 0)
  if bad then
    return nil, ("job_defaults.%s: unknown field%s"):format(bad,
      suggestion(bad, POLICY_FIELDS))
  end
  local ok, err = check_policy(defaults, {}, "job_defaults.")
  if not ok then return nil, err end
  return defaults
end

-- The policy of a spec: defaults first, the spec's own fields over them.
local function policy_of(spec, defaults, jitter)
  local policy = { jitter = jitter }
  local ok, err = check_policy(defaults or {}, policy, "job_defaults.")
  if not ok then return nil, err end
  ok, err = check_policy(spec, policy, "")
  if not ok then return nil, err end
  return policy
end

local auto_ids = 0

-- Validate an add_job table. opts.file: the declaring file, where an id
-- is required. Returns the normalised spec (with a built trigger), or
-- nil and "field: problem".
function M.job(sched, spec, opts)
  if type(spec) ~= "table" then
    return nil, ("add_job: expected a table, got %s"):format(type(spec))
  end
  local bad = unknown_key(spec, JOB_FIELD_SET, 0)
  if bad then
    return nil, ("%s: unknown field%s"):format(bad,
      suggestion(bad, JOB_FIELDS))
  end
  local norm = { file = opts.file }
  local id = spec.id
  if id == nil then
    if opts.file then
      return nil, "id: required for jobs declared in files (it is the "
        .. "job's identity across reloads and restarts)"
    end
    auto_ids = auto_ids + 1
    id = ("job-%d"):format(auto_ids)
  elseif type(id) ~= "string" or id == "" or id:find("%s") then
    return nil, ("id: expected a non-empty string without spaces, got %s")
      :format(type(id) == "string" and describe(id) or type(id))
  end
  norm.id = id
  if spec.name ~= nil then
    local ok, err = check_name(spec.name)
    if not ok then return nil, err end
  end
  norm.name = spec.name or id
  local fn, ref = check_run(spec.run)
  if not fn then return nil, ref end
  norm.run, norm.run_ref = fn, ref
  local ok, err
  ok, err = check_args(spec, norm)
  if not ok then return nil, err end
  for i = 1, #FLAG_FIELDS do
    local flag = FLAG_FIELDS[i]
    if spec[flag] ~= nil and type(spec[flag]) ~= "boolean" then
      return nil, ("%s: expected true or false, got %s"):format(flag,
        type(spec[flag]))
    end
    norm[flag] = spec[flag] or false
  end
  if spec.trigger == nil then
    return nil, "trigger: required (a table such as { \"interval\", "
      .. "minutes = 5 } or a crontab string)"
  end
  local trigger, jitter = M.trigger(sched, spec.trigger)
  if not trigger then return nil, jitter end
  norm.trigger = trigger
  norm.policy, err = policy_of(spec, opts.defaults, jitter)
  if not norm.policy then return nil, err end
  -- Kept for the runner, which asks retry.retry_on(err).
  if spec.retry ~= nil then
    norm.retry = spec.retry or nil
  else
    norm.retry = opts.defaults and opts.defaults.retry or nil
  end
  -- A slot for ctx.state, made on the first run: adding a new key to a
  -- full table then would rehash the whole spec.
  norm.state = false
  return norm
end

local CHANGE_FIELDS = { "name", "run", "args", "kwargs", "trigger",
  "next_run_time", table.unpack(POLICY_FIELDS) }
local CHANGE_SET = set_of(CHANGE_FIELDS)

-- Validate modify_job changes against the job's current spec. Returns a
-- table of checked changes (a trigger built, times as seconds,
-- next_run_time = false to pause, policy = the whole new policy when it
-- changed), or nil and "field: problem".
function M.changes(sched, changes, current)
  if type(changes) ~= "table" then
    return nil, ("changes: expected a table, got %s"):format(type(changes))
  end
  local bad = unknown_key(changes, CHANGE_SET, 0)
  if bad then
    return nil, ("%s: unknown or unchangeable field%s"):format(bad,
      suggestion(bad, CHANGE_FIELDS))
  end
  local out = {}
  local ok, err
  if changes.name ~= nil then
    ok, err = check_name(changes.name)
    if not ok then return nil, err end
    out.name = changes.name
  end
  if changes.run ~= nil then
    local fn, ref = check_run(changes.run)
    if not fn then return nil, ref end
    out.run, out.run_ref = fn, ref
  end
  ok, err = check_args(changes, out)
  if not ok then return nil, err end
  local policy = {}
  for k, v in pairs(current.policy or {}) do policy[k] = v end
  local policy_changed = false
  if changes.trigger ~= nil then
    local jitter
    out.trigger, jitter = M.trigger(sched, changes.trigger)
    if not out.trigger then return nil, jitter end
    policy.jitter = jitter
    policy_changed = true
  end
  for _, f in ipairs(POLICY_FIELDS) do
    if changes[f] ~= nil then policy_changed = true end
  end
  if policy_changed then
    ok, err = check_policy(changes, policy, "")
    if not ok then return nil, err end
    out.policy = policy
    if changes.retry ~= nil then out.retry = changes.retry end
  end
  local nrt = changes.next_run_time
  if nrt ~= nil then
    if nrt == false then
      out.next_run_time = false
    else
      local t
      t, err = time_value(nrt, sched:timezone())
      if not t then return nil, "next_run_time: " .. err end
      out.next_run_time = t
    end
  end
  return out
end

-- Event kinds a listener may ask for.
M.EVENT_KINDS = {
  "added", "removed", "modified", "paused", "resumed", "started",
  "executed", "error", "timeout", "cancelled", "missed", "skipped",
  "buffered", "retry", "retries_exhausted",
}

-- Check add_listener's kinds; returns a set, or nil and a message.
function M.event_kinds(kinds)
  if kinds == nil then return set_of(M.EVENT_KINDS) end
  if type(kinds) == "string" then kinds = { kinds } end
  if type(kinds) ~= "table" then
    return nil, ("add_listener: expected a list of event kinds, got %s")
      :format(type(kinds))
  end
  local set = {}
  for _, k in ipairs(kinds) do
    if not one_of(k, M.EVENT_KINDS) then
      return nil, ("add_listener: %s is not an event kind (expected %s)")
        :format(describe(k), list_words(M.EVENT_KINDS))
    end
    set[k] = true
  end
  return set
end

return M
