-- Keeping a scheduler's jobs in step with its job directory: the first
-- load, reloads of the files a watch saw change, and whole rescans
-- (SIGHUP, `moonbeat reload`). Each reload is a staged upsert by job id
-- (lua/loader.lua) and ends in a summary:
--
--   { at = epoch seconds, cause = "start" | "watch" | "SIGHUP" | "command",
--     files = files looked at, jobs = jobs they declare,
--     added = n, changed = n, removed = n, unchanged = n,
--     failed = files that failed in this reload,
--     errors = { { file =, line =, message = }... } }
--
-- errors lists every file failing now, from this reload or an earlier
-- one not yet fixed, as file_errors does ({ [file] = "file:line: message" }).

local core = require "moonbeat.core"
local loader = require "mb.loader"

local M = {}
local R = {}
R.__index = R

-- A reloader for the jobs of dir on sched (a moonbeat.core scheduler).
-- opts.on_reload(summary): told of every reload.
function M.new(sched, dir, opts)
  opts = opts or {}
  loader.set_root(sched, dir)
  return setmetatable({
    sched = sched, dir = dir,
    prefix = dir:sub(-1) == "/" and dir or dir .. "/",
    file_errors = {}, on_reload = opts.on_reload,
  }, R)
end

-- Files this reloader knows under prefix: loaded, or failing.
function R:known_under(prefix)
  local list = {}
  for _, path in ipairs(loader.files(self.sched)) do
    if path:sub(1, #prefix) == prefix then list[#list + 1] = path end
  end
  for path in pairs(self.file_errors) do
    if path:sub(1, #prefix) == prefix then list[#list + 1] = path end
  end
  return list
end

-- The job files to look at for paths relative to the directory (a
-- directory's ends in "/"): what is there now and what was there.
function R:expand(rels)
  local set, list = {}, {}
  local function add(path)
    if not set[path] then
      set[path] = true
      list[#list + 1] = path
    end
  end
  for _, rel in ipairs(rels) do
    if rel:sub(-1) == "/" then
      local under = self.prefix .. rel
      for _, name in ipairs(core.job_files(under) or {}) do
        add(under .. name)
      end
      for _, path in ipairs(self:known_under(under)) do add(path) end
    else
      add(self.prefix .. rel)
    end
  end
  table.sort(list)
  return list
end

-- A path as the directory sees it: relative, whether given so or in
-- full.
function R:relative(path)
  if path:sub(1, #self.prefix) == self.prefix then
    return path:sub(#self.prefix + 1)
  end
  return path
end

local function error_entry(path, message)
  local escaped = path:gsub("%p", "%%%0")
  local line, text = message:match("^" .. escaped .. ":(%d+): (.*)$")
  if line then
    return { file = path, line = tonumber(line), message = text }
  end
  text = message:match("^" .. escaped .. ": (.*)$")
  return { file = path, message = text or message }
end

-- Reload paths (relative to the directory, or in full; a directory's
-- ending in "/"), or rescan the whole directory when paths is nil. A
-- path under lib/ reloads the files that use the modules there (see
-- loader.dependents) and the files failing. Returns the summary, or nil
-- and a message when the directory cannot be read, or when a watch saw
-- only lib/ modules no file uses, or empty ones (then nothing changes).
function R:reload(paths, cause)
  local files, refresh
  if paths == nil then
    local names, err = core.job_files(self.dir)
    if not names then
      core.log("error", "job directory cannot be read; nothing reloaded",
        { dir = self.dir, error = err })
      return nil, err
    end
    local rels = names
    for _, path in ipairs(self:known_under(self.prefix)) do
      rels[#rels + 1] = self:relative(path)
    end
    files = self:expand(rels)
  else
    -- A module under lib/ is no job file: the files that use it are
    -- loaded again, and those failing (it may be what they lacked).
    -- A watch's paths are relative already (a job directory may itself
    -- be named lib).
    local rels, mods = {}, {}
    for _, p in ipairs(paths) do
      local rel = cause == "watch" and p or self:relative(p)
      if rel:sub(1, 4) ~= "lib/" then
        rels[#rels + 1] = rel
      elseif cause == "watch"
        and select(2, loader.file_state(self.prefix .. rel)) then
        -- Being written in place, as an empty job file is (see
        -- loader.apply_files): its content comes with the next batch.
        core.log("debug", "lib/ module empty; left as it was",
          { file = self.prefix .. rel })
      else
        mods[#mods + 1] = rel
      end
    end
    if #mods > 0 then
      -- Their jobs are replaced even when their declarations read the
      -- same: a function that requires a module as it runs, or one kept
      -- from an earlier load, would go on with the module it has.
      refresh = {}
      for _, path in ipairs(loader.dependents(self.sched, mods)) do
        rels[#rels + 1] = self:relative(path)
        refresh[path] = true
      end
      for path in pairs(self.file_errors) do
        rels[#rels + 1] = self:relative(path)
      end
    end
    if #rels == 0 and cause == "watch" then
      core.log("debug", "lib/ changed; no job file to load again",
        { paths = table.concat(paths, " ") })
      return nil, "no job file to load again"
    end
    files = self:expand(rels)
  end
  local result, looked_at = loader.apply_files(self.sched, files,
    { skip_empty = cause == "watch", restore = cause ~= "start",
      refresh = refresh })
  local jobs = 0
  for _, path in ipairs(files) do
    -- Loaded, deleted or failing: the batch says which, for each path.
    if not result.skipped[path] then
      self.file_errors[path] = result.failed[path]
    end
    if result.jobs[path] then jobs = jobs + #result.jobs[path] end
  end
  local failed = 0
  for _ in pairs(result.failed) do failed = failed + 1 end
  local errors = {}
  for path, message in pairs(self.file_errors) do
    errors[#errors + 1] = error_entry(path, message)
  end
  table.sort(errors, function(a, b) return a.file < b.file end)
  local summary = {
    at = core.now(), cause = cause or "command", files = looked_at,
    jobs = jobs, added = #result.added, changed = #result.changed,
    removed = #result.removed, unchanged = result.unchanged,
    failed = failed, errors = errors,
  }
  self.last = summary
  if summary.cause ~= "start" then
    core.log(failed > 0 and "warn" or "info", "reloaded", {
      cause = summary.cause, files = looked_at, added = summary.added,
      changed = summary.changed, removed = summary.removed,
      failed = failed,
    })
  end
  if self.on_reload then self.on_reload(summary) end
  return summary
end

-- Watch the directory and reload what changes. Returns true, or nil and
-- a message.
function R:watch()
  if self.watcher then return true end
  local watcher, err = self.sched:watch(self.dir, function(paths)
    -- A scheduler shutting down takes no new jobs.
    if self.sched:state() ~= "running" then return end
    self:reload(paths, "watch")
  end)
  if not watcher then return nil, err end
  self.watcher = watcher
  return true
end

-- Stop watching.
function R:close()
  if self.watcher then self.watcher:close() end
  self.watcher = nil
end

-- Give the daemon d (lua/daemon.lua) its reload half: d.reload(d,
-- paths_or_nil), d.last_reload and d.file_errors, and SIGHUP rescans.
function M.attach(d, reloader)
  d.reloader = reloader
  d.file_errors = reloader.file_errors
  d.last_reload = reloader.last
  reloader.on_reload = function(summary) d.last_reload = summary end
  d.reload = function(_, paths) return reloader:reload(paths, "command") end
  d.sched:set_hup_handler(function()
    if d.sched:state() ~= "running" then return end
    reloader:reload(nil, "SIGHUP")
  end)
end

return M
