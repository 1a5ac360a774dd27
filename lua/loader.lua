-- Loading job files, as a staged upsert by job id.
--
-- Staging runs a file in an environment of its own (a global set in one
-- file is not seen by another) whose `scheduler.add_job` validates each
-- job and collects it instead of adding it. Only when the whole file
-- has run and every job validated is anything applied; a file that
-- fails changes nothing, and its previous jobs keep running.
--
-- Applying compares each job with what its file declared last time: a
-- new id is added, an id the file no longer declares is removed, a job
-- whose declaration changed is updated in place (its history, counters,
-- ctx.state and pause are kept, and its next fire too unless its trigger
-- changed), and an unchanged one is left alone. A run in flight finishes
-- under the code it started with. One id declared by two files is an
-- error for the second, naming both; replace_existing = true lets a
-- file take a job over from another file or from run time.

local core = require "moonbeat.core"
local fingerprint = require "mb.fingerprint"
local scheduler = require "mb.scheduler"
local state_codec = require "mb.state"

local M = {}

-- CPU seconds a file's top level may take: an endless loop in a job file
-- must not hang the scheduler.
M.CPU_LIMIT = 10

-- Per scheduler: what each file declared at its last good load,
-- declared[path] = { ids = { id... }, jobs = { [id] = entry } }, entry
-- = { id, line, fp, trigger_fp, paused, trigger (as written) }.
local declared_of = setmetatable({}, { __mode = "k" })

local function declared(sched)
  local d = declared_of[sched]
  if not d then
    d = {}
    declared_of[sched] = d
  end
  return d
end

-- Per scheduler: the lib/ modules each file's environments have read,
-- deps[path] = { ["lib/csv.lua"] = true... }. One set per file, shared
-- by all its loads: a job a reload left unchanged keeps running in the
-- environment of an earlier load, and what its runs require counts too.
local deps_of = setmetatable({}, { __mode = "k" })

local function deps_for(sched, path)
  local all = deps_of[sched]
  if not all then
    all = {}
    deps_of[sched] = all
  end
  all[path] = all[path] or {}
  return all[path]
end

-- Per scheduler: the job directory, whose lib/ job files require from.
local root_of = setmetatable({}, { __mode = "k" })

-- Name dir as sched's job directory (its lib/ holds the modules job
-- files require). Without one, a file's own directory serves.
function M.set_root(sched, dir)
  root_of[sched] = dir
end

-- The files the scheduler has loaded jobs from, sorted.
function M.files(sched)
  local list = {}
  for path in pairs(declared(sched)) do list[#list + 1] = path end
  table.sort(list)
  return list
end

-- The loaded files that have read a module from lib/ among mods (paths
-- relative to the job directory: "lib/csv.lua"; one ending in "/"
-- stands for every module under it), directly or through another
-- module, loading or running, sorted.
function M.dependents(sched, mods)
  local list = {}
  local function uses(deps)
    for dep in pairs(deps) do
      for _, mod in ipairs(mods) do
        if dep == mod or (mod:sub(-1) == "/" and dep:sub(1, #mod) == mod) then
          return true
        end
      end
    end
    return false
  end
  for path in pairs(declared(sched)) do
    if uses(deps_for(sched, path)) then list[#list + 1] = path end
  end
  table.sort(list)
  return list
end

-- What path declared at its last good load: a list of entries (see
-- above), in the file's order; nil when it never loaded.
function M.declarations(sched, path)
  local d = declared(sched)[path]
  if not d then return nil end
  local list = {}
  for i, id in ipairs(d.ids) do list[i] = d.jobs[id] end
  return list
end

local function first_line(text)
  return (tostring(text):match("^[^\n]*"))
end

-- Lua shortens long chunk names in messages ("...end/of/path.lua:3:");
-- give such a position its whole path back.
local function whole_path(msg, path)
  local pos, rest = msg:match("^(%.%.%.[^\n]-):(%d+: .*)$")
  if pos and path:sub(-(#pos - 3)) == pos:sub(4) then
    return path .. ":" .. rest
  end
  return msg
end

-- The line of path that is running now (the add_job call, maybe through
-- helpers), or nil.
local function line_in(path)
  local source = "@" .. path
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then return nil end
    if info.source == source then return info.currentline end
  end
  return nil
end

local function position(path, line)
  return line and ("%s:%d: "):format(path, line) or (path .. ": ")
end

-- Run chunk under a CPU guard; returns true, or nil, message, traceback.
local function run_guarded(chunk)
  local started = os.clock()
  local hook, mask, count = debug.gethook()
  debug.sethook(function()
    if os.clock() - started > M.CPU_LIMIT then
      error(("loading took more than %g s of CPU time (an endless loop?)")
        :format(M.CPU_LIMIT), 2)
    end
  end, "", 100000)
  local trace
  local ok, err = xpcall(chunk, function(msg)
    trace = debug.traceback(nil, 2)
    return msg
  end)
  if hook then debug.sethook(hook, mask, count) else debug.sethook() end
  if ok then return true end
  return nil, type(err) == "string" and err or tostring(err), trace
end

-- Stage the file at path (or chunk text named path when source is
-- given). Returns { path, jobs = { {id, norm, line, fp, trigger_fp,
-- paused, trigger, replace}... } }, or nil, "path:line: message" and a
-- traceback.
function M.stage(sched, path, source)
  local jobs, index = {}, {}
  local env = require("mb.sandbox").env(root_of[sched]
    or path:match("^(.*)/") or ".", deps_for(sched, path))
  local trigger_fp = fingerprint.new()
  env.scheduler = scheduler.new(sched, {
    file = path,
    stage = function(norm, spec)
      local line = line_in(path)
      local earlier = index[norm.id]
      if earlier and not norm.replace_existing then
        error(position(path, line) .. ("job id '%s' already exists "
          .. "(declared in %s); pass replace_existing = true to replace it")
          :format(norm.id, path), 0)
      end
      -- The spec as written, shallow-copied: a file may reuse its table.
      local written = {}
      for k, v in pairs(spec) do
        if k ~= "replace_existing" then written[k] = v end
      end
      local job = {
        id = norm.id, norm = norm, line = line, written = written,
        trigger = spec.trigger, paused = norm.paused or false,
        replace = norm.replace_existing or false,
        -- Read now: later changes to the table are not this job's.
        trigger_fp = trigger_fp(spec.trigger),
      }
      if earlier then
        table.remove(jobs, earlier)
        for i = earlier, #jobs do index[jobs[i].id] = i end
      end
      jobs[#jobs + 1] = job
      index[job.id] = #jobs
      return norm.id
    end,
  })
  local chunk, err
  if source then
    chunk, err = load(source, "@" .. path, "t", env)
  else
    chunk, err = loadfile(path, "t", env)
  end
  local ok, trace = chunk ~= nil, nil
  if chunk then ok, err, trace = run_guarded(chunk) end
  if not ok then
    return nil, whole_path(first_line(err), path), trace
  end
  -- Functions are read once the file has run: a global or upvalue set
  -- after the add_job call is still part of the job.
  local fp = fingerprint.new(env, { scheduler = true })
  for _, job in ipairs(jobs) do
    job.written.trigger = nil
    job.fp = job.trigger_fp .. fp(job.written)
    job.written = nil
  end
  return { path = path, jobs = jobs }
end

-- Who holds id now: the job and its file (false: added at run time).
local function holder(sched, id)
  local job = sched:get_job(id)
  if not job then return nil end
  return job, job.file or false
end

local function conflict(job, path, other)
  if other then
    return position(path, job.line) .. ("job id '%s' already exists "
      .. "(declared in %s); pass replace_existing = true to replace it")
      :format(job.id, other)
  end
  return position(path, job.line) .. ("job id '%s' already exists; pass "
    .. "replace_existing = true to replace it"):format(job.id)
end

-- Decide which file gets each id. A file keeps the ids it holds and
-- still declares; then files in order claim the rest. A file that
-- loses a claim fails whole, keeps its old jobs (which may block
-- another), so claims are worked out again until nothing changes.
local function claim(sched, outcomes, failed)
  while true do
    local ok_paths = {}
    for _, o in ipairs(outcomes) do
      if not failed[o.path] and not o.error then ok_paths[o.path] = true end
    end
    local claims = {}
    for _, o in ipairs(outcomes) do
      if o.staged and ok_paths[o.path] then
        for _, job in ipairs(o.staged.jobs) do
          local _, file = holder(sched, job.id)
          if file == o.path then claims[job.id] = o.path end
        end
      end
    end
    local lost = false
    for _, o in ipairs(outcomes) do
      if o.staged and ok_paths[o.path] then
        for _, job in ipairs(o.staged.jobs) do
          local taken = claims[job.id]
          if taken ~= o.path then
            local err
            local live, file = holder(sched, job.id)
            if taken and not job.replace then
              err = conflict(job, o.path, taken)
            elseif not taken and live and not job.replace
              and not (file and ok_paths[file]) then
              err = conflict(job, o.path, file)
            end
            if err then
              failed[o.path] = err
              lost = true
              break
            end
            claims[job.id] = o.path
          end
        end
      end
      if lost then break end
    end
    if not lost then return claims, ok_paths end
  end
end

local function update(sched, live, job, before)
  local norm = job.norm
  local spec = sched:job_spec(live)
  if not before or before.trigger_fp ~= job.trigger_fp then
    sched:reschedule_job(live, norm.trigger)
  end
  sched:set_policy(live, norm.policy)
  if norm.name ~= live.name then sched:rename_job(live, norm.name) end
  local state = spec.state
  for k in pairs(spec) do spec[k] = nil end
  for k, v in pairs(norm) do spec[k] = v end
  spec.trigger, spec.state = nil, state
  local was_paused = before and before.paused or false
  if job.paused ~= was_paused then
    if job.paused then sched:pause_job(live) else sched:resume_job(live) end
  end
  sched:modified(live)
end

-- Apply a batch of outcomes: { path, staged = (from M.stage) } for a
-- file that loaded, { path, deleted = true } for one that is gone, or
-- { path, error = message, traceback = } for one that failed. Returns
-- { added = {ids}, changed = {ids}, removed = {ids}, unchanged = n,
-- failed = { [path] = message }, jobs = { [path] = {ids} } }.
-- opts.restore: give added jobs what the store kept of them (a file that
-- failed at start and is fixed since gets its jobs' history back).
-- opts.refresh: { [path] = true } for files whose jobs count as changed
-- even when their declarations did not (a lib/ module they use did).
function M.apply(sched, outcomes, opts)
  local refresh = opts and opts.refresh or {}
  table.sort(outcomes, function(a, b) return a.path < b.path end)
  local decl = declared(sched)
  local result = { added = {}, changed = {}, removed = {}, unchanged = 0,
    failed = {}, jobs = {} }
  local failed = result.failed
  for _, o in ipairs(outcomes) do
    if o.error then failed[o.path] = o.error end
  end
  local claims, ok_paths = claim(sched, outcomes, failed)

  -- What a file declared before is read before anything is recorded.
  local function before(path, id)
    local d = path and decl[path]
    return d and d.jobs[id]
  end

  for _, o in ipairs(outcomes) do
    local old = decl[o.path]
    if ok_paths[o.path] and old then
      for _, id in ipairs(old.ids) do
        local live, file = holder(sched, id)
        if live and file == o.path and not claims[id] then
          sched:remove_job(live)
          result.removed[#result.removed + 1] = id
        end
      end
    end
  end

  local records = {}
  for _, o in ipairs(outcomes) do
    if o.staged and ok_paths[o.path] then
      local record = { ids = {}, jobs = {} }
      records[o.path] = record
      local ids = {}
      for _, job in ipairs(o.staged.jobs) do
        if claims[job.id] == o.path then
          local live, file = holder(sched, job.id)
          if live then
            local was = before(file, job.id)
            if file ~= o.path then
              sched:set_job_file(live, o.path)
              -- Taken over from run time: the file keeps it now.
              if file == false then sched:set_job_spec(live, nil, false) end
            end
            if was and was.fp == job.fp and not refresh[o.path] then
              result.unchanged = result.unchanged + 1
              if file ~= o.path then sched:job_spec(live).file = o.path end
            else
              update(sched, live, job, was)
              result.changed[#result.changed + 1] = job.id
            end
          else
            local was = before(o.path, job.id)
            if was and was.fp == job.fp then
              -- Unchanged, and finished or removed since: left so.
              result.unchanged = result.unchanged + 1
            else
              job.norm.replace_existing = false
              local added, err = sched:add_job(job.norm)
              if added then
                result.added[#result.added + 1] = job.id
              else
                core.log("error", "job could not be added",
                  { job = job.id, file = o.path, error = err })
              end
            end
          end
          ids[#ids + 1] = job.id
        end
        record.ids[#record.ids + 1] = job.id
        record.jobs[job.id] = {
          id = job.id, line = job.line, fp = job.fp,
          trigger_fp = job.trigger_fp, paused = job.paused,
          trigger = job.trigger,
        }
      end
      result.jobs[o.path] = ids
    end
  end

  if opts and opts.restore and #result.added > 0 then
    local only = {}
    for _, id in ipairs(result.added) do only[id] = true end
    local ok, err = sched:restore { only = only }
    if not ok then
      core.log("error", "store state of added jobs not read", { error = err })
    end
    for id in pairs(only) do
      local job = sched:get_job(id)
      local text = job and job.saved_state
      local value = text and state_codec.deserialize(text)
      if value then sched:job_spec(job).state = value end
    end
  end

  for _, o in ipairs(outcomes) do
    if ok_paths[o.path] then
      decl[o.path] = records[o.path]
      if o.deleted and deps_of[sched] then deps_of[sched][o.path] = nil end
      if o.staged then
        core.log("info", "job file loaded",
          { file = o.path, jobs = #result.jobs[o.path] })
      elseif o.deleted then
        core.log("info", "job file gone", { file = o.path })
      end
    else
      core.log("error", "job file failed to load", {
        file = o.path, error = failed[o.path], traceback = o.traceback,
      })
    end
  end
  return result
end

-- Stage the file at path (or chunk text named path), then apply it
-- alone. Returns the list of its jobs, or nil and the error message.
function M.load(sched, path, source)
  local staged, err, trace = M.stage(sched, path, source)
  local outcome = staged and { path = path, staged = staged }
    or { path = path, error = err, traceback = trace }
  local result = M.apply(sched, { outcome })
  if result.failed[path] then return nil, result.failed[path] end
  local jobs = {}
  for _, id in ipairs(result.jobs[path]) do
    jobs[#jobs + 1] = sched:get_job(id)
  end
  return jobs
end

-- Whether the file at path can be read, and whether it is empty (being
-- written in place, most likely).
function M.file_state(path)
  local f = io.open(path, "r")
  if not f then return false, false end
  local empty = f:seek("end") == 0
  f:close()
  return true, empty
end

-- Stage each path in the sorted list and apply them as one batch: a
-- path that no longer exists counts as deleted when the scheduler has
-- loaded it before, and is skipped otherwise. opts.skip_empty: skip
-- empty files too (a file being written in place is empty for a moment,
-- and loading it then would remove its jobs); opts.restore as M.apply.
function M.apply_files(sched, paths, opts)
  local known = declared(sched)
  local outcomes, skipped = {}, {}
  for _, path in ipairs(paths) do
    local exists, empty = M.file_state(path)
    if empty and opts and opts.skip_empty then
      core.log("debug", "job file empty; left as it was", { file = path })
      skipped[path] = true
    elseif exists then
      local staged, err, trace = M.stage(sched, path)
      outcomes[#outcomes + 1] = staged and { path = path, staged = staged }
        or { path = path, error = err, traceback = trace }
    elseif known[path] then
      outcomes[#outcomes + 1] = { path = path, deleted = true }
    end
  end
  local result = M.apply(sched, outcomes, opts)
  result.skipped = skipped
  return result, #outcomes
end

-- Load every job file under dir (*.lua, subdirectories included, in
-- sorted order; hidden names and dir/lib/ left out). Returns a summary
-- {files, failed, jobs, errors = {message...}}, or nil and a message
-- when dir cannot be read.
function M.load_dir(sched, dir)
  M.set_root(sched, dir)
  local names, err = core.job_files(dir)
  if not names then return nil, err end
  local prefix = dir:sub(-1) == "/" and dir or dir .. "/"
  local paths = {}
  for i, name in ipairs(names) do paths[i] = prefix .. name end
  local result, files = M.apply_files(sched, paths)
  local summary = { files = files, failed = 0, jobs = 0, errors = {} }
  for _, path in ipairs(paths) do
    if result.failed[path] then
      summary.failed = summary.failed + 1
      summary.errors[#summary.errors + 1] = result.failed[path]
    elseif result.jobs[path] then
      summary.jobs = summary.jobs + #result.jobs[path]
    end
  end
  return summary
end

return M
