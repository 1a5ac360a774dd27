-- moonbeat.sqlite: statements in libuv's thread pool, waited for by
-- runs; virtual time stands still while the workers do real I/O
-- (h:settle). Files live in a temporary directory.
local harness = require "tests.harness"
local core = require "moonbeat.core"
local support = require "tests.support"
local json = require "moonbeat.json"
local sqlite = require "moonbeat.sqlite"
local sqlite_core = require "moonbeat.core.sqlite"
local time = require "moonbeat.time"

describe("moonbeat.sqlite", function()
  local h, s, dir, path, db

  before_each(function()
    h = harness.new()
    s = h.scheduler
    dir = support.tempdir()
    path = dir .. "/app.db"
    db = assert(sqlite.open(path))
  end)
  after_each(function()
    db:close()
    h:close()
    support.remove_tree(dir)
    collectgarbage()
    assert.same({ connections = 0, statements = 0 }, sqlite_core.stats())
  end)

  -- Run fn(ctx) as a job's run and return what it returned (or raise
  -- what it raised).
  local function run(fn, extra) return h:call(fn, extra) end

  local function make_table()
    run(function()
      assert(db:exec [[
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE,
                            price REAL, note TEXT, data BLOB);
        INSERT INTO items (name, price) VALUES ('apple', 1.5);
        INSERT INTO items (name, price) VALUES ('pear', 2);
      ]])
    end)
  end

  describe("statements", function()
    it("return rows as tables by column name, with NULL columns absent", function()
      make_table()
      local rows = run(function()
        return db:query("SELECT id, name, price, note FROM items ORDER BY id")
      end)
      assert.same({
        { id = 1, name = "apple", price = 1.5 },
        { id = 2, name = "pear", price = 2.0 },
      }, rows)
      assert.equal("integer", math.type(rows[1].id))
      assert.equal("float", math.type(rows[2].price))
    end)

    it("return changes and the last rowid from exec", function()
      make_table()
      local added, rowid = run(function()
        return db:exec("INSERT INTO items (name) VALUES (?)", "plum")
      end)
      assert.equal(1, added)
      assert.equal(3, rowid)
      local changed = run(function()
        return db:exec("UPDATE items SET note = ? WHERE price > ?", "dear", 1)
      end)
      assert.equal(2, changed)
      local created, _, code = run(function()
        return db:exec("CREATE TABLE other (x)")
      end)
      assert.equal(0, created)
      assert.is_nil(code)
      assert.equal(0, run(function() return db:exec("-- nothing to run") end))
    end)

    it("bind positional, named, nil, boolean and json.null values", function()
      make_table()
      local rows = run(function()
        assert(db:exec("INSERT INTO items (name, price, note) VALUES (?, ?, ?)",
          "fig", nil, true))
        assert(db:exec("INSERT INTO items (name, price, note) VALUES (:n, @p, $note)",
          { n = "kiwi", p = 0.25, note = json.null }))
        assert(db:exec("INSERT INTO items (name, note) VALUES (?2, ?1)", { "x", "lime" }))
        return db:query("SELECT name, price, note FROM items WHERE id > ? ORDER BY id", 2)
      end)
      assert.same({
        { name = "fig", note = "1" },
        { name = "kiwi", price = 0.25 },
        { name = "lime", note = "x" },
      }, rows)
    end)

    it("store a value that looks like SQL as plain text", function()
      make_table()
      local evil = "x'); DROP TABLE items; --"
      local rows = run(function()
        assert(db:exec("INSERT INTO items (name) VALUES (?)", evil))
        return db:query("SELECT count(*) AS n FROM items WHERE name = ?", evil)
      end)
      assert.equal(1, rows[1].n)
    end)

    it("keep bytes that are not text", function()
      make_table()
      local bytes = "\0\1\2\255"
      local rows = run(function()
        assert(db:exec("INSERT INTO items (name, data) VALUES ('b', ?)", bytes))
        return db:query("SELECT data, length(data) AS n FROM items WHERE name = 'b'")
      end)
      assert.equal(bytes, rows[1].data)
    end)

    it("return many rows", function()
      local rows = run(function()
        return db:query([[
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
          SELECT i FROM n]])
      end)
      assert.equal(5000, #rows)
      assert.equal(5000, rows[5000].i)
    end)
  end)

  describe("failures from the database", function()
    it("return nil, the message and 'error' for a missing table", function()
      local rows, err, code = run(function() return db:query("SELECT * FROM nope") end)
      assert.is_nil(rows)
      assert.equal("no such table: nope", err)
      assert.equal("error", code)
    end)

    it("return 'constraint' for a broken constraint", function()
      make_table()
      local n, err, code = run(function()
        return db:exec("INSERT INTO items (name) VALUES (?)", "apple")
      end)
      assert.is_nil(n)
      assert.equal("UNIQUE constraint failed: items.name", err)
      assert.equal("constraint", code)
    end)

    it("return a syntax error as an error", function()
      local n, err, code = run(function() return db:exec("SELEC 1") end)
      assert.is_nil(n)
      assert.equal('near "SELEC": syntax error', err)
      assert.equal("error", code)
    end)

    it("return 'cantopen' for a file that cannot be opened", function()
      local missing = dir .. "/no/such/dir/x.db"
      local d, err, code = sqlite.open(missing)
      assert.is_nil(d)
      assert.equal(missing .. ": unable to open database file", err)
      assert.equal("cantopen", code)
      d, err, code = sqlite.open(dir .. "/absent.db", { create = false })
      assert.is_nil(d)
      assert.equal("cantopen", code)
    end)

    it("return 'readonly' for a write to a read-only connection", function()
      make_table()
      local ro = assert(sqlite.open(path, { readonly = true }))
      local n, err, code = run(function() return ro:exec("DELETE FROM items") end)
      ro:close()
      assert.is_nil(n)
      assert.equal("attempt to write a readonly database", err)
      assert.equal("readonly", code)
    end)
  end)

  describe("misuse", function()
    it("raises for a missing parameter, naming the call", function()
      make_table()
      assert.has_error(function()
        run(function() db:exec("INSERT INTO items (name, note) VALUES (?, ?)", "a") end)
      end, "db:exec: parameter 2 has no value (1 given)")
    end)

    it("raises for too many parameters", function()
      assert.has_error(function()
        run(function() db:query("SELECT ?", 1, 2) end)
      end, "db:query: 2 values given for 1 positional parameters")
    end)

    it("raises for a missing named parameter", function()
      assert.has_error(function()
        run(function() db:query("SELECT :a", { b = 1 }) end)
      end, "db:query: no value for parameter :a")
    end)

    it("raises for a value it cannot bind, with the caller's line", function()
      local ok, err = pcall(run, function() db:query("SELECT ?", {}, 1) end)
      assert.is_false(ok)
      assert.matches("^tests/sqlite_spec%.lua:%d+: db:query: parameter 1: cannot bind a table$", err)
    end)

    it("raises for several statements with parameters or in a query", function()
      assert.has_error(function()
        run(function() db:query("SELECT 1; SELECT 2") end)
      end, "db:query: one statement only when it has parameters or returns "
        .. "rows; exec a script of several without parameters")
    end)

    it("raises for sql that is not a string", function()
      local ok, err = pcall(run, function() db:exec(42) end)
      assert.is_false(ok)
      assert.matches("db:exec: sql: expected a string, got number$", err)
    end)

    it("raises outside a job's run", function()
      assert.has_error(function() db:query("SELECT 1") end,
        "db:query: only a job's run can run statements (this code is not "
        .. "running as a job's run function)")
    end)

    it("raises on a closed database", function()
      db:close()
      assert.is_false(db:is_open())
      assert.has_error(function() run(function() db:query("SELECT 1") end) end,
        "db:query: the database is closed")
    end)

    it("raises for bad open options", function()
      assert.has_error(function() sqlite.open(path, { readOnly = true }) end,
        "sqlite.open: unknown field 'readOnly'")
      assert.has_error(function() sqlite.open(nil) end,
        "sqlite.open: path: expected a string, got nil")
    end)
  end)

  describe("transactions", function()
    it("commit what fn did and return its results", function()
      make_table()
      local a, b = run(function()
        return db:transaction(function(t)
          assert(t:exec("INSERT INTO items (name) VALUES ('x')"))
          assert(t:exec("INSERT INTO items (name) VALUES ('y')"))
          return "done", 2
        end)
      end)
      assert.equal("done", a)
      assert.equal(2, b)
      local rows = run(function() return db:query("SELECT count(*) AS n FROM items") end)
      assert.equal(4, rows[1].n)
    end)

    it("return true when fn returns nothing", function()
      assert.is_true(run(function() return db:transaction(function() end) end))
    end)

    it("roll back and raise again when fn raises", function()
      make_table()
      local ok, err = pcall(run, function()
        db:transaction(function()
          assert(db:exec("INSERT INTO items (name) VALUES ('x')"))
          error("changed my mind", 0)
        end)
      end)
      assert.is_false(ok)
      assert.equal("changed my mind", err)
      local rows = run(function() return db:query("SELECT count(*) AS n FROM items") end)
      assert.equal(2, rows[1].n)
    end)

    it("roll back when a statement fails and the job asserts it", function()
      make_table()
      local ok, err = pcall(run, function()
        db:transaction(function()
          assert(db:exec("INSERT INTO items (name) VALUES ('new')"))
          assert(db:exec("INSERT INTO items (name) VALUES ('apple')"))
        end)
      end)
      assert.is_false(ok)
      assert.matches("UNIQUE constraint failed: items.name", err)
      local rows = run(function() return db:query("SELECT name FROM items WHERE name = 'new'") end)
      assert.same({}, rows)
    end)

    it("do not nest", function()
      assert.has_error(function()
        run(function() db:transaction(function() db:transaction(function() end) end) end)
      end, "db:transaction: already inside a transaction on this database "
        .. "(transactions do not nest)")
    end)

    it("keep other runs' statements out until they end", function()
      make_table()
      local inserted, seen = false, nil
      s.add_job { id = "writer", trigger = { "date", delay = 1 }, run = function()
        db:transaction(function()
          assert(db:exec("INSERT INTO items (name) VALUES ('w')"))
          inserted = true
          time.sleep(10)
        end)
      end }
      s.add_job { id = "reader", trigger = { "date", delay = 2 }, run = function()
        seen = db:query("SELECT count(*) AS n FROM items")[1].n
      end }
      h:advance(1)
      assert.is_true(h:settle(function() return inserted end))
      h:advance(1)
      -- The reader's statement is held, not run inside the writer's
      -- transaction: let the loop turn and see it still waiting.
      for _ = 1, 3 do h.core:poll(0.05) end
      assert.is_nil(seen)
      assert.equal(1, sqlite_core.stats().statements)
      h:advance(10)
      assert.is_true(h:settle(function() return seen ~= nil end))
      assert.equal(3, seen)
    end)

    it("roll back when the run times out inside one", function()
      make_table()
      local inserted = false
      s.add_job { id = "slow", trigger = { "date", delay = 1 }, timeout = "5s", run = function()
        db:transaction(function()
          assert(db:exec("INSERT INTO items (name) VALUES ('lost')"))
          inserted = true
          time.sleep(3600)
        end)
      end }
      h:advance(1)
      assert.is_true(h:settle(function() return inserted end))
      h:advance(5)
      assert.equal(1, #h:logged("run timed out"))
      local rows = run(function()
        assert(db:exec("INSERT INTO items (name) VALUES ('after')"))
        return db:query("SELECT name FROM items ORDER BY id")
      end)
      assert.same({ { name = "apple" }, { name = "pear" }, { name = "after" } }, rows)
    end)
  end)

  describe("the loop", function()
    -- Another process holds the database's write lock until told to let
    -- go (a line on its stdin).
    local function hold_lock()
      local marker = dir .. "/locked"
      local script = ([[
import sqlite3, sys
c = sqlite3.connect(%q, isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
open(%q, "w").close()
sys.stdin.readline()
c.execute("COMMIT")
]]):format(path, marker)
      support.write(dir .. "/lock.py", script)
      local proc = io.popen("/usr/bin/python3 " .. support.quote(dir .. "/lock.py"), "w")
      -- Waiting for a process to take the lock, not for a schedule.
      for _ = 1, 200 do
        if io.open(marker) then break end
        os.execute("sleep 0.05")
      end
      assert(io.open(marker), "the lock holder did not start")
      return function()
        proc:write("\n")
        proc:close()
      end
    end

    it("keeps firing other jobs while a statement waits for a lock", function()
      make_table()
      local release = hold_lock()
      local changed
      s.add_job { id = "blocked", trigger = { "date", delay = 1 }, run = function()
        changed = db:exec("UPDATE items SET note = 'x'")
      end }
      local fires = h:record("tick", { "interval", seconds = 10 })
      h:advance("1m")
      assert.equal(6, #fires)
      assert.is_nil(changed)
      release()
      assert.is_true(h:settle(function() return changed ~= nil end))
      assert.equal(2, changed)
    end)

    it("returns 'busy' when the lock outlasts busy_timeout", function()
      make_table()
      local release = hold_lock()
      local quick = assert(sqlite.open(path, { busy_timeout = "50ms" }))
      local n, err, code = run(function() return quick:exec("DELETE FROM items") end)
      release()
      quick:close()
      assert.is_nil(n)
      assert.equal("database is locked", err)
      assert.equal("busy", code)
    end)

    it("interrupts the statement of a run that times out, and the db stays usable", function()
      s.add_job { id = "long", trigger = { "date", delay = 1 }, timeout = "5s", run = function()
        db:query([[WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
                   SELECT count(*) FROM n]])
      end }
      h:advance(1)
      assert.equal(1, sqlite_core.stats().statements)
      h:advance(5)
      assert.equal(1, #h:logged("run timed out"))
      assert.is_true(h:settle(function() return sqlite_core.stats().statements == 0 end))
      local rows = run(function() return db:query("SELECT 7 AS x") end)
      assert.same({ { x = 7 } }, rows)
    end)

    it("stops waiting for a lock when the run is cancelled", function()
      make_table()
      local release = hold_lock()
      local patient = assert(sqlite.open(path, { busy_timeout = "1h" }))
      s.add_job { id = "waiting", trigger = { "date", delay = 1 }, timeout = "5s", run = function()
        patient:exec("DELETE FROM items")
      end }
      h:advance(6)
      assert.equal(1, #h:logged("run timed out"))
      assert.is_true(h:settle(function() return sqlite_core.stats().statements == 0 end))
      release()
      patient:close()
    end)

    it("frees a connection only after its worker is done with it", function()
      local fds = #assert(core.listdir("/proc/self/fd"))
      local other = assert(sqlite.open(path))
      s.add_job { id = "long", trigger = { "date", delay = 1 }, timeout = "5s", run = function()
        other:query([[WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
                      SELECT count(*) FROM n]])
      end }
      h:advance(1)
      other:close()
      -- Still open: the worker has it, and its statement never ends
      -- by itself.
      assert.equal(2, sqlite_core.stats().connections)
      h:advance(5)
      assert.equal(1, #h:logged("run timed out"))
      assert.is_true(h:settle(function() return sqlite_core.stats().connections == 1 end))
      other = nil
      collectgarbage()
      assert.equal(fds, #assert(core.listdir("/proc/self/fd")))
    end)

    it("waits for a running statement when the scheduler closes", function()
      s.add_job { id = "long", trigger = { "date", delay = 1 }, run = function()
        db:query([[WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
                   SELECT count(*) FROM n]])
      end }
      h:advance(1)
      assert.equal(1, sqlite_core.stats().statements)
      h:close()
      assert.equal(0, sqlite_core.stats().statements)
      h = harness.new()
      s = h.scheduler
    end)
  end)
end)
