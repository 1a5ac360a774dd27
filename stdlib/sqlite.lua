-- moonbeat.sqlite: sqlite databases for jobs. Statements run on
-- libuv's thread pool, one at a time per connection (host/sqlite.c),
-- so a long statement never stalls the loop; the run waits for it as
-- for any other I/O.
--
--   local db = assert(sqlite.open("app.db"))
--   db:exec("DELETE FROM tokens WHERE expires < ?", os.time())
--   local rows = db:query("SELECT id, name FROM users WHERE team = :team",
--                         { team = "ops" })
--   db:transaction(function() ... end)
--
-- Values are bound as parameters, never pasted into the SQL text. The
-- database's own failures (no such table, a constraint, busy) return
-- nil, a message and a code; mistakes in the call raise.

local core = require "moonbeat.core.sqlite"
local duration = require "mb.duration"

local M = {}
local methods = core.methods

M.DEFAULT_BUSY_TIMEOUT = 5

local OPEN_FIELDS = { readonly = "boolean", create = "boolean",
  busy_timeout = true }

-- open(path, {readonly, create, busy_timeout}) -> db, or nil, message,
-- code. create (default true) makes a missing file; busy_timeout (a
-- duration, default 5 s) is how long a statement waits for a lock
-- another connection holds.
function M.open(path, opts)
  if type(path) ~= "string" then
    error(("sqlite.open: path: expected a string, got %s"):format(type(path)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("sqlite.open: expected an options table, got %s"):format(type(opts)), 2)
  end
  opts = opts or {}
  for k, v in pairs(opts) do
    local want = OPEN_FIELDS[k]
    if not want then
      error(("sqlite.open: unknown field '%s'"):format(tostring(k)), 2)
    end
    if want ~= true and type(v) ~= want then
      error(("sqlite.open: %s: expected a %s, got %s"):format(k, want, type(v)), 2)
    end
  end
  local busy = M.DEFAULT_BUSY_TIMEOUT
  if opts.busy_timeout ~= nil then
    local seconds, err = duration.parse(opts.busy_timeout)
    if not seconds or seconds > 86400 then
      error("sqlite.open: busy_timeout: " .. (err or "longer than a day"), 2)
    end
    busy = seconds
  end
  return core.open(path, opts.readonly == true, opts.create ~= false,
    math.floor(busy * 1000 + 0.5))
end

-- Parameters as the C side takes them: a single table is the
-- parameters (a list, names, or both); anything else is a list of
-- positional values, nils included.
local function params(...)
  local n = select("#", ...)
  if n == 0 then return nil end
  if n == 1 and type((...)) == "table" then return (...), nil end
  return table.pack(...), n
end

-- Call a C method; a raise there (the caller's mistake) is raised again
-- `level` frames up from call's caller, named as what.
local function call(level, what, f, ...)
  local res = table.pack(pcall(f, ...))
  if not res[1] then
    error(what .. ": " .. tostring(res[2]):gsub("^sqlite: ", ""), level + 1)
  end
  return table.unpack(res, 2, res.n)
end

local function statement(what, kind, self, sql, ...)
  if type(sql) ~= "string" then
    error(("%s: sql: expected a string, got %s"):format(what, type(sql)), 3)
  end
  local p, n = params(...)
  local a, b, code = call(3, what, self._run, self, kind, sql, p, n)
  if a == nil and code == "misuse" then error(what .. ": " .. b, 3) end
  return a, b, code
end

-- db:exec(sql, ...) -> changes, last_insert_rowid: rows the (last)
-- statement changed. Without parameters sql may be a script of several
-- statements.
function methods:exec(sql, ...)
  local changes, rowid, code = statement("db:exec", "exec", self, sql, ...)
  return changes, rowid, code
end

-- db:query(sql, ...) -> a list of rows, each a table by column name
-- (NULL columns absent).
function methods:query(sql, ...)
  local rows, err, code = statement("db:query", "query", self, sql, ...)
  return rows, err, code
end

local Guard = {
  -- The run ended inside fn (a timeout, a cancellation): roll back
  -- without waiting, and let the database go to the next statement.
  __close = function(g)
    if g.open then
      g.open = false
      g.db:_release(true, g.token)
    end
  end,
}

-- db:transaction(fn): BEGIN IMMEDIATE, fn(db), COMMIT. Other runs'
-- statements on this db wait until it ends. If fn raises, it rolls back
-- and raises the same error; if the commit fails, it rolls back and
-- returns nil, message, code. Returns fn's results (true if none).
function methods:transaction(fn)
  local what = "db:transaction"
  if type(fn) ~= "function" then
    error(("%s: expected a function, got %s"):format(what, type(fn)), 2)
  end
  if call(2, what, self._in_transaction, self) then
    error(what .. ": already inside a transaction on this database "
      .. "(transactions do not nest)", 2)
  end
  local token = call(2, what, self._token, self)
  local guard <close> = setmetatable({ db = self, token = token, open = true }, Guard)
  local ok, err, code = self:_run("begin", "BEGIN IMMEDIATE")
  if not ok then
    guard.open = false
    self:_release(false, token)
    return nil, err, code
  end
  local res = table.pack(pcall(fn, self))
  if not res[1] then
    self:_run("exec", "ROLLBACK")
    guard.open = false
    self:_release(false, token)
    error(res[2], 0)
  end
  ok, err, code = self:_run("exec", "COMMIT")
  if not ok then
    self:_run("exec", "ROLLBACK")
  end
  guard.open = false
  self:_release(false, token)
  if not ok then return nil, err, code end
  if res.n == 1 then return true end
  return table.unpack(res, 2, res.n)
end

return M
