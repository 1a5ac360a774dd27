-- The commands that control a running scheduler over its control
-- socket: ls, pause, resume, trigger, rm, history, status, reload. Each
-- parses its arguments, sends one request (lua/control.lua), and prints
-- the answer as aligned tables for people or, with --json, as JSON.
-- Exit codes: 0 ok, 1 failure, 2 usage, 3 not found.

local control = require "mb.control"

local M = {}

local COMMON = [[
  --socket PATH  the scheduler's control socket (default:
                 $XDG_RUNTIME_DIR/moonbeat/moonbeat.sock, else
                 /tmp/moonbeat-UID/moonbeat.sock)
  --json         print the answer as JSON, for scripts
  -h, --help     show this help

Exit codes: 0 ok, 1 failure, 2 usage, 3 no such job.
]]

-- name -> { usage, positional names (optional ones in brackets), options
-- taking a value, request(positional, options) -> args, show(result) }
local SPECS = {}

-- ---- formatting ----

local function span(seconds)
  local s = math.floor(seconds)
  if s < 60 then return s .. "s" end
  if s < 3600 then return s // 60 .. "m" end
  if s < 86400 then return s // 3600 .. "h" end
  return s // 86400 .. "d"
end

-- "in 3m", "2h ago" or "now", for time t seen at now (seconds).
function M.relative(t, now)
  if t == nil then return "-" end
  local d = t - now
  if math.abs(d) < 1 then return "now" end
  if d > 0 then return "in " .. span(d) end
  return span(-d) .. " ago"
end

-- "214us", "12ms", "3.2s", "2m15s", "1h3m".
function M.duration(seconds)
  if seconds == nil then return "-" end
  if seconds < 0.001 then return ("%dus"):format(math.floor(seconds * 1e6 + 0.5)) end
  if seconds < 1 then return ("%dms"):format(math.floor(seconds * 1e3 + 0.5)) end
  if seconds < 60 then return ("%.1fs"):format(seconds) end
  local s = math.floor(seconds)
  if s < 3600 then return ("%dm%ds"):format(s // 60, s % 60) end
  if s < 86400 then return ("%dh%dm"):format(s // 3600, s % 3600 // 60) end
  return ("%dd%dh"):format(s // 86400, s % 86400 // 3600)
end

local function width(s)
  return utf8.len(s) or #s
end

-- Rows of cells as columns two spaces apart; the last is not padded.
function M.table(headers, rows)
  local all = table.move(rows, 1, #rows, 2, { headers })
  local widths = {}
  for _, row in ipairs(all) do
    for i, cell in ipairs(row) do
      widths[i] = math.max(widths[i] or 0, width(cell))
    end
  end
  local lines = {}
  for _, row in ipairs(all) do
    local cells = {}
    for i, cell in ipairs(row) do
      cells[i] = i < #row and cell .. (" "):rep(widths[i] - width(cell)) or cell
    end
    lines[#lines + 1] = (table.concat(cells, "  "):gsub("%s+$", ""))
  end
  return table.concat(lines, "\n") .. "\n"
end

local function first_line(text)
  local line = tostring(text):match("^[^\n]*")
  if width(line) > 80 then line = line:sub(1, 77) .. "..." end
  return line
end

local function reload_errors(r)
  local lines = {}
  for _, e in ipairs(type(r.errors) == "table" and r.errors or {}) do
    local text = type(e) == "table" and tostring(e.message) or tostring(e)
    if type(e) == "table" and e.file and not text:find(e.file, 1, true) then
      text = ("%s:%s: %s"):format(e.file, e.line or "?", text)
    end
    lines[#lines + 1] = text
  end
  return lines
end

local function reload_summary(r)
  return ("%d added, %d changed, %d removed, %d failed"):format(r.added or 0,
    r.changed or 0, r.removed or 0, r.failed or 0)
end

-- ---- the commands ----

local function job_state(job)
  if (job.running or 0) > 0 then return "running" end
  if job.paused then return "paused" end
  if job.next_retry_time then return "retrying" end
  if not job.next_run_time then return "done" end
  return "scheduled"
end

SPECS.ls = {
  usage = "usage: moonbeat ls [options]\n\nLists the running scheduler's jobs: "
    .. "state, next run, last run, trigger.\n",
  positional = {},
  request = function() return {} end,
  show = function(r)
    if #r.jobs == 0 then return "no jobs\n" end
    local rows, notes = {}, false
    for _, job in ipairs(r.jobs) do
      local next_run = M.relative(job.next_run_time, r.now)
      if job.next_retry_time then
        next_run = "retry " .. M.relative(job.next_retry_time, r.now)
      end
      local last = "-"
      if job.last_run then
        last = job.last_run.status .. " " .. M.relative(job.last_run.start_time, r.now)
      end
      notes = notes or job.pause_note ~= nil
      rows[#rows + 1] = { job.id, job_state(job), next_run, last, job.trigger,
        job.pause_note or "" }
    end
    local headers = { "ID", "STATE", "NEXT RUN", "LAST RUN", "TRIGGER", "NOTE" }
    if not notes then
      headers[6] = nil
      for _, row in ipairs(rows) do row[6] = nil end
    end
    return M.table(headers, rows)
  end,
}

SPECS.pause = {
  usage = "usage: moonbeat pause ID [--note TEXT] [options]\n\nStops the job "
    .. "from firing until `moonbeat resume ID`; the note says why and stays\n"
    .. "with the job (across restarts too).\n\n  --note TEXT    why it is paused\n",
  positional = { "ID" },
  options = { note = true },
  request = function(pos, opts) return { id = pos[1], note = opts.note } end,
  show = function(r)
    local note = r.job.pause_note and (" (note: " .. r.job.pause_note .. ")") or ""
    return ("paused %s%s\n"):format(r.job.id, note)
  end,
}

SPECS.resume = {
  usage = "usage: moonbeat resume ID [options]\n\nLets a paused job fire again, "
    .. "from now on.\n",
  positional = { "ID" },
  request = function(pos) return { id = pos[1] } end,
  show = function(r)
    if r.job.removed then
      return ("resumed %s; it had no fire left and was removed\n"):format(r.job.id)
    end
    return ("resumed %s; next run %s\n"):format(r.job.id,
      M.relative(r.job.next_run_time, r.now))
  end,
}

SPECS.trigger = {
  usage = "usage: moonbeat trigger ID [options]\n\nRuns the job now, once, "
    .. "outside its schedule (its next run stays as it\nwas). `moonbeat "
    .. "history ID` shows how it went.\n",
  positional = { "ID" },
  request = function(pos) return { id = pos[1] } end,
  show = function(r) return ("triggered %s: it runs now\n"):format(r.job.id) end,
}

SPECS.rm = {
  usage = "usage: moonbeat rm ID [options]\n\nRemoves the job from the running "
    .. "scheduler (runs in flight finish; its\nhistory stays). Its file "
    .. "declares it again on the next start or reload.\n",
  positional = { "ID" },
  request = function(pos) return { id = pos[1] } end,
  show = function(r) return ("removed %s\n"):format(r.id) end,
}

SPECS.history = {
  usage = "usage: moonbeat history [ID] [-n N] [--status S] [options]\n\n"
    .. "The latest runs, newest first, of every job or of job ID.\n\n"
    .. "  -n N           how many runs (default 20)\n"
    .. "  --status S     only runs that ended so: success, error, timeout,\n"
    .. "                 cancelled, missed, skipped, running, interrupted\n",
  positional = { "[ID]" },
  options = { n = true, status = true },
  request = function(pos, opts)
    local n = opts.n
    if n ~= nil then
      n = math.tointeger(tonumber(n))
      if not n then
        return nil, ("-n: expected a count, got '%s'"):format(opts.n)
      end
    end
    return { id = pos[1], n = n, status = opts.status }
  end,
  show = function(r)
    if #r.runs == 0 then return "no runs\n" end
    local rows = {}
    for _, run in ipairs(r.runs) do
      rows[#rows + 1] = { tostring(run.run_id), run.job_id, run.status,
        tostring(run.attempt), M.relative(run.start_time or run.scheduled_time, r.now),
        M.duration(run.duration), run.error and first_line(run.error) or "" }
    end
    return M.table({ "RUN", "JOB", "STATUS", "TRY", "WHEN", "DURATION", "ERROR" },
      rows)
  end,
}

SPECS.status = {
  usage = "usage: moonbeat status [options]\n\nThe running scheduler: uptime, "
    .. "jobs, runs and failures, the last reload.\n",
  positional = {},
  request = function() return {} end,
  show = function(r)
    local rows = {
      { "scheduler", ("pid %d, up %s"):format(r.pid, span(r.uptime)) },
      { "jobs", ("%d (%d paused, %d running now)"):format(r.jobs, r.paused,
        r.running) },
      { "runs", ("%d (%d failed)"):format(r.runs, r.failures) },
      { "directory", tostring(r.dir or "-") },
      { "database", tostring(r.db or "-") },
      { "socket", tostring(r.socket or "-") },
    }
    local errors = {}
    if r.last_reload then
      rows[#rows + 1] = { "last reload", ("%s: %s"):format(
        M.relative(r.last_reload.at, r.now), reload_summary(r.last_reload)) }
      for _, line in ipairs(reload_errors(r.last_reload)) do
        errors[#errors + 1] = "  " .. line
      end
    end
    local text = M.table({ "", "" }, rows):gsub("^[^\n]*\n", "")
    if #errors > 0 then text = text .. table.concat(errors, "\n") .. "\n" end
    return text
  end,
}

SPECS.reload = {
  usage = "usage: moonbeat reload [options]\n\nReloads the job files of the "
    .. "running scheduler, as SIGHUP does, and says\nwhat changed. Exits 1 "
    .. "when a file failed to load (it keeps its previous\nversion).\n",
  positional = {},
  request = function() return {} end,
  show = function(r)
    local lines = { "reloaded: " .. reload_summary(r) }
    for _, line in ipairs(reload_errors(r)) do lines[#lines + 1] = "  " .. line end
    return table.concat(lines, "\n") .. "\n"
  end,
  exit = function(r) return (r.failed or 0) > 0 and 1 or 0 end,
}

M.commands = SPECS

-- The usage text of a command.
function M.usage(name)
  return SPECS[name].usage .. "\nOptions:\n" .. COMMON
end

-- Lists the server may send empty come back from JSON as {}; written
-- out again, they are [].
local LIST_KEYS = { jobs = true, runs = true, errors = true }
local function restore_lists(v)
  if type(v) ~= "table" then return v end
  local copy = {}
  for k, x in pairs(v) do
    if LIST_KEYS[k] and type(x) == "table" and next(x) == nil then
      copy[k] = control.list(x)
    else
      copy[k] = restore_lists(x)
    end
  end
  return copy
end

local function fail(message, code)
  io.stderr:write("moonbeat: ", message, "\n")
  return code
end

-- Parse args for the command: positional arguments and options.
local function parse(name, args)
  local spec = SPECS[name]
  local takes = { socket = true, json = false, help = false }
  for k, v in pairs(spec.options or {}) do takes[k] = v end
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" then a = "--help" end
    if a == "-n" and takes.n then a = "--n" end
    local key, value = a:match("^%-%-([^=]+)=(.*)$")
    key = key or a:match("^%-%-(.+)$")
    if key then
      if takes[key] == nil then
        return nil, ("unknown option %s"):format(a:match("^[^=]*"))
      end
      if takes[key] == false then
        if value then return nil, ("option --%s takes no value"):format(key) end
        value = true
      elseif not value then
        i = i + 1
        value = args[i]
        if value == nil then
          return nil, ("option %s needs a value"):format(key == "n" and "-n" or "--" .. key)
        end
      end
      opts[key] = value
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  if opts.help then return opts, pos end
  local required, allowed = 0, #spec.positional
  for _, p in ipairs(spec.positional) do
    if not p:match("^%[") then required = required + 1 end
  end
  if #pos < required then
    return nil, ("%s needs %s"):format(name, spec.positional[#pos + 1])
  end
  if #pos > allowed then
    return nil, ("%s takes %s"):format(name, allowed == 0 and "no arguments"
      or table.concat(spec.positional, " "))
  end
  return opts, pos
end

-- Run command name with its arguments; returns the exit code.
function M.run(name, args)
  local opts, pos = parse(name, args)
  if not opts then return fail(pos .. "\n" .. M.usage(name), 2) end
  if opts.help then
    io.stdout:write(M.usage(name))
    return 0
  end
  local spec = SPECS[name]
  local request, rerr = spec.request(pos, opts)
  if not request then return fail(rerr, 2) end
  local client, cerr = control.connect(opts.socket)
  if not client then return fail(cerr, 1) end
  local result, message, code = client:call(name, request)
  client:close()
  if result == nil then return fail(message, control.EXIT[code] or 1) end
  if opts.json then
    io.stdout:write(control.encode(restore_lists(result)), "\n")
  else
    io.stdout:write(spec.show(result))
  end
  return spec.exit and spec.exit(result) or 0
end

return M
