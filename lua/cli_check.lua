-- `moonbeat check DIR`: load every job file the way `moonbeat run`
-- would, on a scheduler whose clock never moves and that has no store,
-- so nothing is scheduled for real or run. Every failing file is
-- reported (a file stops at its first error); every job is listed with
-- its next fire times. Exit status 1 on any error: a pre-commit or CI
-- check for a job repository.

local core = require "moonbeat.core"
local loader = require "mb.loader"
local validate = require "mb.validate"

local USAGE = [[
usage: moonbeat check DIR [--timezone ZONE] [-n N]

Loads every *.lua job file under DIR (subdirectories included, lib/
and hidden names left out) without scheduling or running anything.
Prints each job with its next N fire times, and every error with its
file and line (on stderr). Exits 1 when any file fails, 0 otherwise.

Options:
  --timezone ZONE  zone for triggers that name none (default: the
                   machine's), as `moonbeat run --timezone`
  -n N             how many fire times per job (default 3)
  -h, --help       show this help
]]

local function fail(msg, code)
  io.stderr:write("moonbeat: ", msg, "\n")
  return code or 2
end

local function parse(args)
  local opts, rest = { n = 3 }, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      opts.help = true
    elseif a == "-n" or a == "--timezone" or a == "--tz" then
      i = i + 1
      if not args[i] then return nil, ("option %s needs a value"):format(a) end
      if a == "-n" then
        local n = math.tointeger(tonumber(args[i]))
        if not n or n < 1 or n > 1000 then
          return nil, ("-n: expected a count from 1 to 1000, got '%s'")
            :format(args[i])
        end
        opts.n = n
      else
        opts.zone = args[i]
      end
    elseif a:match("^%-") then
      return nil, ("unknown option %s"):format(a)
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return opts, rest
end

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

-- The lines listing one job: id, name, trigger, then its fire times.
local function job_lines(sched, job, entry, n, from)
  local head = "  " .. job.id
  if job.name ~= job.id then head = head .. (" (%s)"):format(job.name) end
  head = head .. "  " .. job.trigger
  if job.paused then head = head .. "  paused" end
  local lines = { head }
  local zone = type(entry.trigger) == "table"
    and type(entry.trigger.timezone) == "string" and entry.trigger.timezone
    or sched:timezone()
  local trigger = validate.trigger(sched, entry.trigger)
  local fires = trigger and trigger:next_fires(n, from) or {}
  for _, t in ipairs(fires) do
    lines[#lines + 1] = "    " .. core.format_time(t, zone)
  end
  if #fires == 0 then lines[#lines + 1] = "    (no fire left)" end
  return lines
end

return function(args)
  local opts, rest = parse(args)
  if not opts then return fail(rest .. "\n" .. USAGE) end
  if opts.help then
    io.stdout:write(USAGE)
    return 0
  end
  if #rest ~= 1 then return fail("check takes one directory\n" .. USAGE) end
  local dir = rest[1]
  if opts.zone then
    local ok, err = core.timezone_ok(opts.zone)
    if not ok then return fail("--timezone: " .. err) end
  end
  local names, err = core.job_files(dir)
  if not names then return fail("cannot read the job directory " .. err) end

  -- Whole seconds: fire times of intervals print without a fraction.
  local from = math.floor(core.now())
  core.configure_log { stream = "none" }
  local sched = core.new { clock = "virtual", start = from,
    timezone = opts.zone }
  local prefix = dir:sub(-1) == "/" and dir or dir .. "/"
  local paths = {}
  for i, name in ipairs(names) do paths[i] = prefix .. name end
  loader.set_root(sched, dir)
  local result = loader.apply_files(sched, paths)

  local out = {}
  local jobs, failed = 0, 0
  for _, path in ipairs(paths) do
    local message = result.failed[path]
    if message then
      failed = failed + 1
      io.stdout:write(table.concat(out))
      out = {}
      io.stdout:flush()
      io.stderr:write(message, "\n")
    else
      local ids = result.jobs[path] or {}
      out[#out + 1] = ("%s: %s\n"):format(path, plural(#ids, "job"))
      local entries = {}
      for _, entry in ipairs(loader.declarations(sched, path) or {}) do
        entries[entry.id] = entry
      end
      for _, id in ipairs(ids) do
        local job = sched:get_job(id)
        if job then
          jobs = jobs + 1
          local lines = job_lines(sched, job, entries[id], opts.n, from)
          out[#out + 1] = table.concat(lines, "\n") .. "\n"
        end
      end
    end
  end
  sched:close()
  out[#out + 1] = ("check: %s, %s, %s\n"):format(plural(#paths, "file"),
    plural(jobs, "job"), failed == 0 and "no errors"
      or plural(failed, "file") .. " failing")
  io.stdout:write(table.concat(out))
  return failed == 0 and 0 or 1
end
