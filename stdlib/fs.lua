-- moonbeat.fs: files for job code, on libuv's file requests. Inside a
-- job's run each call waits on the loop, so other jobs keep running; in
-- a job file being loaded (outside a run) it simply runs. Failures of
-- the outside world return nil, a message naming the path and the
-- error's code, as io.open does:
--
--   local text, err, code = fs.read("/etc/app.conf")
--   -- nil, "/etc/app.conf: no such file or directory", "ENOENT"
--
-- Misuse (a path that is not a string) raises. See host/fs.c.

local core = require "moonbeat.core.fs"

local M = {}

local function check_path(name, path)
  if type(path) ~= "string" then
    error(("fs.%s: path must be a string, got %s"):format(name, type(path)), 3)
  end
  if path == "" or path:find("%z") then
    error(("fs.%s: '%s' is not a path"):format(name, path), 3)
  end
end

local function check_data(name, data)
  if type(data) == "number" then return tostring(data) end
  if type(data) ~= "string" then
    error(("fs.%s: data must be a string, got %s"):format(name, type(data)), 3)
  end
  return data
end

-- The whole file as a string.
function M.read(path)
  check_path("read", path)
  return core.read(path)
end

-- Replace the file's contents atomically: the data goes to a temporary
-- file in the same directory, is flushed to disk (fsync) and renamed
-- over the file, so a reader sees the old contents or the new, never a
-- part. A file that existed keeps its permissions. Returns true.
function M.write(path, data)
  check_path("write", path)
  return core.write(path, check_data("write", data))
end

-- Add data at the end of the file, creating it if needed. Returns true.
function M.append(path, data)
  check_path("append", path)
  return core.append(path, check_data("append", data))
end

-- The names in a directory (without "." and ".."), sorted.
function M.list(path)
  check_path("list", path)
  return core.list(path)
end

-- { type, size, mode, mtime, atime, ctime }, following symbolic links;
-- type is "file", "directory", "fifo", "socket", "char", "block" or
-- "other"; times are seconds since the epoch.
function M.stat(path)
  check_path("stat", path)
  return core.stat(path)
end

-- Remove a file or an empty directory. Returns true.
function M.remove(path)
  check_path("remove", path)
  return core.remove(path)
end

-- Make a directory and the parents it needs (mkdir -p); a directory
-- that exists already is fine. Returns true.
function M.mkdir(path)
  check_path("mkdir", path)
  return core.mkdir(path)
end

return M
