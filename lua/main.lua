-- The moonbeat command line. host/main.c calls the function this module
-- returns with the arguments; its result is the exit code.

local core = require "moonbeat.core"
local duration = require "mb.duration"

local VERSION = "0.1.0"

local USAGE = [[
usage: moonbeat <command> [options]

Commands:
  run [DIR]        schedule the jobs in DIR (default: jobs/)
  repl [DIR]       the same, with an interactive Lua prompt
  attach           that prompt inside a running scheduler
  ls | pause ID | resume ID | trigger ID | rm ID | history [ID] | status
    | reload       control a running scheduler over its socket (see
                   `moonbeat help ls` and the README)
  check DIR        load the jobs in DIR without running them; report
                   every error and each job's next fire times
  next EXPR        the next fire times of a cron expression
  lua FILE [ARG..] run a Lua script with moonbeat's modules (the test
                   suite runs busted this way)
  version          print the version
  help [COMMAND]   show this help, or a command's

Run `moonbeat run --help` for the scheduler's options.
]]

local RUN_USAGE = [[
usage: moonbeat run [DIR] [options]

Loads every *.lua file in DIR (default: jobs/) in sorted order, each in
an environment of its own, and runs the jobs they declare with
scheduler.add_job{...}. A file that fails to load is reported with its
file and line; the others load and run. Files that change are reloaded
(see the README); SIGHUP rescans DIR. Ctrl-C (SIGINT) or SIGTERM stops
the scheduler.

Options:
  --log-format FORMAT  text (default; for people) or json (one JSON
                       object per line, for machines)
  --log-level LEVEL    debug, info (default), warn or error
  --timezone ZONE      zone for triggers that name none: an IANA name
                       such as Europe/Berlin, UTC, or local (default:
                       the machine's zone)
  --shutdown-timeout D how long SIGINT/SIGTERM lets runs in flight
                       finish before cancelling them (default 30s); a
                       second signal exits at once
  --memory-limit SIZE  Lua memory all job code may use together, such
                       as 512MiB or 2GiB (default 1GiB; 0: no limit)
  --db PATH            the sqlite store of job state and run history
                       (default moonbeat.db; :memory: keeps nothing)
  --keep-runs N        runs of history kept per job (default 1000)
  --keep-for D         history younger than D is kept (default 30d)
  --socket PATH        the control socket (default:
                       $XDG_RUNTIME_DIR/moonbeat/moonbeat.sock, else
                       /tmp/moonbeat-UID/moonbeat.sock)
  --no-watch           do not reload files as they change (SIGHUP still
                       rescans DIR)

Job defaults (a job's own field wins; see the README):
  --timeout D          stop a run after D (default: none)
  --max-instances N    concurrent runs of one job (default 1)
  --overlap POLICY     a fire beyond max-instances: skip (default),
                       buffer_one, buffer_all, cancel_other, allow_all
  --misfire-grace-time D
                       a fire later than D is recorded as missed, not
                       run (default: no limit)
  --no-coalesce        run every overdue fire, not once for all
  --retries N          tries in all for a failing run (default 1)

D is a duration: seconds, or a string such as 90s, 5m, 1h30m.
  -h, --help           show this help
]]

local function fail(msg, code)
  io.stderr:write("moonbeat: ", msg, "\n")
  return code or 2
end

-- Split args into positionals and --options (with values).
local function parse(args, takes_value)
  local opts, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      opts.help = true
    elseif a:match("^%-%-") then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      if takes_value[name] == nil then
        return nil, ("unknown option --%s"):format(name)
      end
      if takes_value[name] == false then
        value = true
      elseif not value then
        i = i + 1
        value = args[i]
        if not value then
          return nil, ("option --%s needs a value"):format(name)
        end
      end
      opts[name] = value
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return opts, rest
end

local SIZE_UNITS = {
  [""] = 1, b = 1, k = 1000, kb = 1000, m = 1e6, mb = 1e6, g = 1e9, gb = 1e9,
  kib = 1024, mib = 1024 ^ 2, gib = 1024 ^ 3,
}

-- "512MiB", "2GiB", "1e9", "0" -> bytes.
local function parse_size(text)
  local number, unit = tostring(text):lower():match("^%s*([%d.]+)%s*(%a*)%s*$")
  local size = number and SIZE_UNITS[unit]
  if not size or not tonumber(number) then
    return nil, ("'%s' is not a size (such as 512MiB or 2GiB)"):format(text)
  end
  return math.floor(tonumber(number) * size)
end

-- The job defaults the command-line flags ask for, as configure takes
-- them (validated there, with the flag named on error).
local function job_defaults(opts)
  local d = {}
  local function as_number(flag, key)
    local v = opts[flag]
    if v == nil then return true end
    local n = math.tointeger(tonumber(v))
    if not n then
      return nil, ("--%s: expected a whole number, got '%s'"):format(flag, v)
    end
    d[key] = n
    return true
  end
  local ok, err = as_number("max-instances", "max_instances")
  if not ok then return nil, err end
  if opts.retries then
    local n = math.tointeger(tonumber(opts.retries))
    if not n then
      return nil, ("--retries: expected a whole number, got '%s'"):format(
        opts.retries)
    end
    d.retry = { attempts = n }
  end
  d.timeout = opts.timeout
  d.overlap = opts.overlap
  d.misfire_grace_time = opts["misfire-grace-time"]
  if opts["no-coalesce"] then d.coalesce = false end
  return d
end

-- `run`, or `repl` (mode "repl": the same flags, then the prompt).
local function cmd_run(args, mode)
  local opts, rest = parse(args, {
    ["log-format"] = true, ["log-level"] = true, timezone = true,
    ["shutdown-timeout"] = true, ["memory-limit"] = true, timeout = true,
    ["max-instances"] = true, overlap = true, ["misfire-grace-time"] = true,
    ["no-coalesce"] = false, retries = true, db = true,
    ["keep-runs"] = true, ["keep-for"] = true, socket = true,
    ["no-watch"] = false,
  })
  local usage = mode == "repl" and require("mb.cli_repl").USAGE or RUN_USAGE
  if not opts then return fail(rest .. "\n" .. usage) end
  if opts.help then
    io.stdout:write(usage)
    return 0
  end
  if #rest > 1 then return fail((mode or "run") .. " takes one directory\n" .. usage) end
  local format = opts["log-format"] or "text"
  if format ~= "text" and format ~= "json" then
    return fail(("--log-format: expected text or json, got '%s'"):format(format))
  end
  local level = opts["log-level"] or "info"
  if not ({ debug = 1, info = 1, warn = 1, error = 1 })[level] then
    return fail(("--log-level: expected debug, info, warn or error, got '%s'")
      :format(level))
  end
  core.configure_log { format = format, level = level }

  local dir = rest[1] or "jobs/"
  local zone = opts.timezone
  if zone then
    local ok, err = core.timezone_ok(zone)
    if not ok then return fail("--timezone: " .. err) end
  end
  local defaults, err = job_defaults(opts)
  if not defaults then return fail(err) end
  local shutdown_timeout
  if opts["shutdown-timeout"] then
    shutdown_timeout, err = duration.parse(opts["shutdown-timeout"])
    if not shutdown_timeout then return fail("--shutdown-timeout: " .. err) end
  end
  if opts["memory-limit"] then
    local bytes
    bytes, err = parse_size(opts["memory-limit"])
    if not bytes then return fail("--memory-limit: " .. err) end
    core.set_memory_limit(bytes)
  end

  local d, derr, code = require("mb.daemon").open(dir, {
    zone = zone, db = opts.db, job_defaults = defaults,
    keep_runs = opts["keep-runs"], keep_for = opts["keep-for"],
    watch = not opts["no-watch"],
  })
  if not d then return fail(derr, code) end
  if mode == "repl" then
    return require("mb.cli_repl").serve(d, { shutdown_timeout = shutdown_timeout,
      socket = opts.socket, log_format = format, log_level = level })
  end
  local served, serr, scode = require("mb.daemon").serve(d, {
    shutdown_timeout = shutdown_timeout, socket = opts.socket })
  if not served then return fail(serr, scode) end
  return 0
end

local NEXT_USAGE = [[
usage: moonbeat next EXPR [--tz ZONE] [-n N] [--from TIME]

Prints the next N fire times of the cron expression EXPR (a crontab
string of 5, 6 or 7 fields, or a macro such as @daily), each with its
UTC offset and how far away it is. An error in EXPR is shown with a
caret under the field that is wrong.

Options:
  --tz ZONE     the zone the fields are read in: an IANA name such as
                Europe/Berlin, UTC, or local (default: the machine's)
  -n N          how many fire times (default 5)
  --from TIME   start from TIME (ISO 8601, read in ZONE; default now)
  -h, --help    show this help
]]

local function cmd_next(args)
  -- "-n 3" is the one short option; make it a long one for parse().
  for i, a in ipairs(args) do
    if a == "-n" then args[i] = "--n" end
  end
  local opts, rest = parse(args, { tz = true, timezone = true, n = true,
    from = true })
  if not opts then return fail(rest .. "\n" .. NEXT_USAGE) end
  if opts.help then
    io.stdout:write(NEXT_USAGE)
    return 0
  end
  if #rest ~= 1 then
    return fail("next takes one expression (quote it)\n" .. NEXT_USAGE)
  end
  local n = 5
  if opts.n then
    n = math.tointeger(tonumber(opts.n))
    if not n or n < 1 or n > 10000 then
      return fail(("-n: expected a count from 1 to 10000, got '%s'"):format(opts.n))
    end
  end
  local zone = opts.tz or opts.timezone or "local"
  local from
  if opts.from then
    local ok, err = core.timezone_ok(zone)
    if not ok then return fail(err) end
    from, err = core.parse_time(opts.from, zone)
    if not from then return fail("--from: " .. err) end
  end
  local lines, errors = require("mb.next").preview(rest[1],
    { zone = zone, n = n, from = from })
  if not lines then
    io.stderr:write("moonbeat: ", table.concat(errors, "\n"), "\n")
    return 1
  end
  io.stdout:write(table.concat(lines, "\n"), "\n")
  return 0
end

local function cmd_lua(args)
  local script = args[1]
  if not script then return fail("lua needs a script file") end
  local script_args = { [0] = script }
  for i = 2, #args do script_args[i - 1] = args[i] end
  _G.arg = script_args
  local chunk, err = loadfile(script)
  if not chunk then return fail(err) end
  local result = chunk(table.unpack(script_args))
  return math.type(result) == "integer" and result or 0
end

return function(args)
  local command = args[1]
  local rest = table.move(args, 2, #args, 1, {})
  if command == "run" then return cmd_run(rest) end
  if command == "repl" then return cmd_run(rest, "repl") end
  if command == "attach" then return require("mb.cli_repl").attach(rest) end
  if command == "lua" then return cmd_lua(rest) end
  if command == "next" then return cmd_next(rest) end
  local cli_control = require "mb.cli_control"
  if cli_control.commands[command] then return cli_control.run(command, rest) end
  if command == "check" then return require("mb.cli_check")(rest) end
  if command == "version" or command == "--version" then
    io.stdout:write("moonbeat ", VERSION, "\n")
    return 0
  end
  if command == nil or command == "help" or command == "--help"
    or command == "-h" then
    if rest[1] == "run" then
      io.stdout:write(RUN_USAGE)
    elseif rest[1] == "repl" then
      io.stdout:write(require("mb.cli_repl").USAGE)
    elseif rest[1] == "attach" then
      io.stdout:write(require("mb.cli_repl").ATTACH_USAGE)
    elseif rest[1] == "next" then
      io.stdout:write(NEXT_USAGE)
    elseif require("mb.cli_control").commands[rest[1]] then
      io.stdout:write(require("mb.cli_control").usage(rest[1]))
    elseif rest[1] == "check" then
      return require("mb.cli_check")({ "--help" })
    else
      io.stdout:write(USAGE)
    end
    return command == nil and 2 or 0
  end
  return fail(("unknown command '%s'\n"):format(command) .. USAGE)
end
