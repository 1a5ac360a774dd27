-- Data sync: every 15 minutes, pull the records an HTTP service exports
-- and upsert them into a local sqlite table, in one transaction. The
-- service is flaky: a failed pull fails the run, and the scheduler's
-- retry policy tries again with exponential backoff (5 s, 10 s, 20 s,
-- ... up to 2 min). Retries are fires of their own, kept in the store,
-- so a restart during a backoff still retries.
--
--   SYNC_SOURCE_URL=http://127.0.0.1:8080/export SYNC_DB=sync.db \
--     moonbeat run examples/
--
-- Environment:
--   SYNC_SOURCE_URL  answers a JSON list of {id, name, updated_at}
--                    (default "http://127.0.0.1:8080/export")
--   SYNC_DB          the sqlite file (default "sync.db"); table
--                    records(id INTEGER PRIMARY KEY, name, updated_at)

local http = require "moonbeat.http"
local sqlite = require "moonbeat.sqlite"

local SOURCE = os.getenv("SYNC_SOURCE_URL") or "http://127.0.0.1:8080/export"
local db = assert(sqlite.open(os.getenv("SYNC_DB") or "sync.db"))

local SCHEMA = [[
  CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
]]

local UPSERT = [[
  INSERT INTO records (id, name, updated_at) VALUES (:id, :name, :updated_at)
  ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                                 updated_at = excluded.updated_at
  WHERE excluded.updated_at > records.updated_at
]]

scheduler.add_job {
  id = "data-sync",
  name = "Pull the exported records",
  trigger = { "interval", minutes = 15 },
  timeout = "2m",
  retry = {
    attempts = 6,            -- the first try and five retries
    backoff = "exponential", -- 5 s, 10 s, 20 s, 40 s, 80 s ...
    delay = "5s",
    max_delay = "2m",        -- ... never more than this
  },
  run = function(ctx)
    local res, err = http.get(SOURCE, { timeout = "30s" })
    -- Errors raised here are what the retry policy retries.
    if not res then error("pull failed: " .. err, 0) end
    if res.status ~= 200 or type(res.json) ~= "table" then
      error(("pull failed: %s answered %d"):format(SOURCE, res.status), 0)
    end
    assert(db:exec(SCHEMA))
    local changed = 0
    assert(db:transaction(function()
      for _, rec in ipairs(res.json) do
        changed = changed + assert(db:exec(UPSERT, {
          id = rec.id, name = rec.name, updated_at = rec.updated_at,
        }))
      end
    end))
    ctx.log.info("records synced", {
      received = #res.json, changed = changed, attempt = ctx.attempt,
    })
  end,
}
