-- The examples that use exec, fs and log (3: daily report, 4: database
-- backup, 6: metrics), each run against fixtures in a temporary
-- directory, on the virtual clock.
local harness = require "tests.harness"
local support = require "tests.support"
local core = require "moonbeat.core"
local json = require "moonbeat.json"

local slurp = support.read

describe("examples", function()
  local h, dir, real_getenv, settings

  before_each(function()
    dir = support.tempdir()
    settings = {}
    -- The examples read their settings from the environment when they
    -- load; the spec answers for the variables it sets.
    real_getenv = os.getenv
    os.getenv = function(name)
      if settings[name] ~= nil then return settings[name] end
      return real_getenv(name)
    end
  end)

  after_each(function()
    os.getenv = real_getenv
    if h then h:close() end
    h = nil
    support.remove_tree(dir)
  end)

  local function load_example(name)
    local jobs, err = h:load("examples/" .. name)
    assert.truthy(jobs, err)
    return jobs
  end

  -- Advance by d, then let the run that fired do its I/O.
  local function step(d)
    h:advance(d)
    assert.is_true(h:settle(function() return h:stats().runs == 0 end))
  end

  describe("3, the daily report", function()
    it("sums yesterday's orders per region at 09:00 Shanghai time", function()
      -- 00:00 UTC is 08:00 in Shanghai.
      h = harness.new { start = "2026-01-01T00:00:00Z" }
      support.write(dir .. "/orders.csv", table.concat({
        "date,region,amount",
        "2025-12-31,north,20.00",
        "2025-12-31,east,100.25",
        "2025-12-31,east,50.25",
        "2025-12-30,east,999",
        "not,a,number",
        "2026-01-01,west,7.5",
        "",
      }, "\n"))
      settings.REPORT_INPUT = dir .. "/orders.csv"
      settings.REPORT_DIR = dir .. "/reports"
      load_example("daily-report.lua")
      step("59m")
      assert.is_nil(slurp(dir .. "/reports/summary-2025-12-31.csv"))
      step("1m")
      assert.equal("region,orders,amount\neast,2,150.50\nnorth,1,20.00\ntotal,3,170.50\n",
        slurp(dir .. "/reports/summary-2025-12-31.csv"))
      assert.equal(1, h:logged("skipped malformed lines")[1].fields.lines)
      step("1d")
      assert.equal("region,orders,amount\nwest,1,7.50\ntotal,1,7.50\n",
        slurp(dir .. "/reports/summary-2026-01-01.csv"))
      assert.same({ "summary-2025-12-31.csv", "summary-2026-01-01.csv" },
        core.listdir(dir .. "/reports"))
    end)

    it("fails the run when the export is missing, and retries it", function()
      h = harness.new { start = "2026-01-01T00:59:00Z" }
      settings.REPORT_INPUT = dir .. "/late.csv"
      settings.REPORT_DIR = dir .. "/reports"
      load_example("daily-report.lua")
      step("1m")
      local failed = h:logged("run failed")
      assert.equal(1, #failed)
      assert.matches("^examples/daily%-report%.lua:%d+: cannot read the orders: "
        .. dir:gsub("%p", "%%%0") .. "/late%.csv: no such file or directory$",
        failed[1].fields.error)
      support.write(dir .. "/late.csv", "date,region,amount\n2025-12-31,south,1\n")
      step("10m")
      assert.equal("region,orders,amount\nsouth,1,1.00\ntotal,1,1.00\n",
        slurp(dir .. "/reports/summary-2025-12-31.csv"))
    end)
  end)

  describe("4, the database backup", function()
    it("dumps the database at 01:00 and keeps the newest seven", function()
      h = harness.new { start = "2026-01-01T00:00:00Z" }
      local db = dir .. "/app.db"
      assert.is_true(os.execute(("sqlite3 %s \"create table orders(id integer, item text); "
        .. "insert into orders values (1, 'tea'), (2, 'rice');\""):format(db)))
      settings.BACKUP_DB = db
      settings.BACKUP_DIR = dir .. "/backups"
      -- Not a backup: pruning leaves it alone.
      os.execute("mkdir " .. dir .. "/backups")
      support.write(dir .. "/backups/notes.txt", "keep me")
      load_example("db-backup.lua")
      step("1h")
      local first = slurp(dir .. "/backups/backup-20260101-010000.sql")
      assert.matches("CREATE TABLE orders", first, 1, true)
      assert.matches("INSERT INTO orders VALUES(2,'rice');", first, 1, true)
      for _ = 1, 8 do step("1d") end
      local names = core.listdir(dir .. "/backups")
      assert.same({
        "backup-20260103-010000.sql", "backup-20260104-010000.sql",
        "backup-20260105-010000.sql", "backup-20260106-010000.sql",
        "backup-20260107-010000.sql", "backup-20260108-010000.sql",
        "backup-20260109-010000.sql", "notes.txt",
      }, names)
      local written = h:logged("backup written")
      assert.equal(9, #written)
      assert.equal(0, written[7].fields.pruned)
      assert.equal(1, written[8].fields.pruned)
    end)

    it("fails without touching the old backups when the dump fails", function()
      h = harness.new { start = "2026-01-01T00:59:00Z" }
      settings.BACKUP_DB = dir .. "/missing.db"
      settings.BACKUP_DIR = dir .. "/backups"
      os.execute("mkdir " .. dir .. "/backups")
      for day = 1, 8 do
        support.write(("%s/backups/backup-202512%02d-010000.sql"):format(dir, day), "old")
      end
      load_example("db-backup.lua")
      step("1m")
      local failed = h:logged("run failed")
      assert.equal(1, #failed)
      assert.matches("^examples/db%-backup%.lua:%d+: the dump failed %(exit 1%): Error: unable to open "
        .. "database \"" .. (dir .. "/missing.db"):gsub("%p", "%%%0") .. "\"", failed[1].fields.error)
      assert.equal(8, #core.listdir(dir .. "/backups"))
      assert.is_nil(core.listdir(dir .. "/missing.db"))
    end)
  end)

  describe("6, the metrics", function()
    it("appends a JSON line of load, memory and disk usage every minute", function()
      h = harness.new { start = "2026-01-01T00:00:00Z" }
      os.execute("mkdir " .. dir .. "/proc")
      support.write(dir .. "/proc/loadavg", "0.50 0.40 0.30 1/123 4567\n")
      support.write(dir .. "/proc/meminfo",
        "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    9000000 kB\n")
      settings.METRICS_FILE = dir .. "/out/metrics.jsonl"
      settings.METRICS_DISK = dir
      settings.METRICS_PROC = dir .. "/proc"
      load_example("metrics.lua")
      for _ = 1, 3 do step("1m") end
      local lines = {}
      for line in slurp(dir .. "/out/metrics.jsonl"):gmatch("[^\n]+") do
        lines[#lines + 1] = assert(json.decode(line))
      end
      assert.equal(3, #lines)
      assert.same({ "2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00",
        "2026-01-01T00:03:00+00:00" },
        { lines[1].time, lines[2].time, lines[3].time })
      assert.same({ 0.5, 0.4, 0.3 }, lines[1].load)
      assert.same({ total_kb = 16000000, available_kb = 9000000 }, lines[1].memory)
      assert.equal(dir, lines[1].disk.path)
      assert.is_true(lines[1].disk.total_kb > 0)
      assert.is_true(lines[1].disk.used_kb + lines[1].disk.available_kb <= lines[1].disk.total_kb)
    end)

    it("records what it can when a reading fails", function()
      h = harness.new { start = "2026-01-01T00:00:00Z" }
      settings.METRICS_FILE = dir .. "/metrics.jsonl"
      settings.METRICS_DISK = dir .. "/no-such-disk"
      settings.METRICS_PROC = dir .. "/no-proc"
      load_example("metrics.lua")
      step("1m")
      local line = json.decode(slurp(dir .. "/metrics.jsonl"))
      assert.same({ time = "2026-01-01T00:01:00+00:00" }, line)
      local failures = {}
      for _, entry in ipairs(h:logged("reading failed")) do
        failures[entry.fields.metric] = entry.fields.error
      end
      assert.equal(dir .. "/no-proc/loadavg: no such file or directory", failures.load)
      assert.equal(dir .. "/no-proc/meminfo: no such file or directory", failures.memory)
      assert.matches("^df: .*no%-such%-disk", failures.disk)
    end)
  end)
end)
