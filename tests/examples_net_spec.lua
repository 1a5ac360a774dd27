-- The examples that use moonbeat.http and moonbeat.sqlite, each loaded
-- from examples/ as `moonbeat run` would load it and driven on the
-- virtual clock against fixtures the spec makes: a local HTTP server
-- (tests/fixtures/http_server.py on 127.0.0.1) and sqlite files in a
-- temporary directory. The examples read their endpoints and paths from
-- the environment; os.getenv answers with the fixtures' while a test
-- runs.
local harness = require "tests.harness"
local http_fixture = require "tests.http_fixture"
local support = require "tests.support"
local http_core = require "moonbeat.core.http"
local sqlite = require "moonbeat.sqlite"
local sqlite_core = require "moonbeat.core.sqlite"

describe("examples", function()
  local server, h, s, dir, env, real_getenv

  setup(function() server = http_fixture.start() end)
  teardown(function() server:stop() end)

  before_each(function()
    h = harness.new { start = "2026-03-01T00:00:00Z" }
    s = h.scheduler
    dir = support.tempdir()
    env = {}
    real_getenv = os.getenv
    os.getenv = function(name)
      if env[name] ~= nil then return env[name] end
      return real_getenv(name)
    end
  end)
  after_each(function()
    os.getenv = real_getenv
    h:close()
    collectgarbage()
    collectgarbage()
    support.remove_tree(dir)
    assert.equal(0, sqlite_core.stats().connections)
    assert.equal(0, http_core.stats().transfers)
  end)

  local function load(name)
    local jobs, err = h:load("examples/" .. name)
    assert(jobs, err)
    return jobs
  end

  -- Let the runs in flight finish: real I/O settles while virtual time
  -- stands still; a run that sleeps gets a virtual second at a time.
  local function finish_runs()
    for _ = 1, 60 do
      h:settle(function()
        return http_core.stats().transfers == 0 and sqlite_core.stats().statements == 0
      end)
      if h:stats().runs == 0 then return end
      h:advance(1)
    end
    error("the runs did not finish")
  end

  -- Run fn as a job's run (to set up or read fixtures with the stdlib).
  local helper_count = 0
  local function run(fn)
    helper_count = helper_count + 1
    local out
    s.add_job { id = "helper" .. helper_count, trigger = { "date", delay = 0 },
      run = function() out = table.pack(pcall(fn)) end }
    h:advance(0)
    assert(h:settle(function() return out ~= nil end))
    assert(out[1], out[2])
    return table.unpack(out, 2, out.n)
  end

  local read = support.read

  -- Move virtual time to the job's next fire.
  local function to_next_fire(id)
    h:advance(s.get_job(id).next_run_time - h.core:now())
  end

  local function fields(msg)
    local list = {}
    for i, entry in ipairs(h:logged(msg)) do list[i] = entry.fields end
    return list
  end

  describe("expired-tokens.lua", function()
    it("deletes the expired tokens every hour and logs how many", function()
      env.TOKENS_DB = dir .. "/tokens.db"
      local db = assert(sqlite.open(env.TOKENS_DB))
      local now = h:elapsed() + h.start
      run(function()
        assert(db:exec([[CREATE TABLE tokens (token TEXT PRIMARY KEY,
                                              expires_at INTEGER NOT NULL)]]))
        -- Two expired already, one due within the first hour, one in
        -- the second, one long after.
        for token, offset in pairs { a = -100, b = -1, c = 1800, d = 5400, e = 86400 } do
          assert(db:exec("INSERT INTO tokens VALUES (?, ?)", token, now + offset))
        end
      end)
      load("expired-tokens.lua")
      h:advance("1h")
      finish_runs()
      h:advance("1h")
      finish_runs()
      local logged = fields("expired tokens deleted")
      assert.equal(2, #logged)
      assert.equal(3, logged[1].count)
      assert.equal(1, logged[2].count)
      assert.equal("cleanup-expired-tokens", logged[1].job)
      local left = run(function() return db:query("SELECT token FROM tokens") end)
      assert.same({ { token = "e" } }, left)
      db:close()
    end)

    it("creates the table in a new database file", function()
      env.TOKENS_DB = dir .. "/fresh.db"
      load("expired-tokens.lua")
      h:advance("1h")
      finish_runs()
      assert.equal(0, fields("expired tokens deleted")[1].count)
    end)
  end)

  describe("cache-warmup.lua", function()
    it("warms every hot key every 10 minutes and counts the failures", function()
      env.HOT_KEYS_URL = server.url .. "/hot-keys"
      env.WARM_URL = server.url .. "/warm/"
      server:routes {
        ["/hot-keys"] = { json = { "user:1", "user:2", "home page" } },
        ["/warm/user%3A1"] = { body = "ok" },
        ["/warm/user%3A2"] = { status = 500, body = "cache down" },
        ["/warm/home%20page"] = { body = "ok" },
      }
      load("cache-warmup.lua")
      local before = #server:requests()
      h:advance("10m")
      finish_runs()
      local asked = {}
      for i = before + 1, #server:requests() do
        local r = server:requests()[i]
        asked[#asked + 1] = r.method .. " " .. r.path
      end
      assert.same({ "GET /hot-keys", "POST /warm/user%3A1", "POST /warm/user%3A2",
        "POST /warm/home%20page" }, asked)
      assert.same({ { job = "cache-warmup", run = 1, warmed = 2, failed = 1 } },
        fields("cache warmed"))
      assert.equal("status 500", fields("key not warmed")[1].error)
      h:advance("10m")
      finish_runs()
      assert.equal(2, #fields("cache warmed"))
    end)

    it("fails the run and retries when the key list cannot be fetched", function()
      env.HOT_KEYS_URL = "http://127.0.0.1:1/hot-keys"
      load("cache-warmup.lua")
      local retries = h:events { "retry" }
      h:advance("10m")
      finish_runs()
      assert.equal(1, #retries)
      assert.matches("^hot keys: GET http://127%.0%.0%.1:1/hot%-keys: ", retries[1].error)
    end)
  end)

  describe("health-check.lua", function()
    it("alerts once when an endpoint is down twice in a row, and when it recovers", function()
      env.HEALTH_URLS = server.url .. "/up," .. server.url .. "/down"
      env.HEALTH_ALERTS = dir .. "/alerts.log"
      server:routes {
        ["/up"] = { body = "fine" },
        ["/down"] = { status = 503 },
      }
      load("health-check.lua")
      h:advance("30s")
      finish_runs()
      -- One failed check: three probes, no alert yet.
      assert.equal(3, server:count("/down"))
      assert.is_nil(read(env.HEALTH_ALERTS))
      local failed = fields("endpoint failed its check")
      assert.equal(1, #failed)
      assert.equal(1, failed[1].streak)
      assert.equal("status 503", failed[1].error)

      to_next_fire("health-check")
      finish_runs()
      local alerts = read(env.HEALTH_ALERTS)
      assert.matches("^%S+ DOWN " .. server.url:gsub("%p", "%%%0") .. "/down %(status 503%)\n$", alerts)

      to_next_fire("health-check")
      finish_runs()
      assert.equal(alerts, read(env.HEALTH_ALERTS))  -- no second alert

      server:routes { ["/up"] = { body = "fine" }, ["/down"] = { body = "back" } }
      to_next_fire("health-check")
      finish_runs()
      local lines = {}
      for line in read(env.HEALTH_ALERTS):gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal(2, #lines)
      assert.matches(" UP " .. server.url:gsub("%p", "%%%0") .. "/down$", lines[2])
      assert.equal(3, #fields("endpoint failed its check"))
    end)

    it("counts a probe that succeeds on a retry as up", function()
      env.HEALTH_URLS = server.url .. "/wobbly"
      env.HEALTH_ALERTS = dir .. "/alerts.log"
      server:routes { ["/wobbly"] = { body = "ok", fail_first = 2 } }
      load("health-check.lua")
      h:advance("30s")
      finish_runs()
      assert.equal(3, server:count("/wobbly"))
      assert.same({}, fields("endpoint failed its check"))
      assert.equal("success", h:logged("run finished")[1].fields.status)
    end)
  end)

  describe("data-sync.lua", function()
    it("retries a flaky source with exponential backoff, then upserts its records", function()
      env.SYNC_SOURCE_URL = server.url .. "/export"
      env.SYNC_DB = dir .. "/sync.db"
      server:routes {
        ["/export"] = { fail_first = 3, json = {
          { id = 1, name = "one", updated_at = "2026-03-01T00:00:00Z" },
          { id = 2, name = "two", updated_at = "2026-03-01T00:00:00Z" },
        } },
      }
      load("data-sync.lua")
      local retries = h:events { "retry" }
      h:advance("15m")
      finish_runs()
      -- Three failures, each retried twice as late as the one before.
      for _ = 1, 3 do
        local due = retries[#retries].next_time - h.core:now()
        h:advance(due)
        finish_runs()
      end
      assert.equal(3, #retries)
      local delays = {}
      for i, ev in ipairs(retries) do
        delays[i] = ev.next_time - (i == 1 and h.start + 900 or retries[i - 1].next_time)
      end
      assert.same({ 5, 10, 20 }, delays)
      assert.same({ 2, 3, 4 }, { retries[1].attempt, retries[2].attempt, retries[3].attempt })
      assert.matches("^pull failed: .*/export answered 503$", retries[1].error)
      assert.same({ { job = "data-sync", run = 4, received = 2, changed = 2, attempt = 4 } },
        fields("records synced"))

      local db = assert(sqlite.open(env.SYNC_DB))
      local rows = run(function() return db:query("SELECT id, name FROM records ORDER BY id") end)
      assert.same({ { id = 1, name = "one" }, { id = 2, name = "two" } }, rows)

      -- The next regular sync changes only what is newer.
      server:routes {
        ["/export"] = { json = {
          { id = 1, name = "one", updated_at = "2026-03-01T00:00:00Z" },
          { id = 2, name = "TWO", updated_at = "2026-03-01T00:15:00Z" },
          { id = 3, name = "three", updated_at = "2026-03-01T00:15:00Z" },
        } },
      }
      to_next_fire("data-sync")
      finish_runs()
      local synced = fields("records synced")
      assert.equal(2, #synced)
      assert.equal(2, synced[2].changed)
      rows = run(function() return db:query("SELECT id, name FROM records ORDER BY id") end)
      assert.same({ { id = 1, name = "one" }, { id = 2, name = "TWO" }, { id = 3, name = "three" } }, rows)
      db:close()
    end)
  end)
end)
