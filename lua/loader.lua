-- Loading job files. Each file runs in an environment of its own (a
-- global set in one file is not seen by another) with a `scheduler`
-- that stamps its jobs with the file. A file that fails to load adds no
-- jobs: what it added before the error is taken back, and the error,
-- with file and line, is logged and returned.

local core = require "moonbeat.core"
local scheduler = require "mb.scheduler"

local M = {}

local function first_line(text)
  return (tostring(text):match("^[^\n]*"))
end

-- Run chunk text (or a file when source is nil) named path. Returns the
-- list of jobs it added, or nil and the error message.
function M.load(sched, path, source)
  local added = {}
  local env = require("mb.sandbox").env(path:match("^(.*)/") or ".")
  env.scheduler = scheduler.new(sched, {
    file = path,
    on_add = function(job) added[#added + 1] = job end,
  })
  local chunk, err
  if source then
    chunk, err = load(source, "@" .. path, "t", env)
  else
    chunk, err = loadfile(path, "t", env)
  end
  local trace
  if chunk then
    local ok, e = xpcall(chunk, function(msg)
      trace = debug.traceback(nil, 2)
      return msg
    end)
    if not ok then err = e end
  end
  if err then
    for _, job in ipairs(added) do
      if not job.removed then sched:remove_job(job) end
    end
    local msg = first_line(err)
    core.log("error", "job file failed to load",
      { file = path, error = msg, traceback = trace })
    return nil, msg
  end
  core.log("info", "job file loaded", { file = path, jobs = #added })
  return added
end

-- Load every *.lua file directly in dir, in sorted order. Returns a
-- summary {files, failed, jobs, errors = {message...}}, or nil and a
-- message when dir cannot be read.
function M.load_dir(sched, dir)
  local names, err = core.listdir(dir)
  if not names then return nil, err end
  local summary = { files = 0, failed = 0, jobs = 0, errors = {} }
  local prefix = dir:sub(-1) == "/" and dir or dir .. "/"
  for _, name in ipairs(names) do
    if name:match("%.lua$") then
      summary.files = summary.files + 1
      local jobs, msg = M.load(sched, prefix .. name)
      if jobs then
        summary.jobs = summary.jobs + #jobs
      else
        summary.failed = summary.failed + 1
        summary.errors[#summary.errors + 1] = msg
      end
    end
  end
  return summary
end

return M
