-- moonbeat.log: lines from anywhere in job code belong to the run whose
-- code executes, as ctx.log's do, and reach the scheduler's log.
local harness = require "tests.harness"
local log = require "moonbeat.log"
local time = require "moonbeat.time"

describe("moonbeat.log", function()
  local h
  before_each(function() h = harness.new() end)
  after_each(function() h:close() end)

  local function history(job_id)
    return h.scheduler.get_runs { job_id = job_id }
  end

  it("attaches lines to the current run and to the scheduler's log", function()
    local function helper() log.warn("from a helper", { depth = 2 }) end
    h.scheduler.add_job { id = "copier", trigger = { "date", delay = 1 }, run = function()
      log.info("rows copied", { table = "orders", rows = 1200, ok = true })
      time.sleep(1)
      helper()
      log.debug("detail")
      log.error("trouble", { ratio = 0.5 })
    end }
    h:advance(2)
    local copied = h:logged("rows copied")[1]
    assert.equal("info", copied.level)
    assert.same({ job = "copier", run = 1, table = "orders", rows = 1200, ok = true }, copied.fields)
    assert.equal("warn", h:logged("from a helper")[1].level)
    assert.equal("debug", h:logged("detail")[1].level)
    assert.equal("error", h:logged("trouble")[1].level)
    assert.equal(table.concat({
      "INFO rows copied ok=true rows=1200 table=orders",
      "WARN from a helper depth=2",
      "DEBUG detail",
      "ERROR trouble ratio=0.5",
    }, "\n") .. "\n", history("copier")[1].log)
  end)

  it("attaches lines logged from a coroutine the job made", function()
    h.scheduler.add_job { id = "co", trigger = { "date", delay = 1 }, run = function()
      coroutine.wrap(function() log.info("inside") end)()
    end }
    h:advance(1)
    assert.equal("co", h:logged("inside")[1].fields.job)
    assert.equal("INFO inside\n", history("co")[1].log)
  end)

  it("keeps each run's lines apart", function()
    for _, id in ipairs { "a", "b" } do
      h.scheduler.add_job { id = id, trigger = { "date", delay = 1 }, run = function()
        log.info("start " .. id)
        time.sleep(1)
        log.info("end " .. id)
      end }
    end
    h:advance(2)
    assert.equal("INFO start a\nINFO end a\n", history("a")[1].log)
    assert.equal("INFO start b\nINFO end b\n", history("b")[1].log)
  end)

  it("writes a plain scheduler line outside a run", function()
    log.info("loading", { file = "jobs/x.lua" })
    local line = h:logged("loading")[1]
    assert.equal("info", line.level)
    assert.same({ file = "jobs/x.lua" }, line.fields)
  end)

  it("raises on misuse, with the function's name", function()
    local ok, err = pcall(function() log.info(nil) end)
    assert.is_false(ok)
    assert.matches("^tests/log_spec%.lua:%d+: log%.info: the message must be a string, got nil$", err)
    ok, err = pcall(function() log.error("x", "fields") end)
    assert.is_false(ok)
    assert.matches("^tests/log_spec%.lua:%d+: log%.error: fields must be a table, got string$", err)
  end)
end)
