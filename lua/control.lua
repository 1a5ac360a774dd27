-- The control protocol: how a running scheduler is asked to do things,
-- over its control socket, by `moonbeat ls`, `pause`, ..., `attach`, and
-- later by the HTTP API. One JSON object per line each way:
--
--   {"id": 1, "cmd": "pause", "args": {"id": "backup", "note": "disk"}}
--   {"id": 1, "ok": true, "result": {...}}
--   {"id": 1, "ok": false, "error": "no job with id 'x'", "code": "not_found"}
--
-- codes: "usage" (a bad request), "not_found", "failed". The commands
-- are the table M.commands, which other modules extend:
--
--   require("mb.control").commands.name = function(d, args, session)
--     return result            -- any JSON value
--     -- or: return nil, "message", "usage" | "not_found" | "failed"
--   end
--
-- d is the daemon (lua/daemon.lua); args the request's args object ({}
-- when absent; JSON null arrives as json.null); session a table kept
-- per connected client ({client = n}; session.on_close(session), when
-- set, is called once the client has gone). Commands use only the
-- public scheduler API (d.api), so any front end can serve them.
--
-- The client end, for command-line processes (it blocks):
--
--   local client, err = control.connect(path, timeout) -- nil: default path
--   local result, message, code = client:call("ls", {})
--   client:close()

local core = require "moonbeat.core"
local json = require "moonbeat.json"
local sock = require "mb.control_socket"

local M = {}

M.commands = {}

-- What a request line may hold, and what the command line's exit code
-- is for each answer.
M.MAX_REQUEST = 1024 * 1024
M.MAX_CLIENTS = 128
M.EXIT = { ok = 0, failed = 1, usage = 2, not_found = 3 }

-- Where a scheduler listens and a client connects when --socket says
-- nothing: a directory of the user's own.
function M.default_path()
  local runtime = os.getenv("XDG_RUNTIME_DIR")
  if runtime and runtime ~= "" then
    return runtime .. "/moonbeat/moonbeat.sock"
  end
  return ("/tmp/moonbeat-%d/moonbeat.sock"):format(sock.uid())
end

-- ---- encoding ----

-- cjson writes an empty table as {}; lists that may be empty are marked
-- and written as [] instead.
local EMPTY_LIST = "\0mb:empty-list"

local function list(t)
  if t == nil or next(t) == nil then return EMPTY_LIST end
  return t
end
M.list = list

function M.encode(value)
  local text = json.encode(value)
  return (text:gsub('"\\u0000mb:empty%-list"', "[]"))
end

local function answer(id, result)
  return M.encode { id = id, ok = true, result = result }
end

local function refusal(id, message, code)
  return M.encode { id = id, ok = false, error = message, code = code }
end

-- ---- arguments ----

local function usage(message) return nil, message, "usage" end

-- args without JSON nulls; nil and a message when it holds a key the
-- command does not take.
local function check_args(name, args, allowed)
  local plain = {}
  for k, v in pairs(args) do
    if not allowed[k] then
      local known = {}
      for key in pairs(allowed) do known[#known + 1] = key end
      table.sort(known)
      return usage(("%s: unknown argument '%s' (%s takes %s)"):format(name,
        tostring(k), name, #known > 0 and table.concat(known, ", ")
          or "no arguments"))
    end
    if v ~= json.null then plain[k] = v end
  end
  return plain
end

local function find_job(d, name, id)
  if type(id) ~= "string" or id == "" then
    return usage(name .. ": id: expected a job id (a string)")
  end
  local job = d.api.get_job(id)
  if not job then return nil, ("no job with id '%s'"):format(id), "not_found" end
  return job
end

local function optional_string(name, args, key)
  local v = args[key]
  if v ~= nil and type(v) ~= "string" then
    return usage(("%s: %s: expected a string, got %s"):format(name, key, type(v)))
  end
  return true
end

-- Run one API call; an error it raises is the answer's "failed" message.
local function attempt(fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then
    return nil, (tostring(err):gsub("^[^:\n]*:%d+: ", "")), "failed"
  end
  return true
end

-- ---- what is said about jobs and runs ----

function M.job_info(job)
  local counts = job.counts
  return {
    id = job.id, name = job.name, file = job.file, trigger = job.trigger,
    next_run_time = job.next_run_time, next_retry_time = job.next_retry_time,
    paused = job.paused, pause_note = job.pause_note, running = job.running,
    removed = job.removed or nil, counts = counts, last_run = job.last_run,
  }
end

local RUN_STATUSES = { "success", "error", "timeout", "cancelled", "missed",
  "skipped", "running", "interrupted" }

-- ---- the commands ----

local commands = M.commands

function commands.ls(d, args)
  local _, err, code = check_args("ls", args, {})
  if err then return nil, err, code end
  local jobs = {}
  for _, job in ipairs(d.api.get_jobs()) do jobs[#jobs + 1] = M.job_info(job) end
  return { now = d.api.now(), jobs = list(jobs) }
end

function commands.pause(d, args)
  local a, err, code = check_args("pause", args, { id = true, note = true })
  if not a then return nil, err, code end
  local ok
  ok, err, code = optional_string("pause", a, "note")
  if not ok then return nil, err, code end
  local job
  job, err, code = find_job(d, "pause", a.id)
  if not job then return nil, err, code end
  ok, err, code = attempt(d.api.pause_job, job, { note = a.note })
  if not ok then return nil, err, code end
  return { now = d.api.now(), job = M.job_info(job) }
end

function commands.resume(d, args)
  local a, err, code = check_args("resume", args, { id = true })
  if not a then return nil, err, code end
  local job
  job, err, code = find_job(d, "resume", a.id)
  if not job then return nil, err, code end
  local ok
  ok, err, code = attempt(d.api.resume_job, job)
  if not ok then return nil, err, code end
  return { now = d.api.now(), job = M.job_info(job) }
end

function commands.trigger(d, args)
  local a, err, code = check_args("trigger", args, { id = true })
  if not a then return nil, err, code end
  local job
  job, err, code = find_job(d, "trigger", a.id)
  if not job then return nil, err, code end
  local ok
  ok, err, code = attempt(d.api.run_job, job)
  if not ok then return nil, err, code end
  return { now = d.api.now(), job = M.job_info(job) }
end

function commands.rm(d, args)
  local a, err, code = check_args("rm", args, { id = true })
  if not a then return nil, err, code end
  local job
  job, err, code = find_job(d, "rm", a.id)
  if not job then return nil, err, code end
  local ok
  ok, err, code = attempt(d.api.remove_job, job)
  if not ok then return nil, err, code end
  return { id = a.id, removed = true }
end

function commands.history(d, args)
  local a, err, code = check_args("history", args,
    { id = true, n = true, status = true })
  if not a then return nil, err, code end
  local filter = { limit = 20 }
  if a.n ~= nil then
    if math.type(a.n) ~= "integer" or a.n < 1 or a.n > 100000 then
      return usage(("history: n: expected a count from 1 to 100000, got %s")
        :format(tostring(a.n)))
    end
    filter.limit = a.n
  end
  if a.status ~= nil then
    local known = false
    for _, s in ipairs(RUN_STATUSES) do known = known or s == a.status end
    if not known then
      return usage(("history: status: '%s' is not a run status (expected %s)")
        :format(tostring(a.status), table.concat(RUN_STATUSES, ", ")))
    end
    filter.status = a.status
  end
  if a.id ~= nil then
    if type(a.id) ~= "string" or a.id == "" then
      return usage("history: id: expected a job id (a string)")
    end
    filter.job_id = a.id
  end
  local ok, runs = pcall(d.api.get_runs, filter)
  if not ok then return nil, tostring(runs), "failed" end
  -- A removed job's history is still there; an id nobody ever had is
  -- more likely a typo than a job that never ran.
  if a.id and #runs == 0 and not d.api.get_job(a.id)
    and #d.api.get_runs { job_id = a.id, limit = 1 } == 0 then
    return nil, ("no job with id '%s'"):format(a.id), "not_found"
  end
  return { now = d.api.now(), runs = list(runs) }
end

local function copy_reload(r)
  if type(r) ~= "table" then return nil end
  local c = {}
  for k, v in pairs(r) do c[k] = v end
  if c.errors ~= nil then c.errors = list(c.errors) end
  return c
end

function commands.status(d, args)
  local _, err, code = check_args("status", args, {})
  if err then return nil, err, code end
  local now = d.api.now()
  local jobs, paused, runs, failures = d.api.get_jobs(), 0, 0, 0
  for _, job in ipairs(jobs) do
    if job.paused then paused = paused + 1 end
    local c = job.counts
    runs = runs + c.ok + c.failed + c.timed_out + c.cancelled
    failures = failures + c.failed + c.timed_out
  end
  local stats = d.sched:stats()
  local used = core.memory()
  return {
    pid = sock.pid(), dir = d.dir, db = d.db, socket = d.socket,
    started_at = d.started_at, now = now, uptime = now - d.started_at,
    jobs = #jobs, paused = paused, running = stats.runs, runs = runs,
    failures = failures, last_reload = copy_reload(d.last_reload),
    -- What is alive in the process, for leak checks.
    resources = {
      timers = stats.timers, clients = d.control and d.control:clients(),
      handles = d.control and d.control:handles(), refs = core.live_refs(),
      lua_memory = used,
    },
  }
end

function commands.reload(d, args)
  local _, err, code = check_args("reload", args, {})
  if err then return nil, err, code end
  if type(d.reload) ~= "function" then
    return nil, "this scheduler cannot reload its job files", "failed"
  end
  local ok, summary = pcall(d.reload, d)
  if not ok then return nil, "reload failed: " .. tostring(summary), "failed" end
  return copy_reload(d.last_reload or summary) or {}
end

-- ---- serving ----

-- The answer to one request line (text, without its newline). Never
-- raises: whatever goes wrong becomes an error answer.
function M.handle(d, line, session)
  local req, err = json.decode(line)
  if type(req) ~= "table" then
    return refusal(json.null, "bad request: " .. (err and err:gsub("^json%.decode: ", "")
      or "expected a JSON object"), "usage")
  end
  local id = req.id
  if id == nil then id = json.null end
  if id ~= json.null and type(id) ~= "string" and type(id) ~= "number" then
    return refusal(json.null, "bad request: id: expected a string or a number",
      "usage")
  end
  if type(req.cmd) ~= "string" then
    return refusal(id, "bad request: cmd: expected a command name", "usage")
  end
  local fn = M.commands[req.cmd]
  if not fn then
    local names = {}
    for name in pairs(M.commands) do names[#names + 1] = name end
    table.sort(names)
    return refusal(id, ("unknown command '%s' (known: %s)"):format(req.cmd,
      table.concat(names, ", ")), "usage")
  end
  local args = req.args
  if args == nil or args == json.null then args = {} end
  if type(args) ~= "table" then
    return refusal(id, "bad request: args: expected an object", "usage")
  end
  local trace
  local ok, result, message, code = xpcall(fn, function(e)
    trace = debug.traceback(nil, 2)
    return e
  end, d, args, session or {})
  if not ok then
    core.log("error", "control command failed", { command = req.cmd,
      error = tostring(result), traceback = trace })
    return refusal(id, req.cmd .. ": " .. tostring(result), "failed")
  end
  if result == nil then
    if not M.EXIT[code] or code == "ok" then code = "failed" end
    return refusal(id, message or (req.cmd .. " failed"), code)
  end
  local encoded, text = pcall(answer, id, result)
  if not encoded then
    return refusal(id, req.cmd .. ": the result cannot be sent: "
      .. tostring(text), "failed")
  end
  return text
end

-- Listen on path (default: M.default_path()) for d. Sets d.control (the
-- server) and d.socket (the path). Returns the server, or nil, message.
function M.listen(d, path)
  path = path or M.default_path()
  local sessions = {}
  local server, err = sock.listen(d.sched, path, {
    max_request = M.MAX_REQUEST,
    max_clients = M.MAX_CLIENTS,
    too_long_reply = refusal(json.null, ("request too long (more than %d bytes)")
      :format(M.MAX_REQUEST), "usage"),
    too_many_reply = refusal(json.null, ("too many clients (at most %d at once)")
      :format(M.MAX_CLIENTS), "failed"),
    on_request = function(client, line)
      local session = sessions[client]
      if not session then
        session = { client = client }
        sessions[client] = session
      end
      return M.handle(d, line, session)
    end,
    on_gone = function(client)
      local session = sessions[client]
      sessions[client] = nil
      if session and session.on_close then
        local ok, cerr = pcall(session.on_close, session)
        if not ok then
          core.log("error", "control session cleanup failed",
            { error = tostring(cerr) })
        end
      end
    end,
  })
  if not server then return nil, err end
  d.control, d.socket = server, path
  core.log("info", "control socket listening", { path = path })
  return server
end

-- Stop listening and remove the socket (before the scheduler closes).
function M.close(d)
  if d.control then
    d.control:close()
    d.control = nil
  end
end

-- ---- the client end ----

local Client = {}
Client.__index = Client

local function dial_error(path, message, code)
  if code == "ENOENT" or code == "ECONNREFUSED" then
    return ("no scheduler is listening on %s (start one with `moonbeat run`, "
      .. "or say where with --socket)"):format(path)
  end
  return ("cannot connect to %s: %s"):format(path, message)
end

-- Connect to the scheduler listening on path (default: the default
-- path). timeout: seconds for each request (nil: 30; false: no limit).
-- Returns a client, or nil and a message.
function M.connect(path, timeout)
  path = path or M.default_path()
  if timeout == nil then timeout = 30 end
  local conn, message, code = sock.dial(path, timeout or nil)
  if not conn then return nil, dial_error(path, message, code) end
  return setmetatable({ conn = conn, path = path, timeout = timeout or nil,
    last_id = 0 }, Client)
end

-- Send one request and wait for its answer. Returns the result, or nil,
-- a message and a code ("usage", "not_found", "failed").
function Client:call(cmd, args)
  if not self.conn then return nil, "the connection is closed", "failed" end
  self.last_id = self.last_id + 1
  local id = self.last_id
  local ok, message = self.conn:write(M.encode { id = id, cmd = cmd,
    args = args or {} } .. "\n", self.timeout)
  local line, code
  if ok then line, message, code = self.conn:read_line(self.timeout) end
  if not line then
    self:close()
    if code == "ETIMEDOUT" then
      message = ("the scheduler on %s did not answer within %gs"):format(
        self.path, self.timeout)
    elseif code == "EOF" or code == "EPIPE" or code == "ECONNRESET" then
      message = ("the scheduler on %s closed the connection"):format(self.path)
    end
    return nil, message, "failed"
  end
  local resp = json.decode(line)
  if type(resp) ~= "table" or resp.id ~= id then
    self:close()
    return nil, "the scheduler's answer is not understood: " .. line:sub(1, 200),
      "failed"
  end
  if resp.ok then return resp.result end
  local rcode = resp.code
  if not M.EXIT[rcode] or rcode == "ok" then rcode = "failed" end
  return nil, tostring(resp.error), rcode
end

function Client:close()
  if self.conn then
    self.conn:close()
    self.conn = nil
  end
end

return M
