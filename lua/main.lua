-- The moonbeat command line. host/main.c calls the function this module
-- returns with the arguments; its result is the exit code.

local core = require "moonbeat.core"

local VERSION = "0.1.0"

local USAGE = [[
usage: moonbeat <command> [options]

Commands:
  run [DIR]        schedule the jobs in DIR (default: jobs/)
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
file and line; the others load and run. Ctrl-C (SIGINT) or SIGTERM
stops the scheduler.

Options:
  --log-format FORMAT  text (default; for people) or json (one JSON
                       object per line, for machines)
  --log-level LEVEL    debug, info (default), warn or error
  --timezone ZONE      zone for triggers that name none: an IANA name
                       such as Europe/Berlin, UTC, or local (default:
                       the machine's zone)
  -h, --help           show this help
]]

local function fail(msg)
  io.stderr:write("moonbeat: ", msg, "\n")
  return 2
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
      if not takes_value[name] then
        return nil, ("unknown option --%s"):format(name)
      end
      if not value then
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

local function cmd_run(args)
  local opts, rest = parse(args, {
    ["log-format"] = true, ["log-level"] = true, timezone = true,
  })
  if not opts then return fail(rest .. "\n" .. RUN_USAGE) end
  if opts.help then
    io.stdout:write(RUN_USAGE)
    return 0
  end
  if #rest > 1 then return fail("run takes one directory\n" .. RUN_USAGE) end
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
  local sched = core.new { clock = "real", timezone = zone }
  require("mb.scheduler").new(sched)
  local summary, err = require("mb.loader").load_dir(sched, dir)
  if not summary then
    sched:close()
    return fail("cannot read the job directory " .. err)
  end
  core.log("info", "scheduler started", {
    dir = dir, files = summary.files, failed = summary.failed,
    jobs = summary.jobs,
  })
  sched:run()
  sched:close()
  core.log("info", "scheduler stopped")
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
  if command == "lua" then return cmd_lua(rest) end
  if command == "version" or command == "--version" then
    io.stdout:write("moonbeat ", VERSION, "\n")
    return 0
  end
  if command == nil or command == "help" or command == "--help"
    or command == "-h" then
    if rest[1] == "run" then
      io.stdout:write(RUN_USAGE)
    else
      io.stdout:write(USAGE)
    end
    return command == nil and 2 or 0
  end
  return fail(("unknown command '%s'\n"):format(command) .. USAGE)
end
